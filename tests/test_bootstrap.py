"""davi.eval.bootstrap: paired percentile intervals of a difference of set statistics."""

from __future__ import annotations

import numpy as np
import pytest

from davi.eval.bootstrap import bootstrap_differences, paired_bootstrap


def _mean(x):
    return float(np.mean(x))


def _paired(n, shift, seed):
    """Per-image scores of two methods on the same n images: a shared difficulty + small method noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 3, n)
    return difficulty + shift + rng.normal(0, 0.3, n), difficulty + rng.normal(0, 0.3, n)


def test_interval_covers_the_true_difference_in_most_repetitions():
    covered = 0
    for rep in range(40):
        a, b = _paired(100, 0.5, rep)
        ci = paired_bootstrap(_mean, [a], [b], resamples=300, seed=rep)
        covered += ci.low <= 0.5 <= ci.high
        assert ci.low <= ci.estimate <= ci.high
    assert covered >= 34  # nominal 95%: 38 of 40 expected, allow Monte-Carlo slack


def test_pairing_removes_the_shared_difficulty():
    """An unpaired interval would be ~10x wider (the difficulty spread is 3, the method noise 0.3)."""
    a, b = _paired(200, 0.5, 1)
    ci = paired_bootstrap(_mean, [a], [b], resamples=500)
    assert ci.high - ci.low < 0.3
    assert ci.excludes_zero()


def test_interval_narrows_with_more_images():
    widths = []
    for n in (50, 800):
        a, b = _paired(n, 0.0, 2)
        ci = paired_bootstrap(_mean, [a], [b], resamples=500)
        widths.append(ci.high - ci.low)
    assert widths[1] < 0.5 * widths[0]  # about 1 / sqrt(16) = 0.25


def test_reproducible_and_seed_dependent():
    a, b = _paired(60, 0.2, 3)
    assert paired_bootstrap(_mean, [a], [b], resamples=200, seed=7) == paired_bootstrap(_mean, [a], [b], resamples=200, seed=7)
    assert paired_bootstrap(_mean, [a], [b], resamples=200, seed=7) != paired_bootstrap(_mean, [a], [b], resamples=200, seed=8)


def test_set_statistics_get_the_same_indices_for_every_argument_and_method():
    """A statistic of (items, reference) sees rows resampled together: a copy of the reference stays identical."""
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(50, 3))
    dist = lambda x, r: float(np.abs(x - r).sum())  # noqa: E731  zero iff rows stay aligned
    out = bootstrap_differences(dist, [ref.copy(), ref], {"same": [ref.copy(), ref], "off": [ref + 1, ref]},
                                resamples=50)
    assert out["same"].low == out["same"].high == 0.0
    assert out["off"].high < 0  # base is closer than the shifted copy on every resample


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="item 0 has 3 rows, expected 4"):
        paired_bootstrap(_mean, [np.zeros(4)], [np.zeros(3)])
