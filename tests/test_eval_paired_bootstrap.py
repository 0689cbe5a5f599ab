"""davi.eval.paired_bootstrap: intervals of PSNR, FD and KID differences between restorations of the same images."""

from __future__ import annotations

import numpy as np
import pytest

from davi.eval.paired_bootstrap import kid, psnr_differences, realism_differences, seed_mean


def test_psnr_difference_interval_contains_its_estimate_and_pairing_removes_image_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(20, 5, 100)  # large per-image spread, shared by both methods
    base, other = difficulty + 1 + rng.normal(0, 0.1, 100), difficulty
    iv = psnr_differences(base, {"other": other}, resamples=200)["other"]
    assert iv.low <= iv.estimate <= iv.high
    assert iv.estimate == pytest.approx(1.0, abs=0.05) and 0.9 < iv.low and iv.high < 1.1  # paired: narrow
    same = psnr_differences(other, {"same": other}, resamples=50)["same"]
    assert same.estimate == same.low == same.high == 0.0


def test_realism_differences_see_a_shifted_method_and_not_an_identical_one():
    rng = np.random.default_rng(1)
    n, d = 80, 4
    reference = rng.normal(size=(n, d))
    close = rng.normal(size=(n, 2, d))  # two seeds, the reference's distribution
    far = rng.normal(size=(n, 1, d)) + 1.5
    fd, kd = realism_differences(close, {"far": far, "same": close}, reference, resamples=60)
    for iv in (fd["far"], kd["far"]):
        assert iv.low <= iv.estimate <= iv.high < 0  # the base is closer to the reference: excludes 0
    assert fd["same"].estimate == 0 and kd["same"].estimate == 0
    assert fd["same"].low == fd["same"].high == 0  # the same resamples for both methods


def test_seed_mean_averages_a_set_statistic_over_seeds():
    rng = np.random.default_rng(2)
    feats, ref = rng.normal(size=(30, 3, 5)), rng.normal(size=(30, 5))
    assert seed_mean(kid)(feats, ref) == pytest.approx(np.mean([kid(feats[:, s], ref) for s in range(3)]))
