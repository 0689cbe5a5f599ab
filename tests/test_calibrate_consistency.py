"""scripts/calibrate_consistency.py: it rewrites an export's card.json (and its model card) with the calibrated
consistency entry, keeps every other key and the weights as they were, and reports a bad export in one line."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from davi.config import DataConfig
from davi.data.datasets import load_split
from davi.io.export import load_export
from davi.io.model_card import read_front_matter
from davi.solvers.consistency import STATISTIC, calibrate_consistency
from davi.solvers.methods import DaviMethod

ROOT = Path(__file__).resolve().parents[1]
SR4 = ROOT / "davi" / "assets" / "mappers" / "sr4"
N = 24


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("calibrate_consistency_script",
                                                  ROOT / "scripts" / "calibrate_consistency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def held_out(monkeypatch):
    """The held-out images the script asks for, cut to N (the script asks davi.solvers.consistency for them;
    the card it asks about is recorded)."""
    from davi.solvers import consistency

    images = load_split(DataConfig(source="mnist32", resolution=32, channels=1), "test").tensor(limit=N, start=500)
    asked = []

    def calibration_images(card, start=500, stop=1000):
        asked.append(card)
        return images, f"mnist32:test[500:{500 + N}]"

    monkeypatch.setattr(consistency, "calibration_images", calibration_images)
    return images, asked


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_calibration_rewrites_the_card_and_leaves_the_weights(script, held_out, tmp_path, capsys):
    export = tmp_path / "sr4"
    shutil.copytree(SR4, export)
    card = json.loads((export / "card.json").read_text())
    card.pop("consistency")
    (export / "card.json").write_text(json.dumps(card, indent=2))
    weights = {p.name: _digest(p) for p in (export / "diffusion_pytorch_model.safetensors", export / "config.json")}
    images, asked = held_out

    assert script.main([str(export), "--seed", "3", "--quantile", "0.9"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{export}: threshold ") and f"of {N} images" in out[0], out
    assert [c.task for c in asked] == ["sr"]  # the export's own card says where its held-out images are

    after = json.loads((export / "card.json").read_text())
    assert list(after) == [*card, "consistency"]  # every other key kept, in its order ...
    assert {k: v for k, v in after.items() if k != "consistency"} == card  # ... with its value
    entry = after["consistency"]
    assert entry["statistic"] == STATISTIC and entry["n"] == N and entry["seed"] == 3
    assert entry["source"] == f"mnist32:test[500:{500 + N}]" and entry["threshold_quantile"] == 0.9
    mapper, _, op = load_export(export)
    expected = calibrate_consistency(DaviMethod(mapper, op), op, images, seed=3, quantile=0.9)
    assert entry["threshold"] == pytest.approx(expected["threshold"], rel=1e-6)
    assert entry["threshold"] == pytest.approx(entry["quantiles"]["0.9"], rel=1e-9)
    assert read_front_matter(export / "README.md")["davi"]["consistency"]["threshold"] == entry["threshold"]
    assert f"{entry['threshold']:.3f}" in (export / "README.md").read_text()
    assert {name: _digest(export / name) for name in weights} == weights


def test_a_bad_export_is_one_line(script, held_out, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(SR4, broken)
    (broken / "card.json").write_text("{not json")
    for folder in (tmp_path / "no_such_export", broken):
        capsys.readouterr()
        assert script.main([str(folder)]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and str(folder) in err[0], err
    assert (broken / "card.json").read_text() == "{not json"
    # weights that change under the script are named
    good = tmp_path / "good"
    shutil.copytree(SR4, good)
    from davi.models import prior as prior_module

    digests = iter(["before", "after"])
    monkeypatch.setattr(prior_module, "safetensors_digest", lambda folder: next(digests))
    assert script.main([str(good)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights changed while calibrating" in err[0], err
