"""Are a sampler's uncertainties calibrated? Per-pixel coverage of central credible intervals.

K samples per measurement give every pixel a central 50/80/90/95% interval (empirical quantiles,
davi.analytic.interval_coverage); coverage is how often the truth falls inside. A calibrated
sampler lies on the diagonal (coverage = the level); a point estimate covers almost nothing.

    draws = mapper_draws(mapper, operator, y, k=32)          # (K, N, C, H, W)
    digit_coverage(draws, x0)["all"]                         # {"cov50": ..., "cov80": ..., ...}
    digit_coverage(draws, x0, hidden=operator.lift(torch.ones_like(y[:1]))[0] == 0)["hidden"]
"""

from __future__ import annotations

import torch

from davi.analytic import interval_coverage


def coverage_dict(cov: dict) -> dict:
    """``{level: coverage}`` -> ``{"cov50": ..., "cov80": ...}`` rounded to 4 decimals."""
    return {f"cov{round(100 * float(k))}": round(float(v), 4) for k, v in cov.items()}


def digit_coverage(draws: torch.Tensor, truth: torch.Tensor, hidden: torch.Tensor | None = None) -> dict:
    """Coverage of ``draws`` (K, N, C, H, W) of the truth (N, C, H, W) over all pixels (``"all"``) and,
    given a pixel mask ``hidden`` (C, H, W: pixels the measurement does not see), over those (``"hidden"``)."""
    out = {"all": coverage_dict(interval_coverage(draws, truth))}
    if hidden is not None:
        out["hidden"] = coverage_dict(interval_coverage(draws, truth, mask=hidden))
    return out


@torch.no_grad()
def mapper_draws(mapper, operator, y: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """(K, N, C, H, W) one-step samples of a mapper, clamped to the image range [-1, 1] as written out."""
    g = torch.Generator().manual_seed(seed)
    lifted = operator.lift(y)
    return torch.stack([mapper.restore(lifted, generator=g).clamp(-1, 1) for _ in range(k)])


def red_diff_draws(prior, operator, y: torch.Tensor, k: int, steps: int, lr: float, lam: float) -> torch.Tensor:
    """(K, N, C, H, W) RED-Diff (Mardani et al. 2023) estimates from K seeds per image, clamped to [-1, 1]."""
    from davi.solvers.red_diff import RedDiff

    solver = RedDiff(prior, operator, steps=steps, lr=lr, lam=lam)
    n = y.shape[0]
    return torch.stack([solver(y, seeds=[seed * 1000 + i for i in range(n)]).clamp(-1, 1) for seed in range(k)])
