"""How one pool of images is split into train and test, never overlapping: explicit ``start:stop``
ranges (``data.test_range`` / ``data.train_range``), else a stable hash of each image's name
(``data.test_fraction``), so adding images never moves an old one across the split."""

from __future__ import annotations

import hashlib
from typing import Callable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class DataError(ValueError):
    """A data source that cannot be used as configured (named in the message)."""


def parse_range(text: str, n: int, key: str) -> range:
    """``"start:stop"`` (either side may be empty) as a range clipped to ``0 .. n``."""
    try:
        start, stop = (int(v) if v.strip() else d for v, d in zip(text.split(":"), (0, n)))
    except ValueError:
        raise DataError(f"{key}: {text!r} is not a 'start:stop' range") from None
    return range(max(start, 0), min(stop, n))


def in_test(name: str, fraction: float) -> bool:
    """Whether the image called ``name`` is held out: its sha1 read as a number in [0, 1) is below ``fraction``."""
    digest = hashlib.sha1(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_indices(n: int, split: str, cfg, names: Callable[[], list[str]]) -> list[int]:
    """The indices (of ``n`` pooled images) in ``split``; ``names()`` is asked only for the hash rule."""
    if cfg.test_range or cfg.train_range:
        test = set(parse_range(cfg.test_range, n, "data.test_range")) if cfg.test_range else set()
        if cfg.train_range:
            train = [i for i in parse_range(cfg.train_range, n, "data.train_range") if i not in test]
        else:
            train = [i for i in range(n) if i not in test]
        return sorted(test) if split == "test" else train
    return [i for i, nm in enumerate(names()) if in_test(nm, cfg.test_fraction) == (split == "test")]
