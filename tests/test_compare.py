"""benchmarks/compare.py end to end at toy scale: solve (RED-Diff cached in chunks), resume, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--tasks", "sr4", "--images", "4", "--tune-images", "4", "--grid-steps", "1", "--steps", "2",
       "--seeds", "0", "--chunk", "2"]


def _compare(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "benchmarks/compare.py", *TOY, *args], cwd=cwd, capture_output=True,
                          text=True, env={"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PATH": ""}, timeout=300)


@pytest.mark.slow
def test_solve_resumes_from_its_cache_and_report_scores_what_is_cached(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    first = _compare("--solve", "--runs", str(runs))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "red_diff_2 seed 0: images 2-4 done" in first.stdout
    again = _compare("--solve", "--runs", str(runs))  # everything cached: nothing recomputed
    assert "images 2-4 cached" in again.stdout and "grid sr4 lr=" not in again.stdout
    out.mkdir()
    rep = _compare("--runs", str(runs), "--out", str(out), "--resamples", "20", "--repeats", "1", "--warmup", "0",
                   "--time-batch", "2", "--time-steps", "1")
    assert rep.returncode == 0, rep.stderr[-2000:]
    data = json.loads((out / "compare.json").read_text())
    rows = data["sr4"]
    assert {"lift", "davi", "red_diff_2", "prior_ddim50"} <= set(rows)
    for key in ("psnr", "ssim", "classifier_fd", "kid", "kid_std", "s_per_image"):
        assert isinstance(rows["davi"][key], float) and isinstance(rows["red_diff_2"][key], float)
    assert rows["red_diff_2"]["seeds"] == 1
    # RED-Diff-N's time is N x its measured seconds per step
    assert data["timing"]["sr4"]["red_diff_2"] == pytest.approx(2 * data["timing"]["sr4"]["red_diff_per_step"])
    ci = data["bootstrap"]["sr4"]["red_diff_2"]["psnr"]
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    assert ci["estimate"] == pytest.approx(rows["davi"]["psnr"] - rows["red_diff_2"]["psnr"], abs=1e-4)
    # realism alone: the intervals against the independent digits, of DAVI minus RED-Diff and minus the floor
    for key, other in (("red_diff_2", "red_diff_2"), ("real_digits", "real_digits")):
        ci = data["bootstrap"]["sr4"][key]["fd_independent"]
        assert ci["low"] <= ci["high"]
        assert ci["estimate"] == pytest.approx(rows["davi"]["fd_independent"] - rows[other]["fd_independent"], abs=1e-4)
    assert "psnr" not in data["bootstrap"]["sr4"]["real_digits"]  # the floor restores nothing
    grid = json.loads((out / "compare_grid.json").read_text())["sr4"]
    assert grid["interior"] or grid["widenings"] == 4
    assert len(grid["grid"]) == len(grid["lrs"]) * len(grid["lams"])
    _check_report_without_the_cache(data, out, tmp_path / "empty")


def _check_report_without_the_cache(data: dict, out: Path, empty: Path):
    """A checkout without runs/compare: the RED-Diff and prior rows come from the compare.json being replaced
    (marked carried, RED-Diff timed again), their intervals against DAVI only while DAVI is the same mapper."""
    quick = ["--runs", str(empty), "--out", str(out), "--resamples", "20", "--repeats", "1", "--warmup", "0",
             "--time-batch", "2", "--time-steps", "1"]
    rep = _compare(*quick)
    assert rep.returncode == 0, rep.stderr[-2000:]
    again = json.loads((out / "compare.json").read_text())
    for key in ("red_diff_2", "prior_ddim50"):
        assert "carried" in again["sr4"][key]
        assert again["sr4"][key]["psnr" if key == "red_diff_2" else "fd_independent"] == data["sr4"][key][
            "psnr" if key == "red_diff_2" else "fd_independent"]
    assert again["bootstrap"]["sr4"]["red_diff_2"]["psnr"] == data["bootstrap"]["sr4"]["red_diff_2"]["psnr"]
    assert again["tuning"]["sr4"] == data["tuning"]["sr4"] and "red_diff_per_step" in again["timing"]["sr4"]
    assert "Rows marked carried" in again["head"]
    other = _compare(*quick, "--mapper", "sr4=davi/assets/mappers/sr4_sampler")  # another mapper: no intervals
    assert other.returncode == 0, other.stderr[-2000:]
    swapped = json.loads((out / "compare.json").read_text())
    assert "carried" in swapped["sr4"]["red_diff_2"] and "red_diff_2" not in swapped["bootstrap"]["sr4"]
    assert "real_digits" in swapped["bootstrap"]["sr4"]


def test_bootstrap_realism_intervals_are_against_the_independent_digits():
    """compare.bootstrap in-process on toy restorations: every ``*_independent`` interval is of DAVI minus
    the method against the independent digits (FD and KID alike), the plain ones against the measured
    digits, and each estimate is the full-set difference."""
    import argparse
    from types import SimpleNamespace

    import torch

    import compare
    from davi.config import DataConfig
    from davi.data.datasets import load_split
    from davi.eval.paired_bootstrap import frechet, kid, restoration_features
    from davi.models.classifier import classifier_features, load_classifier

    digits = load_split(DataConfig(source="mnist32", resolution=32, channels=1), "test").tensor()
    g = torch.Generator().manual_seed(0)
    # measured digits of one class mix, the independent ones of another: the two references differ
    task = SimpleNamespace(x0=digits[:12], independent=digits[500:512], real=digits[900:912])
    outs = {"davi": (task.x0 + 0.3 * torch.randn(task.x0.shape, generator=g)).clamp(-1, 1),
            "red_diff_100": (task.x0 + 0.8 * torch.randn(task.x0.shape, generator=g)).clamp(-1, 1)}
    items = {k: {"psnr": torch.rand(12, generator=g).numpy(), "feats": restoration_features([o])} for k, o in outs.items()}
    rows = {"davi": {"seeds": 1}, "red_diff_100": {"seeds": 1}}
    boot = compare.bootstrap(task, rows, items, argparse.Namespace(resamples=20))

    clf = load_classifier()
    ref = {name: classifier_features(clf, x).numpy() for name, x in (("measured", task.x0), ("independent", task.independent),
                                                                     ("floor", task.real))}
    f = {k: v["feats"][:, 0] for k, v in items.items()}
    for metric, key, against in ((frechet, "fd_independent", "independent"), (kid, "kid_independent", "independent"),
                                 (frechet, "classifier_fd", "measured"), (kid, "kid", "measured")):
        want = metric(f["davi"], ref[against]) - metric(f["red_diff_100"], ref[against])
        other = "measured" if against == "independent" else "independent"
        wrong = metric(f["davi"], ref[other]) - metric(f["red_diff_100"], ref[other])
        assert abs(want - wrong) > 1e-3 * max(1.0, abs(want))  # the fixture tells the references apart
        iv = boot["red_diff_100"][key]
        assert iv["estimate"] == pytest.approx(want, rel=1e-4, abs=1e-6), key
        assert iv["low"] <= iv["high"]
    for metric, key in ((frechet, "fd_independent"), (kid, "kid_independent")):
        floor = metric(f["davi"], ref["independent"]) - metric(ref["floor"], ref["independent"])
        assert boot["real_digits"][key]["estimate"] == pytest.approx(floor, rel=1e-4, abs=1e-6), key
    assert "psnr" not in boot["real_digits"]


@pytest.mark.parametrize("mapper, message", [
    ("sr5=/tmp", "--mapper 'sr5=/tmp': expected TASK=PATH with TASK one of sr4, deblur, box"),
    ("sr4", "--mapper 'sr4': expected TASK=PATH"),
    ("sr4=", "--mapper 'sr4=': expected TASK=PATH"),
    ("sr4=/nonexistent/export", "--mapper 'sr4=/nonexistent/export': no export folder"),
])
def test_mapper_option_is_checked_before_any_work(monkeypatch, mapper, message):
    import compare

    monkeypatch.setattr(sys, "argv", ["compare.py", "--mapper", mapper])
    monkeypatch.setattr(compare, "report", lambda args: pytest.fail("the report ran"))
    monkeypatch.setattr(compare, "solve", lambda args: pytest.fail("the solve ran"))
    with pytest.raises(SystemExit) as e:
        compare.main()
    assert str(e.value).startswith(f"error: {message}") and "\n" not in str(e.value)


def test_mapper_option_replaces_only_its_task(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import compare
    from davi.eval.tasks import DigitTask

    chosen = []
    (tmp_path / "card.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", ["compare.py", "--mapper", f"deblur={tmp_path}"])
    monkeypatch.setattr(compare, "report", chosen.append)
    compare.main()
    (args,) = chosen
    task = lambda name: SimpleNamespace(digits=SimpleNamespace(  # noqa: E731
        mapper_folder=lambda overrides: DigitTask.mapper_folder(SimpleNamespace(name=name), overrides)))
    assert compare.mapper_folder(task("deblur"), args) == tmp_path
    assert compare.mapper_folder(task("sr4"), args).parts[-4:] == ("davi", "assets", "mappers", "sr4")
