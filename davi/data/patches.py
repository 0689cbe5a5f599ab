"""Random crops of large images as a data set, and photo sets whose split is fixed by a manifest.

``data.patches: true`` serves a folder of large images (or the bundled photo set, ``source:
photos``) as random ``data.resolution`` crops: each image is rescaled by a factor drawn
log-uniformly in ``data.patch_scale`` and flipped left-right with probability 1/2 when ``data.flip``
is on. Users with a handful of large images (photographs, microscopy, astronomy, satellite) train on
these crops; a fully convolutional network trained on them applies at any size.

Determinism: a split is a *virtual* data set of ``images x data.patches_per_image`` items, and item
``k`` is the crop of image ``k % images`` drawn from a generator seeded by (``data.patch_seed``,
split, ``k``) alone. The crop therefore depends only on the index it is asked for, never on worker
or loader state, and since ``StepBatchSampler`` makes the indices of step ``s`` a pure function of
(train.seed, s), a batch is a pure function of (seeds, step): resume is exact. Within one epoch of
the sampler (``images x patches_per_image`` items) every item is a different crop.

Split by image, never by patch: a folder with a ``manifest.json`` that lists its images with a
``split`` (the photo set, ``davi/assets/photos``) is split as the manifest says; any other folder
by the usual rules on its files (``data.test_range`` / ``data.train_range`` into the sorted file
list, else the hash of each relative path against ``data.test_fraction``). The test split's crops
use their own generator stream, and no test crop comes from a train image.

Without ``data.patches`` a manifest folder (``source: photos``) gives whole images, shorter side
resized to ``data.resolution`` and center-cropped, as any image folder does (e.g. 256x256 test photos):
``davi.data.datasets.load_split`` takes the files of :func:`split_files` for those.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from davi.config import DataConfig
from davi.data.splits import IMAGE_SUFFIXES, DataError, split_indices

PHOTO_SETS = {"photos": Path(__file__).resolve().parents[1] / "assets" / "photos"}
MANIFEST = "manifest.json"
_SPLIT_CODE = {"train": 0, "test": 1}


class PatchError(DataError):
    """A patch source that cannot be used as configured (named in the message)."""


def source_folder(source: str) -> Path | None:
    """The folder behind ``source`` (a bundled photo set's name or a path), or None if it is neither."""
    if source in PHOTO_SETS:
        return PHOTO_SETS[source]
    p = Path(source)
    return p if p.is_dir() else None


def has_manifest(cfg: DataConfig) -> bool:
    """Whether ``cfg.source`` is a bundled photo set or a folder whose manifest.json fixes the split."""
    if cfg.source in PHOTO_SETS:
        return True
    folder = source_folder(cfg.source)
    return folder is not None and (folder / MANIFEST).is_file()


def _manifest_files(folder: Path, split: str, cfg: DataConfig) -> list[Path]:
    path = folder / MANIFEST
    if cfg.train_range or cfg.test_range:
        key = "data.test_range" if cfg.test_range else "data.train_range"
        raise PatchError(f"{key}: {path} fixes the train/test split by image; leave {key} empty")
    try:
        entries = json.loads(path.read_text())["photos"]
        listed = [(str(e["file"]), str(e["split"])) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PatchError(f"{path}: not a photo manifest (needs 'photos': [{{'file', 'split'}}, ...]; "
                        f"{e.__class__.__name__})") from None
    bad = sorted({s for _, s in listed} - set(_SPLIT_CODE))
    if bad:
        raise PatchError(f"{path}: unknown split {bad[0]!r} (valid: train, test)")
    files = [folder / f for f, s in listed if s == split]
    for f in files:
        if not f.is_file():
            raise PatchError(f"{f}: listed in {path} but missing")
    return sorted(files)


def _folder_files(folder: Path, split: str, cfg: DataConfig) -> list[Path]:
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise PatchError(f"{folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    keep = split_indices(len(images), split, cfg, lambda: [str(p.relative_to(folder)) for p in images])
    return [images[i] for i in keep]


def split_files(cfg: DataConfig, split: str) -> list[Path]:
    """The image files of one split: the manifest's when the folder has one, else the folder rules."""
    if split not in _SPLIT_CODE:
        raise PatchError(f"split must be 'train' or 'test', got {split!r}")
    folder = source_folder(cfg.source)
    if folder is None:
        raise PatchError(f"{cfg.source}: data.patches needs a folder of images or "
                        f"{' / '.join(repr(k) for k in PHOTO_SETS)} as data.source")
    if cfg.source in PHOTO_SETS and not (folder / MANIFEST).is_file():
        raise PatchError(f"{folder / MANIFEST}: bundled photo set is missing (run scripts/build_photo_set.py)")
    files = _manifest_files(folder, split, cfg) if (folder / MANIFEST).is_file() else _folder_files(folder, split, cfg)
    if not files:
        raise PatchError(f"{cfg.source}: the {split} split is empty (check data.test_fraction / ranges)")
    return files


def _open(path: Path, channels: int) -> Image.Image:
    """An image as L, F (16-bit grey, 0..255) or RGB, as davi.data.datasets.normalize_mode brings it;
    a grey image in an RGB set stays grey here and is replicated to 3 channels after cropping."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith("I"):  # 16-bit grey: 0..65535 -> 0..255 in float
                img = Image.fromarray(np.asarray(img, dtype=np.float32) / 257.0, "F")
            elif img.mode in ("1", "LA"):
                img = img.convert("L")
            elif img.mode in ("P", "PA"):
                img = img.convert("L" if channels == 1 else "RGB")
            elif img.mode not in ("L", "F", "RGB"):  # RGBA, CMYK, YCbCr, ...
                img = img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise PatchError(f"{path}: not a readable image ({e.__class__.__name__})") from None
    have = len(img.getbands())
    if have != channels and not (have == 1 and channels == 3):
        raise PatchError(f"{path}: image has {have} channel(s) ({img.mode}), config data.channels={channels}")
    return img


def _to_tensor(img: Image.Image, channels: int) -> torch.Tensor:
    arr = np.array(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], channels, axis=2)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0


class PatchDataset(torch.utils.data.Dataset):
    """Random crops of a list of images; item ``k`` is a pure function of (seed, split, k)."""

    def __init__(self, files: list[Path], resolution: int, channels: int, patches_per_image: int,
                 scale: tuple[float, float], flip: bool, seed: int, split: str, name: str):
        self.files = list(files)
        self.resolution, self.channels = resolution, channels
        self.patches_per_image = patches_per_image
        self.scale, self.flip, self.seed, self.split, self.name = scale, flip, seed, split, name
        # Every image decoded now (a bad file fails at load time, named): content only, no RNG state.
        self.images = [_open(f, channels) for f in self.files]

    def __len__(self) -> int:
        return len(self.files) * self.patches_per_image

    def crop_params(self, k: int) -> tuple[int, float, float, float, bool]:
        """(image, left, top, window side in the image's pixels, flip) of item ``k``."""
        if not 0 <= k < len(self):
            raise IndexError(f"{self.name}: index {k} out of range (0..{len(self) - 1})")
        j = k % len(self.files)
        w, h = self.images[j].size
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], k])
        lo, hi = self.scale
        s = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        side = min(self.resolution / s, float(w), float(h))  # an image too small for the scale: its shorter side
        left = float(rng.integers(0, math.floor(w - side) + 1))  # whole pixels: at scale 1 a crop is exact
        top = float(rng.integers(0, math.floor(h - side) + 1))
        flip = bool(rng.integers(2)) if self.flip else False
        return j, left, top, side, flip

    def __getitem__(self, k: int) -> dict[str, Any]:
        j, left, top, side, flip = self.crop_params(int(k))
        r = self.resolution
        img = self.images[j]
        if side == r and left.is_integer() and top.is_integer():
            patch = img.crop((int(left), int(top), int(left) + r, int(top) + r))
        else:  # rescale only the window (PIL's antialiased bicubic, as whole images are resized)
            patch = img.resize((r, r), Image.BICUBIC, box=(left, top, left + side, top + side))
        if flip:
            patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
        return {"image": _to_tensor(patch, self.channels), "index": int(k), "label": -1}

    def labels(self) -> torch.Tensor:
        return torch.full((len(self),), -1, dtype=torch.long)

    def tensor(self, limit: int | None = None, start: int = 0) -> torch.Tensor:
        """Decode ``limit`` crops (items ``start`` on) into one (N, C, H, W) tensor; consecutive items
        come from different images."""
        stop = len(self) if limit is None else min(len(self), start + limit)
        r = self.resolution
        return torch.stack([self[i]["image"] for i in range(start, stop)]) if stop > start else torch.empty(
            0, self.channels, r, r)


def load_split(cfg: DataConfig, split: str) -> PatchDataset:
    """The ``train`` or ``test`` split of a patch source (``data.patches``)."""
    dataset = PatchDataset(split_files(cfg, split), cfg.resolution, cfg.channels, cfg.patches_per_image,
                           (float(cfg.patch_scale[0]), float(cfg.patch_scale[1])), cfg.flip, cfg.patch_seed,
                           split, f"{cfg.source}:{split}")
    dataset[0]
    return dataset
