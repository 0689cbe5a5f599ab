"""Reading and writing single images: PNG out (atomically), any PIL format in, pixels in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from davi.data.datasets import IMAGE_SUFFIXES, DataError, normalize_mode
from davi.io.atomic import write_file

# Raw measurements keep their noise below 8-bit quantisation: float arrays in [-1, 1], (C, H, W) or (H, W).
ARRAY_SUFFIXES = {".npy"}


def list_images(path: str | Path) -> list[Path]:
    """An image file, or the images (and .npy arrays) in a folder, sorted; DataError if there are none."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataError(f"{p}: no such file or folder")
    suffixes = IMAGE_SUFFIXES | ARRAY_SUFFIXES
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file())
    if not files:
        raise DataError(f"{p}: no images found (looked for {', '.join(sorted(suffixes))})")
    return files


def _read_array(path: Path, channels: int) -> torch.Tensor:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e.__class__.__name__})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}: expected a float array of shape (C, H, W) or (H, W), got {arr.dtype} {arr.shape}")
    if arr.shape[0] != channels:
        raise DataError(f"{path}: array has {arr.shape[0]} channel(s), expected {channels}")
    return torch.from_numpy(arr.astype(np.float32))


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """(C, H, W) in [-1, 1], no resizing; DataError naming the file if unreadable or of another channel count.

    PNG/JPEG/... are scaled from [0, 255]; a .npy array is taken as it is (pixels in [-1, 1]).
    """
    if Path(path).suffix.lower() in ARRAY_SUFFIXES:
        return _read_array(Path(path), channels)
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.array(normalize_mode(img, channels), dtype=np.float32)  # same modes as the data sets
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] != channels:
        raise DataError(f"{path}: image has {arr.shape[2]} channel(s), expected {channels}")
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def write_image(image: torch.Tensor, path: str | Path) -> None:
    """Write a (C, H, W) image in [-1, 1] as PNG, atomically."""
    write_file(path, lambda tmp: Image.fromarray(to_uint8(image)).save(tmp, format="PNG"))


def write_array(image: torch.Tensor, path: str | Path) -> None:
    """Write a (C, H, W) float array as .npy, atomically."""
    array = image.detach().float().cpu().numpy()

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a path
            np.save(f, array)

    write_file(path, save)


def make_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (C, H', W') in [0, 1], ``nrow`` images a row, 1-px white lines."""
    n, c, h, w = images.shape
    ncol = -(-n // nrow)
    grid = torch.ones(c, ncol * (h + 1) + 1, nrow * (w + 1) + 1)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = images[i].float().cpu()
    return (grid.clamp(-1, 1) + 1) / 2


def save_grid_png(grid: torch.Tensor, path: str | Path, upscale: int = 1) -> None:
    """Write a (C, H, W) grid in [0, 1] as PNG (nearest upscaling for small digits), atomically."""
    arr = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    write_file(path, lambda tmp: img.save(tmp, format="PNG"))


def display_measurement(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A measurement shown at the image's size (nearest upsampling for low-resolution ones)."""
    import torch.nn.functional as F

    return y if y.shape == like.shape else F.interpolate(y, size=like.shape[-2:], mode="nearest")
