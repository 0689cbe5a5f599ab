"""Measurement folders (davi/data/measurements.py): what a folder of measurements may hold, and the
one-line DataError naming the file (or the folder) when it cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from davi.config import load_config
from davi.data.datasets import DataError
from davi.data.measurements import MeasurementDataset, load_measurements, read_folder
from davi.operators import build_operator

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sr4_mnist_unpaired.yaml"


@pytest.fixture(scope="module")
def operator():
    cfg = load_config(CONFIG)
    return build_operator(cfg.operator, cfg.data.resolution, cfg.data.channels)  # SR x4 of 32x32: (1, 8, 8)


def folder_with(tmp_path, **arrays) -> Path:
    folder = tmp_path / "meas"
    folder.mkdir()
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    return folder


def one_line_error(fn, *args, match: str) -> str:
    with pytest.raises(DataError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_is_refused_naming_the_file(tmp_path, operator, bad):
    arr = np.zeros((1, 8, 8), np.float32)
    arr[0, 3, 4] = bad
    folder = folder_with(tmp_path, a=np.zeros((1, 8, 8), np.float32), b=arr)
    one_line_error(read_folder, folder, operator, match=r"b\.npy: measurement contains NaN or infinite values")


@pytest.mark.parametrize("content, message", [
    (b"garbage, not an array", "not a readable .npy array"),
    ("truncated", "not a readable .npy array"),
    ("objects", "not a readable .npy array"),
    ("strings", "array of <U"),
])
def test_unreadable_npy_is_named(tmp_path, operator, content, message):
    folder = folder_with(tmp_path, a=np.zeros((1, 8, 8), np.float32))
    bad = folder / "z.npy"
    if content == "truncated":
        np.save(bad, np.zeros((1, 8, 8), np.float32))
        bad.write_bytes(bad.read_bytes()[:60])
    elif content == "objects":
        np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "strings":
        np.save(bad, np.array(["abc"]))
    else:
        bad.write_bytes(content)
    one_line_error(read_folder, folder, operator, match=rf"z\.npy: {message}")


def test_an_unreadable_image_is_named(tmp_path, operator):
    folder = folder_with(tmp_path, a=np.zeros((1, 8, 8), np.float32))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    one_line_error(read_folder, folder, operator, match=r"b\.png: not a readable image")


def test_empty_or_missing_folder(tmp_path, operator):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no measurements here")
    one_line_error(read_folder, tmp_path / "empty", operator, match=r"empty: no measurements found \(\.npy or ")
    one_line_error(read_folder, tmp_path / "missing", operator, match=r"missing: not a folder \(or 'simulate'\)")
    (tmp_path / "file.npy").write_bytes(b"")
    one_line_error(read_folder, tmp_path / "file.npy", operator, match=r"file\.npy: not a folder")


def test_stacks_subfolders_sorted_order_and_limit(tmp_path, operator):
    """A (N, C, h, w) stack is N measurements, (h, w) one; files in sorted order (subfolders too);
    unpaired.limit keeps the first."""
    y = torch.arange(5 * 64, dtype=torch.float32).reshape(5, 1, 8, 8) / 320
    folder = folder_with(tmp_path, b_stack=y[1:4].numpy(), a=y[0].numpy())
    (folder / "sub").mkdir()
    np.save(folder / "sub" / "c.npy", y[4, 0].numpy())
    got = read_folder(folder, operator)
    assert torch.equal(got, y)
    cfg = load_config(CONFIG, [f"unpaired.measurements={folder}", "unpaired.limit=2"])
    data = load_measurements(cfg, operator)
    assert torch.equal(data.y, y[:2]) and data.source == str(folder)


def test_digest_follows_the_measurements_and_the_operator(operator):
    y = torch.zeros(2, 1, 8, 8)
    base = MeasurementDataset(y, operator.params(), "a")
    assert MeasurementDataset(y.clone(), operator.params(), "b").digest == base.digest  # the source is a label
    changed = y.clone()
    changed[1, 0, 7, 7] = 1e-3
    assert MeasurementDataset(changed, operator.params(), "a").digest != base.digest
    assert MeasurementDataset(y, {**operator.params(), "sigma_y": 0.5}, "a").digest != base.digest


def test_files_are_read_in_sorted_order_whatever_the_directory_order(tmp_path, operator):
    """Measurement i (its anchor, its seed) is the i-th file by name, not the file system's listing order."""
    folder = tmp_path / "meas"
    folder.mkdir()
    for i in (7, 2, 11, 0, 5, 9, 1, 3, 10, 4, 8, 6):  # created out of order
        np.save(folder / f"m{i:02d}.npy", np.full((1, 8, 8), i, np.float32))
    assert read_folder(folder, operator)[:, 0, 0, 0].tolist() == list(range(12))
