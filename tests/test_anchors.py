"""RED-Diff anchors (davi/data/anchors.py): each anchor is RED-Diff's answer for its own measurement and
seed, whatever the batch; a folder that is not an anchor folder is never written to; a damaged folder
(manifest missing or invalid, a shard of another place, an unreadable shard) is a one-line error
naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from davi.config import load_config
from davi.data.anchors import AnchorError, compute_anchors, load_anchors
from davi.data.measurements import load_measurements
from davi.operators import build_operator

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sr4_mnist_unpaired.yaml"


def config(folder, batch: int = 2, *extra):
    return load_config(CONFIG, ["unpaired.limit=4", f"unpaired.anchor_batch_size={batch}", "red_diff.num_steps=2",
                                f"unpaired.anchors={folder}", *extra])


def measurements(cfg):
    return load_measurements(cfg, build_operator(cfg.operator, cfg.data.resolution, cfg.data.channels))


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """(config, anchor folder) of 4 measurements in 2 shards of 2, computed once for the module."""
    folder = tmp_path_factory.mktemp("anchors") / "a"
    cfg = config(folder)
    compute_anchors(cfg, progress=False)
    return cfg, folder


@pytest.fixture
def damaged(computed, tmp_path):
    """A copy of the computed folder to damage, and the measurement set it belongs to."""
    cfg, folder = computed
    copy = tmp_path / "a"
    shutil.copytree(folder, copy)
    return copy, measurements(cfg)


def test_each_anchor_is_red_diff_of_its_measurement_with_its_index_as_seed(computed):
    """Anchor i = RED-Diff(y_i, seed i) run alone: not zeros, not the seed of its place in a batch."""
    from davi.builders import prior_from_config, red_diff_from_config

    cfg, folder = computed
    data = measurements(cfg)
    anchors = load_anchors(folder, data)
    operator = build_operator(cfg.operator, cfg.data.resolution, cfg.data.channels)
    solver = red_diff_from_config(prior_from_config(cfg), operator, cfg.red_diff)
    alone = solver(data.y[[3]], seeds=[3]).float()  # second in its shard: batch position 1, index 3
    assert torch.allclose(anchors[3:4], alone, atol=1e-4)
    assert float(anchors.abs().mean()) > 0.1
    assert not torch.allclose(anchors[3:4], solver(data.y[[3]], seeds=[1]).float(), atol=1e-3)


def test_anchors_do_not_depend_on_the_batch_size(computed, tmp_path):
    cfg, folder = computed
    data = measurements(cfg)
    other = compute_anchors(config(tmp_path / "b", 3), progress=False)  # shards of 3 and 1
    assert sorted(p.name for p in other.glob("shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert torch.allclose(load_anchors(other, data), load_anchors(folder, data), atol=1e-4)


@pytest.mark.parametrize("content", ["file", "manifest"])
def test_a_folder_that_is_not_an_anchor_folder_is_never_written(tmp_path, content):
    folder = tmp_path / "not-anchors"
    folder.mkdir()
    if content == "file":
        (folder / "notes.txt").write_text("mine")
    else:  # another tool's manifest.json, no shards
        (folder / "manifest.json").write_text(json.dumps({"format": "something-else", "files": []}))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(AnchorError) as e:
        compute_anchors(config(folder), progress=False)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("damage, message", [
    ("no manifest", r"a: no manifest.json"),
    ("invalid manifest", r"manifest.json: not valid JSON"),
    ("foreign manifest", r"manifest.json: not a davi-anchors manifest"),
    ("swapped shards", r"shard-00000.safetensors: not shard 0 of this folder"),
    ("truncated shard", r"shard-00001.safetensors: unreadable"),
])
def test_a_damaged_folder_is_a_one_line_error_naming_the_file(damaged, damage, message):
    folder, data = damaged
    manifest, s0, s1 = folder / "manifest.json", folder / "shard-00000.safetensors", folder / "shard-00001.safetensors"
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "invalid manifest":
        manifest.write_text(manifest.read_text()[:-5])
    elif damage == "foreign manifest":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": "other"}))
    elif damage == "swapped shards":
        a, b = s0.read_bytes(), s1.read_bytes()
        s0.write_bytes(b)
        s1.write_bytes(a)
    else:
        s1.write_bytes(s1.read_bytes()[:40])
    with pytest.raises(AnchorError, match=message) as e:
        load_anchors(folder, data)
    assert "\n" not in str(e.value)
