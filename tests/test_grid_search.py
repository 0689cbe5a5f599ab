"""davi.eval.grid_search: the grid widens until its best point is interior."""

from __future__ import annotations

import math

import pytest

from davi.eval.grid_search import widen_or_choose


def _scores(xs, ys, best):
    """A smooth bowl peaked at ``best`` (in log coordinates): higher is better."""
    bx, by = best
    return {(x, y): -(math.log(x / bx) ** 2 + math.log(y / by) ** 2) for x in xs for y in ys}


def _search(best, xs=(0.05, 0.1, 0.25), ys=(0.05, 0.25, 1.0), max_widenings=4):
    widenings = 0
    while True:
        step = widen_or_choose(xs, ys, _scores(xs, ys, best), widenings=widenings, max_widenings=max_widenings)
        if step.done:
            return step, widenings
        xs, ys, widenings = step.xs, step.ys, widenings + 1


def test_interior_best_is_chosen_without_widening():
    step, widenings = _search((0.1, 0.25))
    assert step.done and step.interior and step.choice == (0.1, 0.25) and widenings == 0


def test_edge_best_widens_only_the_offending_axis_beyond_that_edge():
    xs, ys = (0.05, 0.1, 0.25), (0.05, 0.25, 1.0)
    step = widen_or_choose(xs, ys, _scores(xs, ys, (0.1, 0.001)))
    assert not step.done
    assert step.xs == xs  # lr is interior: unchanged
    assert step.ys[1:] == ys and step.ys[0] == pytest.approx(0.05 / 3, rel=1e-4)


def test_widening_reaches_an_optimum_beyond_both_edges():
    step, widenings = _search((1.0, 0.01))
    assert step.interior and widenings >= 2
    lr, lam = step.choice
    assert step.xs[0] < lr < step.xs[-1] and step.ys[0] < lam < step.ys[-1]
    assert 0.3 < lr < 3 and 0.003 < lam < 0.03


def test_cap_on_widenings_returns_the_edge_point_and_says_so():
    step, widenings = _search((100.0, 0.25), max_widenings=2)
    assert step.done and not step.interior and widenings == 2
    assert step.choice[0] == step.xs[-1]


def test_a_diverged_point_never_wins():
    xs, ys = (1, 2, 3), (1, 2, 3)
    scores = {(x, y): 0.0 for x in xs for y in ys}
    scores[2, 2], scores[1, 1] = 1.0, float("nan")
    assert widen_or_choose(xs, ys, scores).choice == (2, 2)


def test_missing_score_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"no score for \(1, 1\)"):
        widen_or_choose((1, 2, 3), (1, 2, 3), {})
