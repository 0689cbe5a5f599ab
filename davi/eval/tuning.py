"""Tuning RED-Diff's lr and lambda on train images, widening the grid until the best point is interior.

A baseline tuned on a fixed grid is treated unfairly when its best setting sits on the grid's edge:
the optimum may lie beyond. ``widen_until_interior`` scores a 2-D grid, and while the best point
(highest score) lies on an edge, widens that axis by one log-spaced value (davi.eval.grid_search)
and scores the new points, up to ``max_widenings`` times. ``tune_red_diff`` applies it to RED-Diff
(Mardani et al. 2023, "A Variational Perspective on Solving Inverse Problems with Diffusion
Models") with PSNR on train measurements as the score:

    result = tune_red_diff(prior, operator, x_train, y_train, steps=100)
    result["lr"], result["lam"], result["interior"]

The train measurements should not be the test ones (a different noise seed at least).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from davi.eval.grid_search import widen_or_choose

GRID_LRS = (0.05, 0.1, 0.25)  # the starting 3 x 3 grid
GRID_LAMS = (0.05, 0.25, 1.0)


@dataclass(frozen=True)
class GridSearch:
    """The widened grid, every point's scores, and the choice (best ``key``)."""

    choice: tuple[float, float]
    interior: bool  # the choice is inside the grid on both axes
    widenings: int
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    points: dict  # (x, y) -> the scores dict of that point

    def rows(self, x_name: str = "lr", y_name: str = "lam") -> list[dict]:
        """One dict per grid point, its coordinates under ``x_name`` / ``y_name``, then its scores."""
        return [{x_name: a, y_name: b, **self.points[a, b]} for a in self.xs for b in self.ys]


def widen_until_interior(score: Callable[[float, float], dict | None], xs: Sequence[float], ys: Sequence[float],
                         key: str = "psnr", max_widenings: int = 4, factor: float = 3.0,
                         on_widen: Callable[[tuple, tuple], None] | None = None) -> GridSearch | None:
    """Score the grid ``xs`` x ``ys`` with ``score(x, y) -> dict`` (higher ``dict[key]`` is better),
    widening it while the best point is on an edge. Each point is scored once. ``score`` may return
    None (a point not available, e.g. not cached yet): then the search stops and returns None."""
    xs, ys, widenings, points = tuple(xs), tuple(ys), 0, {}
    while True:
        for x in xs:
            for y in ys:
                if (x, y) not in points:
                    scores = score(x, y)
                    if scores is None:
                        return None
                    points[x, y] = scores
        step = widen_or_choose(xs, ys, {p: s[key] for p, s in points.items()}, factor=factor,
                               widenings=widenings, max_widenings=max_widenings)
        if step.done:
            return GridSearch(step.choice, step.interior, widenings, step.xs, step.ys, points)
        xs, ys, widenings = step.xs, step.ys, widenings + 1
        if on_widen is not None:
            on_widen(xs, ys)


def red_diff_scores(prior, operator, x, y, lr: float, lam: float, steps: int, seed: int = 0,
                    batch_size: int | None = None, desc: str | None = None, **settings) -> dict:
    """PSNR, SSIM and the digit classifier's realism of RED-Diff-``steps`` at (lr, lam) restoring ``y``
    (truth ``x``), one sample per image (davi.eval.metrics.score_restorations). ``settings``: other
    RedDiff keyword arguments (davi.builders.red_diff_settings)."""
    from davi.eval.evaluate import run_method
    from davi.eval.metrics import score_restorations
    from davi.solvers.methods import RedDiffMethod

    method = RedDiffMethod(prior, operator, **{**settings, "steps": steps, "lr": lr, "lam": lam})
    out, _ = run_method(method, y, batch_size or len(y), seed=seed, desc=desc)
    return score_restorations(out, x, explain_absent=False)


def tune_red_diff(prior, operator, x, y, lrs: Sequence[float] = GRID_LRS, lams: Sequence[float] = GRID_LAMS,
                  steps: int = 100, seed: int = 0, max_widenings: int = 4, **settings) -> dict:
    """RED-Diff's (lr, lam) of best PSNR restoring train measurements ``y`` of images ``x``.

    Returns ``{"lr", "lam", "interior", "widenings", "lrs", "lams", "train_images", "steps", "grid"}``,
    ``grid`` holding every point's scores."""
    found = widen_until_interior(
        lambda lr, lam: red_diff_scores(prior, operator, x, y, lr, lam, steps, seed, **settings),
        sorted(lrs), sorted(lams), max_widenings=max_widenings)
    return search_summary(found, train_images=len(y), steps=steps)


def search_summary(found: GridSearch, **extra) -> dict:
    """A RED-Diff grid search as a JSON-ready dict (the choice first, then ``extra``, then the grid)."""
    lr, lam = found.choice
    return {"lr": lr, "lam": lam, "interior": found.interior, "widenings": found.widenings, "lrs": list(found.xs),
            "lams": list(found.ys), **extra, "grid": found.rows()}


@dataclass(frozen=True)
class BoundedSearch:
    """A widened grid on one or more named axes, every point's scores, and the choice (best ``key``)."""

    choice: dict  # axis name -> chosen value
    interior: bool  # strictly inside the grid on every axis
    at_bound: tuple  # axes whose choice equals an admissible bound (the grid cannot widen past it)
    widenings: int
    axes: dict  # axis name -> its (widened) values
    points: dict  # tuple of values, in ``axes`` order -> scores

    def rows(self) -> list[dict]:
        return [{**dict(zip(self.axes, p)), **s} for p, s in self.points.items()]


def widen_axis(axis: tuple, best: float, factor: float, bound: tuple) -> tuple | None:
    """``axis`` with one value beyond the edge holding ``best`` (x or / ``factor``, rounded as
    davi.eval.grid_search rounds, clipped to ``bound``); None when ``best`` is interior or its edge is the bound."""
    lo, hi = bound
    if best == axis[0] and axis[0] > lo:
        return (max(lo, round(axis[0] / factor, 6)), *axis)
    if best == axis[-1] and axis[-1] < hi:
        return (*axis, min(hi, round(axis[-1] * factor, 6)))
    return None


def bounded_search(score, axes: dict, bounds: dict | None = None, key: str = "psnr", factor: float = 3.0,
                   max_widenings: int = 4, on_widen=None) -> BoundedSearch | None:
    """:func:`widen_until_interior`'s rule on any number of named axes, with admissible bounds.

    ``score(params) -> dict`` (higher ``dict[key]`` is better, NaN never wins; None: not available, e.g. not
    cached in report mode, and the search returns None). While the best point is on an edge of an axis that can
    still widen and fewer than ``max_widenings`` widenings were made, those axes widen and the new points are
    scored. Unbounded and 2-D, this is widen_until_interior exactly (tested)."""
    axes, bounds, points, widenings = {k: tuple(sorted(v)) for k, v in axes.items()}, bounds or {}, {}, 0
    if any(len(v) < 3 for v in axes.values()):
        raise ValueError(f"grid: need at least 3 values per axis to have an interior, got {axes}")
    while True:
        grid = list(itertools.product(*axes.values()))
        for p in grid:
            if p not in points:
                if (s := score(dict(zip(axes, p)))) is None:
                    return None
                points[p] = s
        best = max(grid, key=lambda p: -math.inf if math.isnan(points[p][key]) else points[p][key])
        wider = {k: widen_axis(axes[k], b, factor, bounds.get(k, (-math.inf, math.inf))) for k, b in zip(axes, best)}
        interior = all(v[0] < b < v[-1] for v, b in zip(axes.values(), best))
        if interior or widenings >= max_widenings or all(w is None for w in wider.values()):
            at_bound = tuple(k for k, b in zip(axes, best) if b in bounds.get(k, ()))
            return BoundedSearch(dict(zip(axes, best)), interior, at_bound, widenings, axes, {p: points[p] for p in grid})
        axes, widenings = {k: wider[k] or axes[k] for k in axes}, widenings + 1
        if on_widen is not None:
            on_widen(axes)
