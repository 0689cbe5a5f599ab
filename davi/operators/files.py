"""Kernel and mask values read from ``.npy`` files or images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from davi.operators.base import OperatorError, _first_line, _shape


def _image_values(img: Image.Image) -> np.ndarray:
    """A grayscale view of any PIL image, scaled so that full white is 1."""
    if img.mode.startswith("I;16") or img.mode == "I":
        return np.asarray(img, dtype=np.float64) / 65535.0
    if img.mode == "F":
        return np.asarray(img, dtype=np.float64)
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def read_array_file(path: str | Path, key: str) -> np.ndarray:
    """A 2-D float64 array from a ``.npy`` file or an image (grayscale, white = 1); OperatorError naming ``key`` and the file."""
    p = Path(path)
    where = f"{key}: {p}"
    if not p.is_file():
        raise OperatorError(f"{where}: no such file")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
            if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
                raise OperatorError(f"{where}: expected a real-valued array, got dtype {arr.dtype}")
            arr = arr.astype(np.float64)
        else:
            with Image.open(p) as img:
                arr = _image_values(img)
    except (OSError, ValueError, UnidentifiedImageError) as e:
        if isinstance(e, OperatorError):
            raise
        raise OperatorError(f"{where}: unreadable ({type(e).__name__}: {_first_line(e)})") from None
    if arr.ndim != 2:
        raise OperatorError(f"{where}: expected a 2-D array (H, W), got shape {_shape(arr.shape)}")
    return arr


def _numbers(values: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise OperatorError(f"{where}: not an array of numbers") from None
    if arr.ndim != 2:
        raise OperatorError(f"{where}: expected a 2-D array (H, W), got shape {_shape(arr.shape)}")
    if not np.isfinite(arr).all():
        raise OperatorError(f"{where}: contains NaN or infinite values")
    return arr


# -- blur -------------------------------------------------------------------------------------
