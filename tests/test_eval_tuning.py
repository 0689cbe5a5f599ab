"""davi.eval.tuning: the RED-Diff grid search widens while its best point is on an edge, stops when interior."""

from __future__ import annotations

import math

import pytest

from davi.eval import tuning


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
