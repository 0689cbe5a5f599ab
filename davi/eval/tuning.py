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
