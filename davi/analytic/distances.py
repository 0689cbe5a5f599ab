"""Distances between sample sets and (exact) Gaussian / mixture distributions.

How close a sampler's output is to an exact posterior (:mod:`davi.analytic.posterior`): the
Gaussian 2-Wasserstein distance, the sliced Wasserstein distance between sample sets, variance
ratios along the posterior's principal directions, and mode coverage for mixtures. Everything
works on the CPU in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from davi.analytic._common import LOG_2PI, f64

__all__ = ["gaussian_w2", "gaussian_w2_squared", "sliced_wasserstein", "variance_ratios", "mode_coverage", "interval_coverage", "COVERAGE_LEVELS"]


def _sqrt_psd(S: np.ndarray) -> np.ndarray:
    import scipy.linalg

    lam, V = scipy.linalg.eigh(0.5 * (S + S.T))
    return (V * np.sqrt(np.clip(lam, 0, None))) @ V.T


def gaussian_w2_squared(m1: np.ndarray, C1: np.ndarray, m2: np.ndarray, C2: np.ndarray) -> float:
    """Squared 2-Wasserstein (Fréchet) distance between N(m1, C1) and N(m2, C2), float64 numpy:

    ``|m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2)``, clamped at 0 against round-off.

    Both square roots are of symmetric PSD matrices, taken with the symmetric eigensolver: no
    complex round-off to discard, finite for singular covariances, and several times faster than a
    general ``sqrtm`` of the non-symmetric product C1 C2 (which has the same trace root)."""
    s2 = _sqrt_psd(C2)
    cross = _sqrt_psd(s2 @ C1 @ s2)
    return max(float(np.sum((m1 - m2) ** 2) + np.trace(C1) + np.trace(C2) - 2 * np.trace(cross)), 0.0)


def gaussian_w2(mean1, cov1, mean2, cov2) -> float:
    """2-Wasserstein distance (not squared) between N(mean1, cov1) and N(mean2, cov2), in float64
    (``gaussian_w2_squared``); means of any shape are flattened."""
    m1 = f64(mean1).reshape(-1).numpy()
    m2 = f64(mean2).reshape(-1).numpy()
    C1, C2 = f64(cov1).numpy(), f64(cov2).numpy()
    if C1.shape != (m1.size, m1.size) or C2.shape != C1.shape or m2.shape != m1.shape:
        raise ValueError(f"shapes do not match: means {m1.shape}, {m2.shape}, covs {C1.shape}, {C2.shape}")
    return math.sqrt(gaussian_w2_squared(m1, C1, m2, C2))


def _quantiles(p: torch.Tensor, n: int) -> torch.Tensor:
    """Quantile function of each column of sorted p (N, P) at the n mid-point levels (i + 0.5) / n."""
    N = p.shape[0]
    if N == n:
        return p
    pos = ((torch.arange(n, dtype=torch.float64) + 0.5) / n * N - 0.5).clamp(0, N - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(N - 1)
    frac = (pos - lo)[:, None]
    return p[lo] * (1 - frac) + p[hi] * frac


def sliced_wasserstein(samples_a, samples_b, num_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance between two sample sets (N, ...) and (M, ...):
    ``sqrt(mean over random unit directions theta of W2^2(<theta, a>, <theta, b>))``.

    1-D distances compare sorted projections (equal sizes) or quantile functions (linear
    interpolation at (i + 0.5) / n, n = max(N, M)). Directions come from ``generator``."""
    a = f64(samples_a).flatten(1)
    b = f64(samples_b).flatten(1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"samples of different dimensions: {a.shape[1]} and {b.shape[1]}")
    theta = torch.randn(a.shape[1], num_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa = (a @ theta).sort(0).values
    pb = (b @ theta).sort(0).values
    n = max(pa.shape[0], pb.shape[0])
    diff = _quantiles(pa, n) - _quantiles(pb, n)
    return math.sqrt(float(diff.pow(2).mean()))


def variance_ratios(samples, exact_cov, top_k: int = 5) -> dict:
    """How much of the exact posterior spread a sampler reproduces.

    ``samples`` (N, ...) are flattened to (N, D). Returns ``trace``: tr(C_hat) / tr(C), and
    ``top``: (top_k,) ratios ``v_i^T C_hat v_i / lambda_i`` along the exact covariance's top-k
    eigenvectors (largest first), with those ``eigenvalues``. 1 means the right spread; a
    collapsed (mode-seeking) sampler gives values near 0.
    """
    X = f64(samples).flatten(1)
    C = f64(exact_cov)
    if C.shape != (X.shape[1], X.shape[1]):
        raise ValueError(f"exact_cov must be ({X.shape[1]}, {X.shape[1]}), got {tuple(C.shape)}")
    if X.shape[0] < 2:
        raise ValueError("need at least 2 samples")
    Xc = X - X.mean(0)
    C_hat = Xc.T @ Xc / (X.shape[0] - 1)
    lam, V = torch.linalg.eigh(0.5 * (C + C.T))
    lam, V = lam.flip(0)[:top_k], V.flip(1)[:, :top_k]
    along = ((Xc @ V).pow(2).sum(0) / (X.shape[0] - 1))
    return {"trace": float(C_hat.trace() / C.trace()), "top": along / lam, "eigenvalues": lam}


def mode_coverage(samples, posterior_weights, means, covs) -> dict:
    """Which posterior component each sample belongs to, against the exact component weights.

    ``samples`` (N, ...); ``posterior_weights`` (K,) for one measurement (a (1, K) row is
    accepted); ``means`` (K, ...); ``covs`` (K, D, D). Each sample goes to its most probable
    component ``argmax_k w_k N(x; m_k, C_k)``. Returns ``fractions`` (K,) (sums to 1), ``exact``
    (K,) (the weights) and ``tv``, the total-variation distance ``0.5 * sum |fractions - exact|``.
    """
    X = f64(samples).flatten(1)
    w = f64(posterior_weights)
    if w.ndim == 2 and w.shape[0] != 1:
        raise ValueError(f"posterior_weights are for one measurement: (K,) or (1, K), got {tuple(w.shape)}")
    w = w.reshape(-1)
    K = w.numel()
    M = f64(means).reshape(K, -1)
    C = f64(covs)
    if M.shape[1] != X.shape[1] or C.shape != (K, X.shape[1], X.shape[1]):
        raise ValueError(f"shapes do not match: samples {tuple(X.shape)}, means {tuple(M.shape)}, "
                         f"covs {tuple(C.shape)}")
    logp = []
    for k in range(K):
        lam, V = torch.linalg.eigh(0.5 * (C[k] + C[k].T))
        lam = lam.clamp_min(lam.max() * 1e-12 + 1e-300)
        z = (X - M[k]) @ V
        logp.append(-0.5 * ((z * z / lam).sum(1) + lam.log().sum() + X.shape[1] * LOG_2PI))
    score = torch.stack(logp, 1) + w.clamp_min(1e-300).log()
    assign = score.argmax(1)
    fractions = torch.bincount(assign, minlength=K).double() / X.shape[0]
    return {"fractions": fractions, "exact": w / w.sum(), "tv": float(0.5 * (fractions - w / w.sum()).abs().sum())}

COVERAGE_LEVELS = (0.5, 0.8, 0.9, 0.95)


def interval_coverage(samples, truth, levels=COVERAGE_LEVELS, mask=None) -> dict[float, float]:
    """How often the truth falls in the samples' central per-pixel credible intervals.

    ``samples`` (K, N, ...): K samples for each of N measurements; ``truth`` (N, ...) or (R, N, ...)
    (R truths per measurement, e.g. R exact posterior draws). For each level l the interval of a pixel
    is the [(1 - l) / 2, (1 + l) / 2] quantile range of its K samples (linear interpolation); the result
    is the fraction of (truth, pixel) pairs inside it, over the pixels where ``mask`` (broadcast to
    ``truth``'s last dims) is true. A calibrated sampler gives l (up to the finite-K bias of empirical
    quantiles, about 1 / K); a point estimate (no spread) gives about 0.
    """
    S = f64(samples)
    T = f64(truth)
    if T.ndim == S.ndim - 1:
        T = T[None]
    if T.shape[1:] != S.shape[1:]:
        raise ValueError(f"truth {tuple(T.shape)} does not match samples {tuple(S.shape)} (K, N, ...)")
    keep = torch.ones(T.shape[1:], dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool().expand(T.shape[1:])
    out = {}
    for level in levels:
        q = torch.quantile(S, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64), dim=0)
        inside = (T >= q[0]) & (T <= q[1])
        out[float(level)] = float(inside[:, keep].double().mean())
    return out
