"""Refinement (K warm-started RED-Diff steps after DAVI) and what infer.py restore reports about
consistency: statistic per image, warning line, --refine K|auto, RGB-to-gray inputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from davi.config import DataConfig
from davi.solvers.consistency import residual_statistic
from davi.data.datasets import load_split
from davi.io.export import load_export
from davi.solvers.methods import DaviMethod, RefinedDaviMethod, Refiner
from davi.models.prior import DiffusionPrior
from davi.solvers.red_diff import RedDiff
from davi.eval.shifts import apply_shift

ROOT = Path(__file__).resolve().parents[1]
SR4 = ROOT / "davi" / "assets" / "mappers" / "sr4"


@pytest.fixture(scope="module")
def shipped():
    mapper, card, op = load_export(SR4)
    return mapper, card, op, DiffusionPrior.from_pretrained(card["prior"]["identity"])


@pytest.fixture(scope="module")
def measurements(shipped):
    """Four held-out digits as they are, then the same four with inverted contrast (far out of distribution)."""
    op = shipped[2]
    x = load_split(DataConfig(source="mnist32", resolution=32, channels=1), "test").tensor(limit=4)
    x = torch.cat([x, apply_shift(x, "invert-2")])
    return x, op.measure(x, generator=torch.Generator().manual_seed(0))


class CountingPrior(torch.nn.Module):
    def __init__(self, prior):
        super().__init__()
        self.prior, self.calls = prior, []

    def __getattr__(self, name):
        if name in ("prior", "calls") or name.startswith("_"):
            return super().__getattr__(name)
        return getattr(self.prior, name)

    def eps(self, x_t, t):
        self.calls.append((x_t.shape[0], t.tolist()))
        return self.prior.eps(x_t, t)


def test_warm_start_begins_at_the_given_image_and_rejects_a_wrong_shape(shipped, measurements):
    _, _, op, prior = shipped
    x, y = measurements
    seen = []
    solver = RedDiff(prior, op, steps=3, lr=1e-9, lam=0.0, t_max=50)
    out = solver(y, init=x, callback=lambda k, t, mu: seen.append(t))
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)  # a vanishing step leaves the warm start
    assert seen == [50, 25, 0]
    with pytest.raises(ValueError, match=r"warm-start image must have shape \(8, 1, 32, 32\)"):
        solver(y, init=x[:, :, :16])
    with pytest.raises(ValueError, match="t_max"):
        RedDiff(prior, op, steps=3, t_max=1000)


def test_refining_improves_consistency_within_the_network_budget(shipped, measurements):
    mapper, _, op, prior = shipped
    x, y = measurements
    counting = CountingPrior(prior)
    method = RefinedDaviMethod(DaviMethod(mapper, op), Refiner(counting, op, steps=5))
    seeds = list(range(8))
    davi = DaviMethod(mapper, op)(y, seeds, 1)[0]
    refined = method(y, seeds, 1)[0]
    assert method.nfe_per_sample == 6 and method.last_refined.all()
    assert len(counting.calls) == 5 and all(b == 8 for b, _ in counting.calls)  # 5 steps for the whole batch
    before, after = residual_statistic(op, davi, y), residual_statistic(op, refined, y)
    torch.testing.assert_close(method.last_statistic, before)
    shifted = slice(4, 8)
    assert (before[shifted] > 10).all(), before  # the inverted digits are far from consistent ...
    assert (after[shifted] < 0.5 * before[shifted]).all(), (before, after)  # ... and refinement closes the gap


def test_auto_refines_only_the_flagged_images(shipped, measurements):
    mapper, _, op, prior = shipped
    _, y = measurements
    seeds = list(range(8))
    davi = DaviMethod(mapper, op)(y, seeds, 2)
    stat = residual_statistic(op, davi[0], y)
    threshold = float(stat[:4].max() + stat[4:].min()) / 2  # between the clean and the inverted digits
    counting = CountingPrior(prior)
    method = RefinedDaviMethod(DaviMethod(mapper, op), Refiner(counting, op, steps=3), threshold)
    out = method(y, seeds, 2)
    assert method.last_refined.tolist() == [False] * 4 + [True] * 4
    assert torch.equal(out[:, :4], davi[:, :4])  # unflagged: the DAVI samples, untouched
    assert ((out[:, 4:] - davi[:, 4:]).abs().amax(dim=(2, 3, 4)) > 0.05).all()  # every sample refined
    assert len(counting.calls) == 2 * 3 and all(b == 4 for b, _ in counting.calls)  # flagged images only


def test_refinement_starts_from_the_projection_onto_the_measurement(shipped, measurements):
    """The warm start is x + A^+(y - A x): it fits y exactly (A A^+ = I for SR), it moved where x missed y, and the
    RED-Diff steps begin there (with a vanishing step the refined sample IS the start, clamped). ``project=False``
    starts at the sample itself. (RED-Diff steps alone also lower r, so only the start point shows the projection.)"""
    mapper, _, op, prior = shipped
    _, y = measurements
    seeds = list(range(8))
    samples = DaviMethod(mapper, op)(y, seeds, 1)
    refiner = Refiner(prior, op, steps=1, lr=1e-9, lam=0.0)
    start = refiner.start(samples[0], y)
    torch.testing.assert_close(op(start), y, atol=1e-5, rtol=0)
    assert (float((start - samples[0]).abs().amax(dim=(1, 2, 3)).min()) > 0.01)  # every image was moved
    out = refiner(samples, y, seeds)
    torch.testing.assert_close(out[0], start.clamp(-1, 1), atol=1e-5, rtol=0)
    before, after = residual_statistic(op, samples[0], y), residual_statistic(op, out[0], y)
    assert (after[4:] < 0.1 * before[4:]).all(), (before, after)  # the inverted digits: on the measurement at once
    plain = Refiner(prior, op, steps=1, lr=1e-9, lam=0.0, project=False)
    torch.testing.assert_close(plain.start(samples[0], y), samples[0])
    torch.testing.assert_close(plain(samples, y, seeds)[0], samples[0].clamp(-1, 1), atol=1e-5, rtol=0)


# ---- infer.py restore ---------------------------------------------------------------------------


@pytest.fixture
def infer(capsys):
    import infer as cli  # the repository root is on pytest's pythonpath (pyproject.toml)

    def run(*args):
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.err

    return run


@pytest.fixture(scope="module")
def npy_inputs(measurements, tmp_path_factory):
    folder = tmp_path_factory.mktemp("y")
    for i, yi in enumerate(measurements[1]):
        np.save(folder / f"m{i}.npy", yi.numpy())
    return folder


@pytest.fixture(scope="module")
def export_with_threshold(shipped, measurements, tmp_path_factory):
    """The shipped SR x4 mapper with a threshold between the clean and the inverted digits."""
    mapper, card, op, _ = shipped
    _, y = measurements
    stat = residual_statistic(op, DaviMethod(mapper, op)(y, list(range(8)), 1)[0], y)
    folder = tmp_path_factory.mktemp("exp") / "sr4"
    shutil.copytree(SR4, folder)
    card = json.loads((folder / "card.json").read_text())
    card["consistency"] = {"statistic": "measurement_residual", "threshold": float(stat[:4].max() + stat[4:].min()) / 2}
    (folder / "card.json").write_text(json.dumps(card))
    no_threshold = folder.parent / "plain"
    shutil.copytree(SR4, no_threshold)
    card.pop("consistency")
    (no_threshold / "card.json").write_text(json.dumps(card))
    return folder, no_threshold


def read_rows(out: Path) -> list[dict]:
    with open(out / "consistency.csv") as f:
        return list(csv.DictReader(f))


def test_restore_writes_the_statistic_warns_and_refines_auto(export_with_threshold, npy_inputs, tmp_path, infer):
    export, _ = export_with_threshold
    code, err = infer("restore", "--export", export, "--input", npy_inputs, "--samples", 2, "--out", tmp_path / "a")
    assert code == 0, err
    rows = read_rows(tmp_path / "a")
    assert [r["flagged"] for r in rows] == ["0"] * 4 + ["1"] * 4
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "4 of 8 image(s) exceed" in warnings[0], err
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert settings["consistency"]["flagged"] == 4 and settings["network_evaluations_per_image"] == 2

    code, err = infer("restore", "--export", export, "--input", npy_inputs, "--samples", 2, "--refine", "auto",
                      "--out", tmp_path / "b")
    assert code == 0, err
    rows = read_rows(tmp_path / "b")
    assert [r["refined"] for r in rows] == [r["flagged"] for r in rows] == ["0"] * 4 + ["1"] * 4
    for r in rows[4:]:
        assert float(r["measurement_residual_after_refinement"]) < float(r["measurement_residual"])
    s = json.loads((tmp_path / "b" / "settings.json").read_text())
    steps = s["consistency"]["refine"]["steps"]
    assert steps <= 19 and s["network_evaluations_per_image"] == pytest.approx(2 * (1 + steps * 4 / 8))
    # unflagged images are the DAVI samples of the first run
    for name in ("m0", "m3"):
        a = np.array(Image.open(tmp_path / "a" / "mean" / f"{name}.png"))
        b = np.array(Image.open(tmp_path / "b" / "mean" / f"{name}.png"))
        assert (a == b).all()


def test_forced_refine_budget_and_no_threshold_note(export_with_threshold, npy_inputs, tmp_path, infer):
    _, plain = export_with_threshold
    code, err = infer("restore", "--export", plain, "--input", npy_inputs, "--limit", 8, "--samples", 1,
                      "--refine", 5, "--out", tmp_path / "f")
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if "no consistency threshold in the card" in ln]
    assert len(notes) == 1 and not any(ln.startswith("warning:") for ln in err.splitlines()), err
    s = json.loads((tmp_path / "f" / "settings.json").read_text())
    assert s["network_evaluations_per_image"] == 6 and s["consistency"]["flagged"] is None
    rows = read_rows(tmp_path / "f")
    assert all(r["refined"] == "1" for r in rows)
    for r in rows[4:]:  # the inverted digits: refinement brings the answer closer to the measurement
        assert float(r["measurement_residual_after_refinement"]) < 0.5 * float(r["measurement_residual"])
    # --refine auto needs the card's threshold
    code, err = infer("restore", "--export", plain, "--input", npy_inputs, "--refine", "auto", "--out", tmp_path / "n")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "no consistency threshold" in err
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("value", ["0", "-2", "x", "auto5", "2.5"])
def test_bad_refine_values_are_one_line_errors(value, tmp_path, infer):
    code, err = infer("restore", "--export", SR4, "--input", "mnist32:test", "--limit", 1, "--simulate", "sr",
                      "--refine", value, "--out", tmp_path / "o")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --refine") and repr(value) in lines[0], err
    assert not (tmp_path / "o").exists()


def test_refine_is_for_davi_only(tmp_path, infer):
    code, err = infer("restore", "--export", SR4, "--input", "mnist32:test", "--limit", 1, "--simulate", "sr",
                      "--method", "lift", "--refine", "3", "--out", tmp_path / "o")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "--method lift" in err


def test_rgb_image_to_a_gray_mapper_is_converted_with_a_note(tmp_path, infer):
    folder = tmp_path / "rgb"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(folder / "c.png")
    Image.fromarray(rgb[:, :, 0], "L").save(folder / "g.png")
    code, err = infer("restore", "--export", SR4, "--input", folder, "--samples", 1, "--out", tmp_path / "o")
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("note:") and "grayscale" in ln]
    assert len(notes) == 1 and "1 RGB image(s)" in notes[0] and "c.png" in notes[0], err
    # the same luma PIL's convert("L") gives, to within rounding
    lift = np.array(Image.open(tmp_path / "o" / "lift" / "c.png")).astype(float)
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    Image.fromarray(rgb).convert("L").save(ref_dir / "c.png")
    code, err = infer("restore", "--export", SR4, "--input", ref_dir, "--samples", 1, "--out", tmp_path / "r")
    assert code == 0 and "grayscale" not in err
    assert np.abs(lift - np.array(Image.open(tmp_path / "r" / "lift" / "c.png")).astype(float)).max() <= 2


# ---- refinement through the Restorer: K refines every image; an export with sigma_y = 0 ----------------------


def test_restorer_refine_k_refines_every_image_even_with_a_threshold(export_with_threshold, measurements):
    from davi.restorer import Restorer

    export, _ = export_with_threshold
    restorer = Restorer.from_pretrained(export)
    _, y = measurements
    out = restorer(y, 1, refine=2, progress=False)
    assert out.flagged.tolist() == [False] * 4 + [True] * 4  # the threshold still flags ...
    assert out.refined.all() and out.network_evaluations == pytest.approx(3)  # ... but K refines them all
    auto = restorer(y, 1, refine="auto", progress=False)
    assert auto.refined.tolist() == [False] * 4 + [True] * 4


@pytest.fixture(scope="module")
def noiseless_export(tmp_path_factory):
    """The shipped SR x4 mapper with its card saying sigma_y = 0 (and so no consistency threshold)."""
    folder = tmp_path_factory.mktemp("noiseless") / "sr4"
    shutil.copytree(SR4, folder)
    card = json.loads((folder / "card.json").read_text())
    card["sigma_y"] = card["operator"]["sigma_y"] = card["config"]["operator"]["sigma_y"] = 0.0
    card.pop("consistency", None)
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_refine_on_an_export_with_sigma_y_zero(noiseless_export, measurements, tmp_path, infer):
    """No statistic (no noise scale) and no flags, but --refine K refines every image (towards its measurement,
    finite, at 1 + K evaluations per sample); --refine auto is a one-line error (no threshold)."""
    from davi.io.card import ExportError
    from davi.restorer import Restorer

    restorer = Restorer.from_pretrained(noiseless_export)
    assert restorer.operator.sigma_y == 0
    x, _ = measurements
    y = restorer.operator.measure(x)  # y = A x exactly
    plain = restorer(y, 2, refine=None, progress=False)
    out = restorer(y, 2, refine=3, progress=False)
    assert out.consistency is None and out.flagged is None and out.one_step_consistency is None
    assert out.refined.tolist() == [True] * 8 and out.network_evaluations == pytest.approx(2 * (1 + 3))
    assert torch.isfinite(out.samples).all() and out.samples.abs().max() <= 1
    def miss(samples):
        return (restorer.operator(samples[0]) - y).pow(2).flatten(1).sum(1)

    assert (miss(out.samples)[4:] < 0.5 * miss(plain.samples)[4:]).all()
    with pytest.raises(ExportError, match="no consistency threshold"):
        restorer(y, 1, refine="auto", progress=False)

    code, err = infer("restore", "--export", noiseless_export, "--input", "mnist32:test", "--limit", 2, "--simulate",
                      "sr", "--samples", 2, "--refine", 3, "--out", tmp_path / "k")
    assert code == 0, err
    settings = json.loads((tmp_path / "k" / "settings.json").read_text())
    assert settings["method"] == "davi+refine-3" and settings["network_evaluations_per_image"] == pytest.approx(8)
    assert settings["refine"]["steps"] == 3 and settings["refine"]["refined"] == settings["images"]
    assert not (tmp_path / "k" / "consistency.csv").exists() and "Traceback" not in err
    assert [ln for ln in err.splitlines() if "sigma_y = 0" in ln] == [
        "note: the export's operator has sigma_y = 0: no consistency statistic"]
    assert not any(ln.startswith("warning:") for ln in err.splitlines()), err
    code, err = infer("restore", "--export", noiseless_export, "--input", "mnist32:test", "--limit", 2, "--simulate",
                      "sr", "--refine", "auto", "--out", tmp_path / "a")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "no consistency threshold" in err, err
    assert not (tmp_path / "a").exists()
