"""Patch data (davi.data.patches): deterministic crops, exact resume, split by image, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from davi.config import ConfigError, DataConfig, load_config
from davi.data.datasets import DataError, StepBatchSampler, load_split
from davi.data.patches import PHOTO_SETS, PatchDataset, split_files

RES = 16


def _write_images(folder: Path, n: int, size=(80, 60), mode="RGB") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        p = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(p)
        paths.append(p)
    return paths


@pytest.fixture()
def folder(tmp_path):
    _write_images(tmp_path / "big", 6)
    return tmp_path / "big"


def _cfg(source, **kw) -> DataConfig:
    base = dict(source=str(source), resolution=RES, channels=3, patches=True, patches_per_image=50,
                patch_scale=[0.5, 1.0], flip=True, test_fraction=0.0)
    return DataConfig(**{**base, **kw})


def test_crop_is_a_pure_function_of_seed_and_index(folder):
    a, b = load_split(_cfg(folder), "train"), load_split(_cfg(folder), "train")
    for k in (0, 7, 123, len(a) - 1):
        assert torch.equal(a[k]["image"], b[k]["image"])
    # Asked for in another order, from a fresh data set: the same crops.
    c = load_split(_cfg(folder), "train")
    assert torch.equal(c[123]["image"], a[123]["image"]) and torch.equal(c[0]["image"], a[0]["image"])
    other = load_split(_cfg(folder, patch_seed=1), "train")
    assert not torch.equal(other[123]["image"], a[123]["image"])


def test_different_indices_give_different_crops(folder):
    ds = load_split(_cfg(folder), "train")
    x = ds.tensor(limit=60)
    flat = x.flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == len(flat)
    # Same image (k and k + images), different crop.
    n = len(ds.files)
    assert ds.crop_params(3)[0] == ds.crop_params(3 + n)[0]
    assert not torch.equal(ds[3]["image"], ds[3 + n]["image"])


def test_rgb_range_and_shape(folder):
    x = load_split(_cfg(folder), "train").tensor(limit=40)
    assert x.shape == (40, 3, RES, RES) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    # A grey image in an RGB set is replicated to 3 channels.
    _write_images(folder, 1, mode="L")
    y = load_split(_cfg(folder), "train").tensor(limit=12)
    assert y.shape[1] == 3


def test_scale_one_crop_is_the_exact_window_and_flip_mirrors_it(folder):
    ds = load_split(_cfg(folder, patch_scale=[1.0, 1.0], flip=True), "train")
    flips = set()
    for k in range(20):
        j, left, top, side, flip = ds.crop_params(k)
        assert side == RES and left.is_integer() and top.is_integer()
        arr = np.asarray(Image.open(ds.files[j]).convert("RGB"), dtype=np.float32)
        window = arr[int(top):int(top) + RES, int(left):int(left) + RES]
        if flip:
            window = window[:, ::-1]
        expect = torch.from_numpy(window.copy()).permute(2, 0, 1) / 127.5 - 1
        assert torch.allclose(ds[k]["image"], expect)
        flips.add(flip)
    assert flips == {True, False}


def test_scaled_crops_stay_inside_the_image(folder):
    ds = load_split(_cfg(folder, patch_scale=[0.2, 0.6]), "train")
    for k in range(50):
        j, left, top, side, _ = ds.crop_params(k)
        w, h = Image.open(ds.files[j]).size
        assert RES / 0.6 - 1e-6 <= side <= min(RES / 0.2, w, h) + 1e-6
        assert 0 <= left and left + side <= w and 0 <= top and top + side <= h


def test_resume_gives_the_same_next_batch(folder):
    steps, bs, seed = 5, 8, 3

    def loader(ds, start, workers=0):
        sampler = StepBatchSampler(len(ds), bs, seed, start_step=start)
        return iter(torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers))

    straight = loader(load_split(_cfg(folder), "train"), 0)
    for _ in range(steps):
        next(straight)
    want = next(straight)
    resumed = next(loader(load_split(_cfg(folder), "train"), steps))  # a fresh process's data set
    assert torch.equal(resumed["index"], want["index"]) and torch.equal(resumed["image"], want["image"])
    # Worker processes hold no crop state: two workers give the same batch.
    workers = next(loader(load_split(_cfg(folder), "train"), steps, workers=2))
    assert torch.equal(workers["image"], want["image"])


def test_photo_set_split_follows_the_manifest():
    manifest = json.loads((PHOTO_SETS["photos"] / "manifest.json").read_text())
    want = {s: {p["file"] for p in manifest["photos"] if p["split"] == s} for s in ("train", "test")}
    cfg = DataConfig(source="photos", resolution=RES, channels=3, patches=True, patches_per_image=4)
    got = {s: {p.name for p in split_files(cfg, s)} for s in ("train", "test")}
    assert got == want and not (got["train"] & got["test"]) and len(got["test"]) >= 15
    test = load_split(cfg, "test")
    assert isinstance(test, PatchDataset)
    served = {test.files[test.crop_params(k)[0]].name for k in range(len(test))}
    assert served == want["test"]  # every test photo, and nothing else
    # The folder's path behaves as the bundled name: the manifest wins over the hash rule.
    by_path = DataConfig(source=str(PHOTO_SETS["photos"]), resolution=RES, channels=3, patches=True)
    assert {p.name for p in split_files(by_path, "test")} == want["test"]
    # Whole photos (no patches): the held-out photos at the resolution, center-cropped.
    whole = load_split(DataConfig(source="photos", resolution=32, channels=3), "test")
    assert len(whole) == len(want["test"]) and whole.tensor(limit=2).shape == (2, 3, 32, 32)


def test_folder_split_is_by_file_never_by_patch(tmp_path):
    _write_images(tmp_path / "many", 20, size=(40, 40))
    cfg = _cfg(tmp_path / "many", test_fraction=0.3, patches_per_image=5)
    train, test = split_files(cfg, "train"), split_files(cfg, "test")
    assert train and test and not set(train) & set(test) and len(train) + len(test) == 20
    ds = load_split(cfg, "test")
    assert {ds.files[ds.crop_params(k)[0]] for k in range(len(ds))} == set(test)
    ranged = _cfg(tmp_path / "many", test_range="0:4")
    assert [p.name for p in split_files(ranged, "test")] == [f"img{i:02d}.png" for i in range(4)]
    assert len(split_files(ranged, "train")) == 16


def test_folder_rules_agree_with_whole_image_folders(tmp_path):
    _write_images(tmp_path / "many", 20, size=(40, 40))
    for kw in ({"test_fraction": 0.3}, {"test_range": "3:9"}, {"train_range": "0:12", "test_range": "10:14"}):
        for split in ("train", "test"):
            whole = load_split(DataConfig(source=str(tmp_path / "many"), resolution=RES, channels=3, **kw), split)
            want = [whole.hf[i]["image"]["path"] for i in whole.indices]
            assert [str(p) for p in split_files(_cfg(tmp_path / "many", **kw), split)] == want


def test_a_folder_with_a_manifest_is_split_by_it(folder):
    files = sorted(p.name for p in folder.glob("*.png"))
    photos = [{"file": f, "split": "test" if i < 2 else "train"} for i, f in enumerate(files)]
    (folder / "manifest.json").write_text(json.dumps({"photos": photos}))
    assert [p.name for p in split_files(_cfg(folder), "test")] == files[:2]
    assert [p.name for p in split_files(_cfg(folder), "train")] == files[2:]


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("override, key", [
    ("data.patch_scale=[0, 1]", "data.patch_scale"),
    ("data.patch_scale=[2.0, 1.0]", "data.patch_scale"),
    ("data.patch_scale=[1.0]", "data.patch_scale"),
    ("data.patch_scale=0.5", "data.patch_scale"),
    ("data.patches_per_image=0", "data.patches_per_image"),
    ("data.patches=maybe", "data.patches"),
    ("data.flip=2", "data.flip"),
    ("data.patch_size=64", "data.patch_size"),
])
def test_bad_keys_give_one_line_errors(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in _one_line(e)


def test_bad_sources_give_one_line_errors(tmp_path, folder):
    with pytest.raises(DataError) as e:
        load_split(DataConfig(source="mnist32", patches=True), "train")
    assert "mnist32" in _one_line(e) and "data.patches" in str(e.value)
    with pytest.raises(DataError) as e:
        load_split(_cfg(tmp_path / "empty_dir_missing"), "train")
    assert "empty_dir_missing" in _one_line(e)
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError) as e:
        load_split(_cfg(tmp_path / "none"), "train")
    assert "no images found" in _one_line(e)
    with pytest.raises(DataError) as e:
        load_split(_cfg(folder, channels=1), "train")
    assert "data.channels=1" in _one_line(e) and "img00.png" in str(e.value)
    (folder / "img00.png").write_bytes(b"not an image")
    with pytest.raises(DataError) as e:
        load_split(_cfg(folder), "train")
    assert "img00.png" in _one_line(e)
    with pytest.raises(DataError) as e:
        load_split(DataConfig(source="photos", test_range="0:5", patches=True, channels=3), "test")
    assert "data.test_range" in _one_line(e) and "manifest.json" in str(e.value)
    (folder / "manifest.json").write_text(json.dumps({"photos": [{"file": "img01.png", "split": "val"}]}))
    with pytest.raises(DataError) as e:
        load_split(_cfg(folder), "train")
    assert "manifest.json" in _one_line(e) and "'val'" in str(e.value)
    (folder / "manifest.json").write_text(json.dumps({"photos": [{"file": "gone.png", "split": "train"}]}))
    with pytest.raises(DataError) as e:
        load_split(_cfg(folder), "train")
    assert "gone.png" in _one_line(e)


def test_photo_prior_config_builds_a_4m_network_without_attention():
    from davi.models.prior import build_unet

    cfg = load_config("configs/prior_photos.yaml")
    assert cfg.data.patches and cfg.data.source == "photos" and cfg.data.resolution == 64 and cfg.data.channels == 3
    unet = build_unet(cfg.prior, cfg.data)
    assert all("Attn" not in t for t in unet.config.down_block_types + unet.config.up_block_types)
    assert 3.5e6 < sum(p.numel() for p in unet.parameters()) < 4.5e6
    with torch.no_grad():  # fully convolutional: another size goes through
        assert unet(torch.zeros(1, 3, 40, 56), 10).sample.shape == (1, 3, 40, 56)
