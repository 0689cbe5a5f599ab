"""Checking a sampler against an exact posterior: draw its samples, compare them with the posterior.

:func:`posterior_figures` summarises (n, B, D) samples of B measurements against their exact
:class:`~davi.analytic.posterior.Posterior` s with the distances of :mod:`davi.analytic.distances`;
:func:`mapper_samples` draws such samples from a DAVI mapper (unclamped, unlike
:class:`~davi.solvers.methods.DaviMethod`, which clamps to the image range).
"""

from __future__ import annotations

import math

import torch

from davi.analytic.distances import (
    gaussian_w2,
    mode_coverage,
    sliced_wasserstein,
    variance_ratios,
)

__all__ = ["mapper_samples", "posterior_figures"]


@torch.no_grad()
def mapper_samples(mapper, op, y: torch.Tensor, n: int, seed: int = 0, chunk: int = 512,
                   condition=None) -> torch.Tensor:
    """(n, B, D) float64 samples I_phi(lift(y) + h z, T - 1), NOT clamped to [-1, 1] (clamping would
    cut the posterior's tails; DaviMethod clamps for images). ``condition``: a family mapper's
    (davi.models.conditioning.Condition of the B measurements)."""
    g = torch.Generator().manual_seed(seed)
    lifted = op.lift(y.float())
    B = y.shape[0]
    out = []
    reps = max(1, chunk // B)
    for start in range(0, n, reps):
        k = min(reps, n - start)
        z = torch.randn((k * B, *mapper.z_shape(lifted)[1:]), generator=g)
        cond = None if condition is None else condition.repeat(k)
        x = mapper.restore(lifted.repeat(k, 1, 1, 1), z, condition=cond)
        out.append(x.double().reshape(k, B, -1))
    return torch.cat(out)


def posterior_figures(samples: torch.Tensor, posts: list, seed: int = 0, ref_samples: int = 4096) -> dict:
    """How far ``samples`` (n, B, D) are from the exact posteriors ``posts`` (B of them), averaged over the y's.

    ``mean_err``: ||m_hat - m|| / ||m|| (max over y: ``mean_err_max``); ``err_std``: the same error over
    sqrt(tr C); ``var_tr``: tr(C_hat) / tr(C); ``var_top_min``/``var_top_max``: the range of the variance
    ratios along C's top-5 eigen-directions; ``w2``: Gaussian 2-Wasserstein of the sample mean/cov to the
    exact one (Gaussian posterior only); ``sw``: sliced Wasserstein to ``ref_samples`` exact samples;
    ``mode_tv``, ``mode_dev`` (max ``mode_dev_max``), ``min_weight``: mode coverage (mixture only).
    """
    g = torch.Generator().manual_seed(99_000 + seed)
    rows = []
    for b, post in enumerate(posts):
        X = samples[:, b]
        m_hat = X.mean(0)
        err = float((m_hat - post.mean).norm())
        r = {"mean_err": err / float(post.mean.norm()), "err_std": err / math.sqrt(float(post.cov.trace()))}
        if X.shape[0] > 1:
            vr = variance_ratios(X, post.cov, top_k=5)
            r.update(var_tr=vr["trace"], var_top_min=float(vr["top"].min()), var_top_max=float(vr["top"].max()))
            if len(post.weights) == 1:
                Xc = X - m_hat
                r["w2"] = gaussian_w2(m_hat, Xc.T @ Xc / (X.shape[0] - 1), post.mean, post.cov)
            r["sw"] = sliced_wasserstein(X, post.sample(ref_samples, g), generator=g)
            if len(post.weights) > 1:
                mc = mode_coverage(X, post.weights, post.means, post.covs)
                r["mode_tv"] = mc["tv"]
                r["mode_dev"] = float((mc["fractions"] - mc["exact"]).abs().max())
                r["min_weight"] = float(post.weights.min())
        else:
            r.update(var_tr=0.0, var_top_min=0.0, var_top_max=0.0)
        rows.append(r)
    keys = rows[0].keys()
    out = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    out["mean_err_max"] = max(r["mean_err"] for r in rows)
    if "mode_dev" in keys:
        out["mode_dev_max"] = max(r["mode_dev"] for r in rows)
    return out

