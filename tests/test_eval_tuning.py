"""davi.eval.tuning: the RED-Diff grid search widens while its best point is on an edge, stops when interior."""

from __future__ import annotations

import math

import pytest

from davi.eval import tuning
from davi.eval.tuning import bounded_search, widen_axis, widen_until_interior


def _peak(at: tuple[float, float], calls: list | None = None):
    """A score with one maximum at ``at`` (log-distance), recording every point it is asked for."""
    def score(lr: float, lam: float) -> dict:
        if calls is not None:
            calls.append((lr, lam))
        return {"psnr": -(math.log(lr / at[0]) ** 2 + math.log(lam / at[1]) ** 2)}
    return score


def test_an_interior_best_is_chosen_without_widening_each_point_scored_once():
    calls = []
    found = tuning.widen_until_interior(_peak((0.1, 0.25), calls), (0.05, 0.1, 0.25), (0.05, 0.25, 1.0))
    assert found.choice == (0.1, 0.25) and found.interior and found.widenings == 0
    assert len(calls) == 9 == len(set(calls))


def test_a_best_on_an_edge_widens_that_axis_until_it_is_interior():
    calls, widened = [], []
    found = tuning.widen_until_interior(_peak((2.0, 0.25), calls), (0.05, 0.1, 0.25), (0.05, 0.25, 1.0),
                                        on_widen=lambda xs, ys: widened.append((xs, ys)))
    assert found.interior and found.widenings == len(widened) >= 2
    assert found.xs[-1] > 2.0 > found.xs[0] and found.ys == (0.05, 0.25, 1.0)  # only the lr axis grew
    assert found.choice[1] == 0.25 and found.xs[0] < found.choice[0] < found.xs[-1]
    assert len(calls) == len(set(calls)) == len(found.xs) * len(found.ys)  # no point scored twice
    assert [r["lr"] for r in found.rows()][::3] == list(found.xs)


def test_widening_stops_at_the_limit_and_says_the_choice_is_not_interior():
    found = tuning.widen_until_interior(_peak((1e6, 0.25)), (0.05, 0.1, 0.25), (0.05, 0.25, 1.0), max_widenings=2)
    assert found.widenings == 2 and not found.interior and found.choice[0] == found.xs[-1]


def test_a_missing_point_stops_the_search():
    assert tuning.widen_until_interior(lambda lr, lam: None if lr > 0.2 else {"psnr": 0.0},
                                       (0.05, 0.1, 0.25), (0.05, 0.25, 1.0)) is None


def test_tune_red_diff_scores_red_diff_on_the_train_images_and_summarises(monkeypatch):
    seen = []

    def fake_scores(prior, operator, x, y, lr, lam, steps, seed=0, **settings):
        seen.append((prior, operator, steps, seed, settings))
        return {"psnr": _peak((0.1, 0.25))(lr, lam)["psnr"], "ssim": 0.5}

    monkeypatch.setattr(tuning, "red_diff_scores", fake_scores)
    out = tuning.tune_red_diff("prior", "op", [0] * 7, [0] * 7, steps=20, init="lift")
    assert (out["lr"], out["lam"], out["interior"], out["widenings"]) == (0.1, 0.25, True, 0)
    assert out["train_images"] == 7 and out["steps"] == 20 and len(out["grid"]) == 9
    assert {s[:4] for s in seen} == {("prior", "op", 20, 0)} and seen[0][4] == {"init": "lift"}
    assert out["grid"][0] == {"lr": 0.05, "lam": 0.05, **fake_scores("p", "o", None, None, 0.05, 0.05, 20)}


def test_a_grid_too_small_to_have_an_interior_is_refused():
    with pytest.raises(ValueError, match="at least 3 values"):
        tuning.widen_until_interior(_peak((0.1, 0.1)), (0.1, 0.2), (0.1, 0.2, 0.3))


# -- bounded_search: the same rule on named axes with admissible bounds (the deepinv baselines' tuning) --
def test_bounded_search_is_widen_until_interior_without_bounds():
    """Unbounded and 2-D, the benchmark's search takes RED-Diff's rule (davi.eval.tuning) step for step: the same
    choice, widenings, axes and scored points, also when the optimum lies two widenings outside the grid."""
    for peak in [(1.0, 0.1), (30.0, 0.004), (0.05, 2.0)]:
        def f(a, b, p=peak):
            return {"psnr": -((math.log(a / p[0])) ** 2 + (math.log(b / p[1])) ** 2)}

        ours = bounded_search(lambda q, f=f: f(q["x"], q["y"]), {"x": (0.3, 1.0, 3.0), "y": (0.03, 0.1, 0.3)})
        theirs = widen_until_interior(f, (0.3, 1.0, 3.0), (0.03, 0.1, 0.3))
        assert (ours.choice["x"], ours.choice["y"]) == theirs.choice
        assert (ours.interior, ours.widenings, ours.axes["x"], ours.axes["y"]) == (
            theirs.interior, theirs.widenings, theirs.xs, theirs.ys)
        assert set(ours.points) == set(theirs.points)


def test_bounded_search_in_one_dimension_widens_until_interior():
    """DPS's weight alone: best near 20 from (0.3, 1, 3) widens to 9, 27 (still the edge), 81, then 27 is interior;
    every point is scored once."""
    seen = []

    def score(q):
        seen.append(q["w"])
        return {"psnr": -abs(math.log(q["w"] / 20.0))}

    found = bounded_search(score, {"w": (0.3, 1.0, 3.0)})
    assert found.axes["w"] == (0.3, 1.0, 3.0, 9.0, 27.0, 81.0) and found.widenings == 3
    assert found.choice == {"w": 27.0} and found.interior and found.at_bound == ()
    assert sorted(seen) == list(found.axes["w"])
    stopped = bounded_search(score, {"w": (0.3, 1.0, 3.0)}, max_widenings=1)  # out of widenings: at the edge
    assert stopped.choice == {"w": 9.0} and not stopped.interior


def test_bounded_search_stops_at_an_admissible_bound():
    """eta in [0, 1]: a score rising past 1 ends with the choice on the bound, not interior, said so; the grid
    never holds a value outside the bound. Below the bound the log widening goes on as usual."""
    found = bounded_search(lambda q: {"psnr": q["eta"]}, {"eta": (0.283333, 0.85, 1.0)}, {"eta": (0.0, 1.0)})
    assert found.choice == {"eta": 1.0} and not found.interior and found.at_bound == ("eta",)
    assert found.widenings == 0 and max(found.axes["eta"]) == 1.0
    found = bounded_search(lambda q: {"psnr": -q["eta"]}, {"eta": (0.283333, 0.85, 1.0)}, {"eta": (0.0, 1.0)},
                                 max_widenings=2)
    assert found.axes["eta"] == (0.031481, 0.094444, 0.283333, 0.85, 1.0) and found.widenings == 2
    assert found.choice == {"eta": 0.031481} and not found.interior and found.at_bound == ()
    # a widening that would overshoot a bound lands on it: 0.3 * 3 = 0.9, then 2.7 -> 1.0
    assert widen_axis((0.1, 0.3, 0.9), 0.9, 3.0, (0.0, 1.0)) == (0.1, 0.3, 0.9, 1.0)
    assert widen_axis((0.1, 0.3, 1.0), 1.0, 3.0, (0.0, 1.0)) is None
    assert widen_axis((0.1, 0.3, 1.0), 0.3, 3.0, (0.0, 1.0)) is None  # interior


def test_bounded_search_returns_none_while_a_point_is_missing():
    assert bounded_search(lambda q: None if q["w"] == 3.0 else {"psnr": 0.0}, {"w": (0.3, 1.0, 3.0)}) is None
    with pytest.raises(ValueError, match="at least 3"):
        bounded_search(lambda q: {"psnr": 0.0}, {"w": (1.0, 3.0)})
