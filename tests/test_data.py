"""Data: the bundled digits, image folders (resize + crop, deterministic disjoint splits, clear
errors) and the step-indexed batch sampler that makes resumed runs repeat uninterrupted ones."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from davi.config import DataConfig
from davi.data.datasets import DataError, StepBatchSampler, load_image_file, load_split

# ---------------------------------------------------------------------------------------------
# The bundled MNIST32 digits


@pytest.fixture(scope="module")
def mnist():
    cfg = DataConfig(source="mnist32", resolution=32, channels=1)
    return load_split(cfg, "train"), load_split(cfg, "test")


def test_bundled_split_sizes(mnist):
    train, test = mnist
    assert len(train) == 4000
    assert len(test) == 1000


def test_bundled_classes_are_balanced(mnist):
    train, test = mnist
    for ds, per_class in ((train, 400), (test, 100)):
        labels = ds.labels()
        assert labels.min() == 0 and labels.max() == 9
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10


def test_bundled_images_shape_and_range(mnist):
    train, test = mnist
    for ds in (train, test):
        x = ds.tensor()
        assert x.shape == (len(ds), 1, 32, 32) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
        # Real digits: black background and white strokes both reach the ends of the range.
        assert x.min() == -1 and x.max() == 1
        assert x.std() > 0.3
    item = train[0]
    assert item["image"].shape == (1, 32, 32) and 0 <= item["label"] <= 9


def test_no_test_image_is_a_train_image(mnist):
    train, test = mnist

    def digests(ds):
        x = ds.tensor().numpy()
        return {hashlib.sha1(img.tobytes()).hexdigest() for img in x}

    train_d, test_d = digests(train), digests(test)
    assert len(test_d) > 990  # nearly all test digits are distinct images
    assert not (train_d & test_d)


def test_bundled_digits_replicate_into_three_channels():
    x = load_split(DataConfig(source="mnist32", channels=3), "train")[0]["image"]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[2])


def test_bad_split_name_and_unknown_source(tmp_path):
    with pytest.raises(DataError, match="split"):
        load_split(DataConfig(), "validation")
    with pytest.raises(DataError, match="nope_not_a_dataset"):
        load_split(DataConfig(source=str(tmp_path / "nope_not_a_dataset")), "train")


# ---------------------------------------------------------------------------------------------
# Image folders

SIZES = [(40, 40), (64, 48), (48, 64), (33, 70), (100, 20), (16, 16)]


def _make_folder(root, n=30, mode="RGB"):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        sub = root / "sub" if i % 5 == 0 else root  # files in subfolders count too
        sub.mkdir(exist_ok=True)
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(sub / f"img_{i:03d}.png")
        names.append(str((sub / f"img_{i:03d}.png").relative_to(root)))
    return sorted(names)


def _names(ds):
    return [ds.hf[i]["name"] for i in ds.indices]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    return root, _make_folder(root)


def test_folder_loads_at_the_configured_resolution(folder):
    root, names = folder
    cfg = DataConfig(source=str(root), resolution=16, channels=3, test_fraction=0.3)
    for split in ("train", "test"):
        ds = load_split(cfg, split)
        x = ds.tensor()
        assert x.shape == (len(ds), 3, 16, 16)
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
        assert ds[0]["label"] == -1


def test_folder_hash_split_is_deterministic_disjoint_and_complete(folder):
    root, names = folder
    cfg = DataConfig(source=str(root), resolution=16, channels=3, test_fraction=0.3)
    train, test = _names(load_split(cfg, "train")), _names(load_split(cfg, "test"))
    assert train and test
    assert not set(train) & set(test)
    assert sorted(train + test) == names
    # Deterministic: a second load gives the same split.
    assert _names(load_split(cfg, "train")) == train and _names(load_split(cfg, "test")) == test
    # Stable as files are added: every old file keeps its side.
    _make_folder(root / "more", n=6)
    train2, test2 = _names(load_split(cfg, "train")), _names(load_split(cfg, "test"))
    assert set(train) <= set(train2) and set(test) <= set(test2)
    assert len(train2) + len(test2) == len(names) + 6
    # The documented rule: a file is in the test split when the first 8 bytes of the SHA-1 of its relative
    # path, read as a fraction of 2^64, fall below test_fraction.
    def hashed_to_test(name: str) -> bool:
        return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") / 2 ** 64 < 0.3

    assert set(test) == {nm for nm in names if hashed_to_test(nm)}
    # and that rule respects the fraction on many names (binomial std 0.005 at n = 8000)
    many = [f"sub/img_{i:05d}.png" for i in range(8000)]
    assert abs(sum(map(hashed_to_test, many)) / len(many) - 0.3) < 0.02


def test_folder_ranges(folder):
    root, names = folder
    cfg = DataConfig(source=str(root), resolution=16, channels=3, test_range="0:5", train_range="10:30")
    assert _names(load_split(cfg, "test")) == names[0:5]
    assert _names(load_split(cfg, "train")) == names[10:30]
    # Only a test range: everything else trains.
    cfg = DataConfig(source=str(root), resolution=16, channels=3, test_range=":4")
    assert _names(load_split(cfg, "test")) == names[:4]
    assert _names(load_split(cfg, "train")) == names[4:]
    # Overlapping ranges never leak test files into train.
    cfg = DataConfig(source=str(root), resolution=16, channels=3, test_range="0:10", train_range="5:")
    assert _names(load_split(cfg, "train")) == names[10:]
    with pytest.raises(DataError, match="data.test_range"):
        load_split(DataConfig(source=str(root), resolution=16, channels=3, test_range="a:b"), "test")


def test_resize_then_center_crop(tmp_path):
    root = tmp_path / "stripes"
    root.mkdir()
    # 64 x 16 (w x h): red | green (32 px) | blue. At 16 px the shorter side already fits, so
    # only the center crop acts and must keep the green middle.
    wide = np.zeros((16, 64, 3), np.uint8)
    wide[:, :16, 0] = 255
    wide[:, 16:48, 1] = 255
    wide[:, 48:, 2] = 255
    Image.fromarray(wide).save(root / "a_wide.png")
    # 32 x 128 (w x h), top | middle | bottom: the shorter side is resized 32 -> 16, then the crop
    # keeps the (white) middle.
    tall = np.zeros((128, 32, 3), np.uint8)
    tall[32:96] = 255
    Image.fromarray(tall).save(root / "b_tall.png")
    x = load_image_file(root / "a_wide.png", 16, 3)
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 16, 16))
    y = load_image_file(root / "b_tall.png", 16, 3)
    assert y.shape == (3, 16, 16)
    assert torch.allclose(y, torch.ones(3, 16, 16), atol=1e-2)
    # Quadrants of a square image survive a 2x downscale.
    quad = np.zeros((32, 32, 3), np.uint8)
    quad[:16, 16:] = 255
    Image.fromarray(quad).save(root / "c_quad.png")
    q = load_image_file(root / "c_quad.png", 16, 3)
    assert q[:, 2:6, 10:14].min() > 0.9 and q[:, 10:14, 2:6].max() < -0.9


def test_empty_folder_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"empty: no images found"):
        load_split(DataConfig(source=str(tmp_path / "empty"), channels=3), "train")


def test_corrupt_file_is_named(tmp_path):
    root = tmp_path / "corrupt"
    _make_folder(root, n=4)
    (root / "zz_bad.png").write_bytes(b"this is not a png at all" * 10)
    cfg = DataConfig(source=str(root), resolution=16, channels=3, test_range="0:0")  # all files train
    ds = load_split(cfg, "train")  # the first file is fine
    assert len(ds) == 5
    for i in range(4):
        ds[i]
    with pytest.raises(DataError, match=r"zz_bad\.png.*not a readable image"):
        ds[4]
    # When the broken file comes first, loading the split already fails, naming it.
    (root / "aa_bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"aa_bad\.png"):
        load_split(cfg, "train")
    with pytest.raises(DataError, match=r"aa_bad\.png"):
        load_image_file(root / "aa_bad.png", 16, 3)


def test_channel_mismatch_is_a_data_error(folder, tmp_path):
    root, _ = folder
    with pytest.raises(DataError, match=r"\.png: image has 3 channel\(s\).*data\.channels=1"):
        load_split(DataConfig(source=str(root), resolution=16, channels=1, test_range="0:0"), "train")
    gray = tmp_path / "gray"
    _make_folder(gray, n=3, mode="L")
    # grayscale into a colour data set is replicated (lossless), not an error
    rgb = load_split(DataConfig(source=str(gray), resolution=16, channels=3, test_range="0:0"), "train")[0]["image"]
    assert rgb.shape == (3, 16, 16) and torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])
    ds = load_split(DataConfig(source=str(gray), resolution=16, channels=1, test_range="0:0"), "train")
    assert ds[0]["image"].shape == (1, 16, 16)


def test_sixteen_bit_and_palette_images(tmp_path):
    # 16-bit grayscale is scaled, not clipped (a plain convert("L") made it all white).
    ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 256)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode in ("I;16", "I")
    x = load_image_file(tmp_path / "g16.png", 16, 1)
    expected = torch.from_numpy(ramp.astype(np.float64) / 65535 * 2 - 1).float()[None]
    assert torch.allclose(x, expected, atol=1e-4)
    from davi.io.images import read_image  # infer.py's reader treats modes the same way

    assert torch.allclose(read_image(tmp_path / "g16.png", 1), expected, atol=1e-4)
    # A palette image follows the configured channels.
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    Image.fromarray(gray, "L").convert("P").save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    one = load_image_file(tmp_path / "pal.png", 16, 1)
    three = load_image_file(tmp_path / "pal.png", 16, 3)
    assert one.shape == (1, 16, 16) and three.shape == (3, 16, 16)
    assert torch.allclose(one, torch.from_numpy(gray / 127.5 - 1).float()[None], atol=1e-6)
    assert torch.allclose(three, one.expand(3, 16, 16), atol=1e-6)


def test_a_file_as_source_is_a_data_error(folder):
    root, names = folder
    with pytest.raises(DataError, match="must be a folder"):
        load_split(DataConfig(source=str(root / names[0]), channels=3), "train")


def test_empty_split_is_a_data_error(folder):
    root, _ = folder
    with pytest.raises(DataError, match="test split is empty"):
        load_split(DataConfig(source=str(root), resolution=16, channels=3, test_fraction=0.0), "test")


# ---------------------------------------------------------------------------------------------
# StepBatchSampler


def test_batch_is_a_pure_function_of_seed_and_step():
    a = StepBatchSampler(64, 4, seed=3)
    order = [a.batch(s) for s in (0, 9, 3, 17, 9, 0)]
    fresh = [StepBatchSampler(64, 4, seed=3).batch(s) for s in (0, 9, 3, 17, 9, 0)]
    assert order == fresh
    assert order[1] == order[4] and order[0] == order[5]
    assert all(len(b) == 4 and all(0 <= i < 64 for i in b) for b in order)
    other = StepBatchSampler(64, 4, seed=4)
    assert [other.batch(s) for s in range(4)] != [a.batch(s) for s in range(4)]
    assert a.batch(0) != a.batch(1)


def test_an_epoch_visits_every_index_once():
    s = StepBatchSampler(64, 8, seed=0)
    for epoch in range(3):
        seen = [i for step in range(epoch * 8, epoch * 8 + 8) for i in s.batch(step)]
        assert sorted(seen) == list(range(64))
    # Epochs are reshuffled.
    assert s.batch(0) != s.batch(8)


def test_rank_shards_are_disjoint_and_make_the_global_batch():
    whole = StepBatchSampler(64, 8, seed=1, world_size=1)
    r0 = StepBatchSampler(64, 4, seed=1, rank=0, world_size=2)
    r1 = StepBatchSampler(64, 4, seed=1, rank=1, world_size=2)
    for step in range(20):  # crosses two epoch boundaries
        b0, b1 = r0.batch(step), r1.batch(step)
        assert not set(b0) & set(b1), step
        assert b0 + b1 == whole.batch(step), step


def test_starting_at_step_k_repeats_the_uninterrupted_batches():
    from itertools import islice

    full = list(islice(iter(StepBatchSampler(50, 6, seed=2)), 25))
    for k in (0, 1, 8, 9, 17):
        resumed = list(islice(iter(StepBatchSampler(50, 6, seed=2, start_step=k)), 25 - k))
        assert resumed == full[k:], k
    r1 = list(islice(iter(StepBatchSampler(50, 3, seed=2, start_step=5, rank=1, world_size=2)), 3))
    assert r1 == [StepBatchSampler(50, 3, seed=2, rank=1, world_size=2).batch(s) for s in (5, 6, 7)]


def test_sampler_with_a_data_loader_and_an_empty_set():
    ds = torch.utils.data.TensorDataset(torch.arange(20))
    loader = torch.utils.data.DataLoader(ds, batch_sampler=StepBatchSampler(20, 5, seed=0, start_step=2))
    it = iter(loader)
    s = StepBatchSampler(20, 5, seed=0)
    for step in (2, 3, 4):
        assert next(it)[0].tolist() == s.batch(step)
    with pytest.raises(DataError):
        StepBatchSampler(0, 4, seed=0)
