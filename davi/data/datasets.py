"""Image data through ``datasets``: the bundled digits, an image folder, or a hub data set.

Images come out as ``(C, H, W)`` float tensors in [-1, 1] at the configured resolution
(shorter side resized, then center-cropped). The train/test split is deterministic and
disjoint: a source's own test split when it has one, else explicit index ranges into the
sorted file list, else a hash of each file's relative path (stable as files are added).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from davi.config import DataConfig
from davi.data.splits import IMAGE_SUFFIXES, DataError, split_indices

BUNDLED = {"mnist32": Path(__file__).resolve().parents[1] / "assets" / "mnist32"}
def normalize_mode(img: Image.Image, channels: int) -> Image.Image:
    """Bring any PIL mode to 8-bit-range L/RGB (or float F for 16-bit), aiming at ``channels``."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grayscale (PNG/TIFF open as I;16 or I): scale 0..65535 to 0..255 in float ("L" would clip).
        img = Image.fromarray(np.asarray(img, dtype=np.float32) / 257.0, "F")
    if img.mode in ("P", "PA", "LA", "RGBA", "1", "CMYK", "YCbCr"):
        # Palette/alpha/bit-depth variants are not a channel choice; normalise them (a palette
        # image takes the configured channels).
        img = img.convert("L" if img.mode in ("1", "LA") or (img.mode in ("P", "PA") and channels == 1) else "RGB")
    if len(img.getbands()) == 1 and channels == 3:
        # Grayscale files turn up in colour data sets (ImageNet has some): replicating the
        # channel loses nothing. The reverse would discard colour, so it stays an error.
        img = img.convert("RGB")
    return img


def _pil_to_tensor(img: Image.Image, resolution: int, channels: int, where: str) -> torch.Tensor:
    img = normalize_mode(img, channels)
    have = len(img.getbands())
    if have != channels:
        raise DataError(f"{where}: image has {have} channel(s) ({img.mode}), config data.channels={channels}")
    w, h = img.size
    if (w, h) != (resolution, resolution):
        s = resolution / min(w, h)
        img = img.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    arr = np.array(img, dtype=np.float32)  # a copy: asarray of an "F" image is read-only
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def load_image_file(path: str | Path, resolution: int, channels: int) -> torch.Tensor:
    """One image file as a (C, H, W) tensor in [-1, 1]; a clear DataError if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_tensor(img, resolution, channels, str(path))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__})") from None


class ImageDataset(torch.utils.data.Dataset):
    """A split of a ``datasets.Dataset`` whose image column is decoded here (so errors name the file)."""

    def __init__(self, hf_dataset: Any, indices: list[int], resolution: int, channels: int,
                 image_column: str, label_column: str | None, name: str):
        self.hf = hf_dataset
        self.indices = indices
        self.resolution = resolution
        self.channels = channels
        self.image_column = image_column
        self.label_column = label_column
        self.name = name

    def __len__(self) -> int:
        return len(self.indices)

    def _where(self, row: dict, i: int) -> str:
        img = row[self.image_column]
        path = img.get("path") if isinstance(img, dict) else None
        return path or f"{self.name}[{i}]"

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.hf[self.indices[i]]
        img = row[self.image_column]
        where = self._where(row, i)
        try:
            if isinstance(img, dict):
                pil = Image.open(io.BytesIO(img["bytes"])) if img.get("bytes") else Image.open(img["path"])
            else:
                pil = img
            pil.load()
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{where}: not a readable image ({e.__class__.__name__})") from None
        out = {"image": _pil_to_tensor(pil, self.resolution, self.channels, where), "index": i}
        out["label"] = int(row[self.label_column]) if self.label_column else -1
        return out

    def labels(self) -> torch.Tensor:
        if not self.label_column:
            return torch.full((len(self),), -1, dtype=torch.long)
        col = self.hf.select(self.indices)[self.label_column]
        return torch.as_tensor(list(col), dtype=torch.long)

    def tensor(self, limit: int | None = None, start: int = 0) -> torch.Tensor:
        """Decode ``limit`` images (all by default) into one (N, C, H, W) tensor."""
        stop = len(self) if limit is None else min(len(self), start + limit)
        return torch.stack([self[i]["image"] for i in range(start, stop)]) if stop > start else torch.empty(
            0, self.channels, self.resolution, self.resolution)


def _load_source(cfg: DataConfig):
    """Return (dict of split name -> datasets.Dataset with undecoded images, label column or None)."""
    import datasets

    datasets.disable_progress_bars()
    src = cfg.source
    if src in BUNDLED:
        root = BUNDLED[src]
        files = {s: str(root / f"{s}.parquet") for s in ("train", "test")}
        for f in files.values():
            if not Path(f).is_file():
                raise DataError(f"{f}: bundled data set is missing (run scripts/convert_mnist.py)")
        dd = datasets.load_dataset("parquet", data_files=files)
    elif Path(src).exists():
        root = Path(src)
        if not root.is_dir():
            raise DataError(f"{src}: data.source must be a folder of images, a hub id or 'mnist32'")
        images = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise DataError(f"{src}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        images.sort()
        ds = datasets.Dataset.from_dict({
            "image": [str(p) for p in images],
            "name": [str(p.relative_to(root)) for p in images],
        }).cast_column("image", datasets.Image(decode=False))
        dd = {"all": ds}
    else:
        try:
            dd = datasets.load_dataset(src)
        except Exception as e:  # hub errors come in many types; name the source, not the stack
            raise DataError(f"{src}: not a folder, not 'mnist32', and not loadable as a data set "
                            f"({e.__class__.__name__}: {str(e).splitlines()[0][:200]})") from None
    out = {}
    label_column = None
    for split, ds in dict(dd).items():
        if cfg.image_column not in ds.column_names:
            raise DataError(f"{src}: split '{split}' has no column '{cfg.image_column}' "
                            f"(columns: {', '.join(ds.column_names)}); set data.image_column")
        ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
        out[split] = ds
        if "label" in ds.column_names:
            label_column = "label"
    return out, label_column


def load_split(cfg: DataConfig, split: str) -> ImageDataset:
    """The ``train`` or ``test`` split of the configured source, never overlapping."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    from davi.data import patches

    if cfg.patches or patches.has_manifest(cfg):  # random crops, or a folder whose manifest.json fixes the split
        try:
            if cfg.patches:
                return patches.load_split(cfg, split)
            files = patches.split_files(cfg, split)
        except patches.PatchError as e:  # a DataError already; re-raised without the patch module's traceback
            raise DataError(str(e)) from None
        import datasets

        ds = datasets.Dataset.from_dict({"image": [str(f) for f in files]}).cast_column("image", datasets.Image(decode=False))
        dataset = ImageDataset(ds, list(range(len(files))), cfg.resolution, cfg.channels, "image", None, f"{cfg.source}:{split}")
        dataset[0]
        return dataset
    dd, label_column = _load_source(cfg)
    if "train" in dd and "test" in dd:
        ds = dd[split]
        indices = list(range(len(ds)))
    else:
        # One pool: split by explicit ranges or by a stable hash of the file name.
        (ds,) = (dd.get("all") or dd.get("train") or next(iter(dd.values())),)
        indices = split_indices(len(ds), split, cfg,
                                lambda: ds["name"] if "name" in ds.column_names else [str(i) for i in range(len(ds))])
    if not indices:
        raise DataError(f"{cfg.source}: the {split} split is empty (check data.test_fraction / ranges)")
    dataset = ImageDataset(ds, indices, cfg.resolution, cfg.channels, cfg.image_column, label_column,
                           f"{cfg.source}:{split}")
    dataset[0]  # fail now, with the file's name, if the first image does not fit the config
    return dataset


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's indices for each training step from ``start_step`` on.

    The batch of step ``s`` is a pure function of (seed, s): epochs are seeded
    permutations of the data set and the global batch is cut into per-rank shards. Resuming
    at step ``s`` therefore sees exactly the batches an uninterrupted run would have seen,
    with no data-loader state to save.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        if n <= 0:
            raise DataError("cannot sample batches from an empty data set")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def batch(self, step: int) -> list[int]:
        global_bs = self.batch_size * self.world_size
        first = step * global_bs + self.rank * self.batch_size
        out = []
        for k in range(first, first + self.batch_size):
            out.append(int(self._permutation(k // self.n)[k % self.n]))
        return out

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs this for len()
        return 2**62
