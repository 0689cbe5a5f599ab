"""Measurement-only data: training sets of measurements ``y = A(x) + sigma_y n`` with no clean image.

A :class:`MeasurementDataset` yields ``{"y", "index"}`` (and ``"anchor"`` when RED-Diff anchors
are attached) and never an ``"image"``: a recipe trained on it cannot see a clean image. It comes
from ``unpaired.measurements`` (:func:`load_measurements`):

* a folder of measurements as the operator produces them: ``.npy`` arrays ``(C, h, w)`` or
  ``(h, w)`` (a ``(N, C, h, w)`` array holds N of them), or image files of the measurement's size
  (8-bit values mapped to [-1, 1], the images' range); files are read in sorted order;
* ``simulate``: the train split of ``data`` measured once with a fixed noise seed, after which
  the clean images are dropped (for comparing measurement-only with paired training).

Every set has a :attr:`~MeasurementDataset.digest` of its measurements and the operator's
parameters, so that anchors computed for one set are never used with another.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from davi.data.datasets import IMAGE_SUFFIXES, DataError, normalize_mode

SIMULATE = "simulate"


def measurement_digest(y: torch.Tensor, operator_params: dict) -> str:
    """sha256 (first 16 hex digits) of the measurements' float32 bytes and the operator's parameters."""
    h = hashlib.sha256(json.dumps(operator_params, sort_keys=True).encode())
    h.update(str(tuple(y.shape)).encode())
    h.update(y.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class MeasurementDataset(torch.utils.data.Dataset):
    """Measurements ``y`` (N, C, h, w) of one operator, optionally with per-measurement anchors (N, C, H, W)."""

    def __init__(self, y: torch.Tensor, operator_params: dict, source: str, anchors: torch.Tensor | None = None):
        self.y = y
        self.operator_params = operator_params
        self.source = source
        self.anchors = anchors
        self.digest = measurement_digest(y, operator_params)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"y": self.y[i], "index": i}
        if self.anchors is not None:
            item["anchor"] = self.anchors[i]
        return item

    def with_anchors(self, anchors: torch.Tensor) -> "MeasurementDataset":
        out = MeasurementDataset.__new__(MeasurementDataset)
        out.__dict__.update(self.__dict__, anchors=anchors)
        return out

    def tensor(self, *args, **kwargs):
        # What an ImageDataset answers with clean images: a measurement set has none to give.
        raise DataError(f"{self.source}: a measurement-only set has no clean images")

    images = property(tensor)


def simulate(images: torch.Tensor, operator, seed: int, source: str) -> MeasurementDataset:
    """Measure ``images`` with noise from ``seed`` and keep only the measurements."""
    y = operator.measure(images, generator=torch.Generator().manual_seed(seed))
    return MeasurementDataset(y.detach().clone(), operator.params(), source)


def _read_one(path: Path, channels: int) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable .npy array ({str(e).splitlines()[0][:120]})") from None
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"{path}: array of {arr.dtype}, expected numbers")
        arr = arr.astype(np.float32)
    else:
        try:
            with Image.open(path) as img:
                img.load()
                arr = np.array(normalize_mode(img, channels), dtype=np.float32) / 127.5 - 1.0
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{path}: not a readable image ({e.__class__.__name__})") from None
        if arr.ndim == 3:
            arr = arr.transpose(2, 0, 1)  # (h, w, C) -> (C, h, w)
    if arr.ndim == 2:
        arr = arr[None]
    return arr


def read_folder(folder: str | Path, operator) -> torch.Tensor:
    """Every measurement in ``folder`` as (N, C, h, w); DataError naming the first file that does not fit."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"unpaired.measurements={folder}: not a folder (or '{SIMULATE}')")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | {".npy"})
    if not files:
        raise DataError(f"{folder}: no measurements found (.npy or {', '.join(sorted(IMAGE_SUFFIXES))})")
    expected = operator.measurement_shape((1, operator.channels, operator.resolution, operator.resolution))[1:]
    out = []
    for path in files:
        arr = _read_one(path, operator.channels)
        stack = arr if arr.ndim == 4 else arr[None]
        if tuple(stack.shape[1:]) != tuple(expected):
            raise DataError(f"{path}: measurement of shape {tuple(arr.shape)}, but operator {operator.name} "
                            f"({operator.describe()}) measures {tuple(expected)} at data.resolution="
                            f"{operator.resolution}")
        if not np.isfinite(stack).all():
            raise DataError(f"{path}: measurement contains NaN or infinite values")
        out.append(torch.from_numpy(np.ascontiguousarray(stack)))
    return torch.cat(out)


def load_measurements(cfg, operator) -> MeasurementDataset:
    """The measurement set ``cfg.unpaired`` names (the first ``unpaired.limit`` when set)."""
    from davi.config import ConfigError

    uc = cfg.unpaired
    if not uc.measurements:
        raise ConfigError("unpaired.measurements: empty; name a folder of measurements or 'simulate'")
    if uc.measurements == SIMULATE:
        from davi.data.datasets import load_split

        split = load_split(cfg.data, "train")
        images = split.tensor(limit=uc.limit or None)
        data = simulate(images, operator, uc.seed, f"{cfg.data.source}:train[:{len(images)}] measured (seed {uc.seed})")
        del images  # the clean images end here
        return data
    y = read_folder(uc.measurements, operator)
    if uc.limit:
        y = y[: uc.limit]
    return MeasurementDataset(y, operator.params(), str(uc.measurements))
