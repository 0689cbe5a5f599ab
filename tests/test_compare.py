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
