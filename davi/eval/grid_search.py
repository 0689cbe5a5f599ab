"""A 2-D hyper-parameter grid that widens until its best point is interior.

Tuning a baseline on a fixed grid is unfair to it when the best value sits on an edge: the
optimum may lie beyond. ``widen_or_choose`` looks at the scores of a grid (higher is better)
and either returns the best point, when neither of its coordinates is at an edge of its axis,
or a wider grid: every axis whose best value is at an edge gets one more value beyond that
edge, ``factor`` times further out (log-spaced axes, as learning rates and weights are). The
caller scores the new points and asks again; after ``max_widenings`` it takes the best point
wherever it is and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GridStep:
    """``choice`` (the best (x, y)) when ``done``; else the widened axes to score next."""

    done: bool
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    choice: tuple[float, float] | None = None
    interior: bool = False  # the choice is inside the grid on both axes


def _score(scores: dict, point) -> float:
    s = scores[point]
    return -math.inf if s is None or math.isnan(s) else s  # a diverged point never wins


def _widen(axis: tuple[float, ...], best: float, factor: float) -> tuple[float, ...]:
    if best == axis[0]:
        return (round(axis[0] / factor, 6), *axis)
    if best == axis[-1]:
        return (*axis, round(axis[-1] * factor, 6))
    return axis


def widen_or_choose(xs, ys, scores: dict, factor: float = 3.0, widenings: int = 0,
                    max_widenings: int = 4) -> GridStep:
    """``scores[(x, y)]`` for every x in ``xs`` and y in ``ys`` (higher is better, NaN = diverged).

    ``widenings``: how many times the grid has already been widened."""
    xs, ys = tuple(sorted(xs)), tuple(sorted(ys))
    if len(xs) < 3 or len(ys) < 3:
        raise ValueError(f"grid: need at least 3 values per axis to have an interior, got {xs} and {ys}")
    missing = [(x, y) for x in xs for y in ys if (x, y) not in scores]
    if missing:
        raise ValueError(f"grid: no score for {missing[0]} ({len(missing)} points missing)")
    bx, by = max(((x, y) for x in xs for y in ys), key=lambda p: _score(scores, p))
    interior = xs[0] < bx < xs[-1] and ys[0] < by < ys[-1]
    if interior or widenings >= max_widenings:
        return GridStep(True, xs, ys, (bx, by), interior)
    return GridStep(False, _widen(xs, bx, factor), _widen(ys, by, factor))
