"""Paired bootstrap intervals for the difference of a statistic between methods on the same images.

Two restoration methods run on the same N measurements give per-image items (a PSNR, a feature
vector, the reference's features...). A statistic of the whole set (a mean PSNR, a Fréchet or
kernel distance to the references) differs between the methods; ``bootstrap_differences``
resamples the N images with replacement, the SAME indices for both methods (paired: image-level
difficulty cancels), recomputes the statistic of each method on every resample and returns the
percentile interval of ``statistic(base) - statistic(other)`` (Efron & Tibshirani 1993, ch. 13).

Set statistics (FD, KID) are recomputed on the resampled set as a whole, so the interval covers
their dependence on which images are in the set, not only per-image noise. Resampling with
replacement repeats images; for the unbiased kernel distance repeated rows add a small positive
bias to both methods alike, which the difference largely cancels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate (the statistic on the full set) and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int

    def as_dict(self) -> dict:
        return asdict(self)

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


Items = Sequence  # per-image arrays, each indexed along its first axis (N, ...)


def _check(items: Items, n: int, what: str) -> None:
    for k, a in enumerate(items):
        if len(a) != n:
            raise ValueError(f"bootstrap: {what} item {k} has {len(a)} rows, expected {n} (one per image)")


def _take(items: Items, idx: np.ndarray) -> list:
    return [a[idx] for a in items]


def bootstrap_differences(statistic: Callable[..., float], base: Items, others: Mapping[str, Items],
                          resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, Interval]:
    """``{name: Interval of statistic(*base) - statistic(*others[name])}`` over paired resamples.

    ``base`` and every ``others[name]`` are sequences of arrays with one row per image (the same N
    images, in the same order); ``statistic(*arrays)`` -> float. The base statistic is computed once
    per resample and shared by every comparison (the same resampled indices for all methods).
    Deterministic given ``seed``.
    """
    if not base:
        raise ValueError("bootstrap: base needs at least one per-image array")
    n = len(base[0])
    if n < 2:
        raise ValueError(f"bootstrap: need at least 2 images, got {n}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap: need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    _check(base, n, "base")
    for name, items in others.items():
        _check(items, n, name)
    rng = np.random.default_rng(seed)
    full_base = statistic(*base)
    diffs = {name: np.empty(resamples) for name in others}
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        s_base = statistic(*_take(base, idx))
        for name, items in others.items():
            diffs[name][r] = s_base - statistic(*_take(items, idx))
    q = (1 - level) / 2
    return {name: Interval(float(full_base - statistic(*others[name])), float(np.quantile(d, q)),
                           float(np.quantile(d, 1 - q)), level, resamples) for name, d in diffs.items()}


def paired_bootstrap(statistic: Callable[..., float], a: Items, b: Items, resamples: int = 1000,
                     level: float = 0.95, seed: int = 0) -> Interval:
    """Interval of ``statistic(*a) - statistic(*b)`` (see ``bootstrap_differences``)."""
    return bootstrap_differences(statistic, a, {"b": b}, resamples, level, seed)["b"]
