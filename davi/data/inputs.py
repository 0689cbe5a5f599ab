"""Images to restore, from wherever a user has them: an image file, a folder of them (``.png``,
``.jpg``, ``.npy`` ...), or ``"<data source>:<split>"`` (e.g. ``mnist32:test``), as (B, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from davi.data.datasets import DataError


@dataclass
class NamedImages:
    """Images with one name per image (file stem, or ``<split>_<index>``) and the files whose channel
    count was converted to the one asked for."""

    names: list[str]
    images: torch.Tensor
    converted: list[Path] = field(default_factory=list)


def _split_images(spec: str, channels: int, resolution: int, limit: int | None, trained_data: dict | None):
    from davi.config import DataConfig
    from davi.data.datasets import load_split

    source, split = spec.rsplit(":", 1)
    data = DataConfig(source=source, resolution=resolution, channels=channels)
    if trained_data and trained_data.get("source") == source:  # that run's held-out images
        for key in ("test_fraction", "train_range", "test_range", "image_column"):
            if key in trained_data:
                setattr(data, key, trained_data[key])
    ds = load_split(data, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    return NamedImages([f"{split}_{i:05d}" for i in range(n)], ds.tensor(limit=n))


def read_with_channels(path: Path, channels: int, converted: list) -> torch.Tensor:
    """read_image, except that an RGB image asked for as 1 channel becomes grayscale, and a 1-channel
    .npy array asked for as 3 channels is replicated (image files already are); ``converted`` gets
    the path of each such file."""
    from davi.io.images import read_image

    try:
        return read_image(path, channels)
    except DataError:
        other = 3 if channels == 1 else 1
        try:
            image = read_image(path, other)
        except DataError:
            image = None
        if image is None or path.suffix.lower() == ".npy" and channels == 1:
            raise  # unreadable, or a colour measurement array (exact values: not ours to mix)
    converted.append(path)
    if channels == 1:  # the luma weights PIL's RGB -> L conversion uses
        return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)
    return image.expand(3, -1, -1).clone()


def load_named_images(spec: str | Path, channels: int = 1, resolution: int = 32, limit: int | None = None,
                      trained_data: dict | None = None) -> NamedImages:
    """The images ``spec`` names. For ``source:split`` of the data set an export was trained on
    (``trained_data``: its card's ``config.data``), the split is that run's, so ``test`` means the
    images held out in its training. Files of one call must share one size (DataError naming them)."""
    from davi.io.images import list_images

    spec = str(spec)
    if ":" in spec and not Path(spec).exists():
        return _split_images(spec, channels, resolution, limit, trained_data)
    files = list_images(spec)[: limit or None]
    converted: list[Path] = []
    images = [read_with_channels(f, channels, converted) for f in files]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise DataError(f"{spec}: images of different sizes {sorted(shapes)}; load them in separate calls")
    root = Path(spec) if Path(spec).is_dir() else Path(spec).parent
    names = [str(f.relative_to(root).with_suffix("")).replace(os.sep, "__") for f in files]
    return NamedImages(names, torch.stack(images), converted)


def load_images(spec: str | Path, channels: int = 1, resolution: int = 32, limit: int | None = None) -> torch.Tensor:
    """(B, C, H, W) images in [-1, 1] from an image file, a folder, or ``"<source>:<split>"``
    (``"mnist32:test"``: the bundled held-out digits), the first ``limit`` of them."""
    return load_named_images(spec, channels, resolution, limit).images
