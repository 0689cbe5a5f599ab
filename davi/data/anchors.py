"""RED-Diff anchors: one RED-Diff solution per training measurement, computed once, stored as shards.

Measurement-only training (job ``unpaired``) has no clean image for the clean end of DAVI's
Perturbed Posterior Bridge; the RED-Diff solution of each measurement (Mardani et al. 2023;
:mod:`davi.solvers.red_diff`) stands in for it. This job computes those solutions::

    davi anchors --config configs/sr4_mnist_unpaired.yaml      # -> unpaired.anchors

The folder holds ``manifest.json`` (the measurement set's digest, the operator, the RED-Diff
settings, the prior) and ``shard-00000.safetensors``, ... (``anchor`` (b, C, H, W) and ``index``),
one per batch of ``unpaired.anchor_batch_size`` measurements, each written atomically. A killed job
resumes at the first missing shard; measurement ``i`` always gets RED-Diff noise seed ``i``, so
the result does not depend on the batch or on interruptions. A folder computed for another
measurement set, operator, prior or RED-Diff setting is refused with a one-line error, never
overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from davi.data.datasets import DataError
from davi.io.atomic import write_file, write_json

MANIFEST = "manifest.json"
FORMAT = "davi-anchors"


class AnchorError(DataError):
    """An anchor folder that does not belong to these measurements, is incomplete or holds NaN."""


def _shard(folder: Path, k: int) -> Path:
    return folder / f"shard-{k:05d}.safetensors"


def manifest_for(data, cfg, prior) -> dict:
    uc = cfg.unpaired
    return {"format": FORMAT, "version": 1, "measurements": data.digest, "source": data.source,
            "count": len(data), "shard_size": uc.anchor_batch_size, "operator": data.operator_params,
            "prior": {"identity": prior.identity, "digest": prior.digest},
            "red_diff": dataclasses.asdict(cfg.red_diff)}


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise AnchorError(f"{folder}: no {MANIFEST}; compute the anchors with davi anchors --config ...")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AnchorError(f"{path}: not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise AnchorError(f"{path}: not a {FORMAT} manifest")
    return manifest


def check_manifest(folder: str | Path, manifest: dict, expected: dict) -> None:
    """AnchorError naming the first setting in which the folder's anchors differ from ``expected``."""
    if manifest.get("measurements") != expected["measurements"] or manifest.get("count") != expected["count"]:
        raise AnchorError(f"{folder}: anchors of another measurement set ({manifest.get('count')} measurements, "
                          f"digest {manifest.get('measurements')}; this set: {expected['count']}, digest "
                          f"{expected['measurements']} from {expected['source']}); use another unpaired.anchors")
    for key in ("operator", "prior", "red_diff", "shard_size"):
        if key in expected and manifest.get(key) != expected[key]:
            raise AnchorError(f"{folder}: anchors computed with another {key} ({manifest.get(key)} vs "
                              f"{expected[key]}); use another unpaired.anchors")


def _check_finite(anchor: torch.Tensor, where: str, first_index: int) -> None:
    bad = (~torch.isfinite(anchor.flatten(1))).any(1).nonzero().flatten()
    if len(bad):
        raise AnchorError(f"{where}: non-finite (NaN/inf) anchor for measurement(s) "
                          f"{[first_index + int(i) for i in bad[:5]]} (lower red_diff.lr?)")


def compute_anchors(cfg, folder: str | Path | None = None, device: str = "cpu", progress: bool = True,
                    data=None) -> Path:
    """RED-Diff solutions of every measurement of ``cfg.unpaired.measurements`` (or of the
    MeasurementDataset ``data``) into ``folder`` (default ``cfg.unpaired.anchors``); shards already
    there are kept (resume)."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from davi.builders import prior_from_config, red_diff_from_config
    from davi.config import ConfigError
    from davi.data.measurements import load_measurements
    from davi.operators import build_operator

    folder = Path(folder or cfg.unpaired.anchors)
    if not str(folder) or str(folder) == ".":
        raise ConfigError("unpaired.anchors: empty; name the folder the anchors go to")
    operator = build_operator(cfg.operator, cfg.data.resolution, cfg.data.channels)
    data = load_measurements(cfg, operator) if data is None else data
    prior = prior_from_config(cfg)
    if (prior.channels, prior.resolution) != (cfg.data.channels, cfg.data.resolution):
        raise ConfigError(f"prior {cfg.prior.path} is {prior.channels}x{prior.resolution}x{prior.resolution} but "
                          f"data.channels={cfg.data.channels}, data.resolution={cfg.data.resolution}")
    manifest = manifest_for(data, cfg, prior)
    if any(folder.glob("shard-*.safetensors")):
        check_manifest(folder, read_manifest(folder), manifest)  # refuse before anything is written
    elif folder.exists() and any(p.name != MANIFEST for p in folder.iterdir()):
        raise AnchorError(f"{folder}: exists and is not an anchor folder; use another unpaired.anchors")
    else:  # new, or a manifest without a single shard (nothing computed yet, e.g. a first batch that failed)
        if (folder / MANIFEST).exists():
            read_manifest(folder)  # another tool's manifest.json is not ours to overwrite
        write_json(folder / MANIFEST, manifest)

    prior.to(device)
    operator.to(device)
    solver = red_diff_from_config(prior, operator, cfg.red_diff)
    size, n = cfg.unpaired.anchor_batch_size, len(data)
    todo = [k for k in range((n + size - 1) // size) if not _shard(folder, k).is_file()]
    bar = tqdm(total=n, initial=n - sum(min(size, n - k * size) for k in todo), desc="red-diff anchors",
               unit="meas", disable=not progress, dynamic_ncols=True)
    for k in todo:
        if _shard(folder, k).is_file():  # written meanwhile by another job on the same folder
            bar.update(min(size, n - k * size))
            continue
        idx = list(range(k * size, min(n, (k + 1) * size)))
        t0 = time.process_time()
        anchor = solver(data.y[idx].to(device), seeds=idx).float().cpu()
        _check_finite(anchor, str(_shard(folder, k)), idx[0])
        tensors = {"anchor": anchor.contiguous(), "index": torch.tensor(idx, dtype=torch.long)}
        meta = {"measurements": data.digest, "cpu_seconds": f"{time.process_time() - t0:.3f}"}
        write_file(_shard(folder, k), lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        bar.update(len(idx))
    bar.close()
    return folder


def load_anchors(folder: str | Path, data) -> torch.Tensor:
    """The anchors (N, C, H, W) of measurement set ``data`` from ``folder``; AnchorError if they are
    for another set, incomplete, or not finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest = read_manifest(folder)
    expected = {"measurements": data.digest, "count": len(data), "source": data.source,
                "operator": data.operator_params}
    check_manifest(folder, manifest, expected)
    size, n = manifest["shard_size"], manifest["count"]
    shards = range((n + size - 1) // size)
    missing = [k for k in shards if not _shard(folder, k).is_file()]
    if missing:
        raise AnchorError(f"{folder}: {len(missing)} of {len(shards)} shards missing (first: "
                          f"{_shard(folder, missing[0]).name}); finish them with davi anchors --config ...")
    out = []
    for k in shards:
        try:
            t = load_file(str(_shard(folder, k)))
        except (SafetensorError, OSError) as e:
            raise AnchorError(f"{_shard(folder, k)}: unreadable ({str(e).splitlines()[0][:120]})") from None
        want = list(range(k * size, min(n, (k + 1) * size)))
        if "anchor" not in t or t.get("index") is None or t["index"].tolist() != want:
            raise AnchorError(f"{_shard(folder, k)}: not shard {k} of this folder (indices differ)")
        _check_finite(t["anchor"], str(_shard(folder, k)), want[0])
        out.append(t["anchor"])
    return torch.cat(out)


def anchor_cpu_seconds(folder: str | Path) -> float:
    """Process CPU seconds the shards took (recorded in each shard's metadata)."""
    from safetensors import safe_open

    total = 0.0
    for path in sorted(Path(folder).glob("shard-*.safetensors")):
        with safe_open(str(path), "pt") as f:
            total += float((f.metadata() or {}).get("cpu_seconds", 0.0))
    return total


if __name__ == "__main__":  # the command line moved to the installed command
    print("error: python -m davi.data.anchors is now `davi anchors` (e.g. davi anchors --config "
          "configs/sr4_mnist_unpaired.yaml)", file=sys.stderr)
    sys.exit(2)
