"""Exact posteriors for linear operators, and the closed-form optimum of DAVI's objective.

With a Gaussian prior ``x0 ~ N(m, S)`` (:mod:`davi.analytic.priors`) and a linear measurement
``y = A x0 + sigma n`` the posterior is Gaussian (Kalman form); a Gaussian mixture prior gives a
mixture posterior, component by component. :func:`davi_fixed_point` gives what DAVI's own
objective (Lee et al. 2024, integral KL + consistency) converges to over Gaussians, which is not
the posterior (docs/posterior_check.md).

Everything works on the CPU in float64 and returns float64 CPU tensors.
"""

from __future__ import annotations

import math

import torch

from davi.analytic._common import LOG_2PI, f64
from davi.analytic.distances import gaussian_w2
from davi.analytic.priors import GaussianMixturePrior, GaussianPrior, prior_components

__all__ = ["operator_matrix", "exact_posterior", "exact_posterior_gmm", "Posterior", "exact_posteriors",
           "held_out_measurements", "ikl_curvature", "davi_fixed_point", "davi_objective", "calibrate_lambda_con"]


@torch.no_grad()
def operator_matrix(op, shape, chunk: int = 1024) -> torch.Tensor:
    """The (M, D) matrix of a linear operator on images of ``shape`` (C, H, W), float64 on the CPU,
    obtained by applying ``op`` to the identity basis (column j = A e_j)."""
    shape = tuple(int(s) for s in shape)
    D = math.prod(shape)
    cols = []
    for start in range(0, D, chunk):
        n = min(chunk, D - start)
        E = torch.zeros(n, D, dtype=torch.float64)
        E[torch.arange(n), start + torch.arange(n)] = 1
        cols.append(op(E.reshape(n, *shape)).reshape(n, -1).to(device="cpu", dtype=torch.float64))
    return torch.cat(cols).T.contiguous()


def _observed(op, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """A restricted to its non-zero rows, and the mask of those rows (M,). Identically zero rows
    (inpainting's unobserved pixels) carry no information and, with sigma_y = 0, would make
    A Sigma A^T + sigma^2 I singular: they are dropped."""
    A = operator_matrix(op, shape)
    keep = A.abs().amax(1) > 0
    return A[keep], keep


def _flat_measurement(op, y: torch.Tensor, shape) -> torch.Tensor:
    if y.ndim == 4:
        op.check_measurement(y, (y.shape[0], *shape))
    return f64(y).reshape(y.shape[0], -1)


def _psd_solve(S: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S^{-1} R, log det S) for a symmetric PSD S (Cholesky; pseudo-inverse if it is singular)."""
    L, info = torch.linalg.cholesky_ex(S)
    if int(info) == 0:
        return torch.cholesky_solve(R, L), 2 * L.diagonal().log().sum()
    lam, V = torch.linalg.eigh(S)
    tol = lam.max().clamp_min(0) * S.shape[0] * torch.finfo(S.dtype).eps
    inv = torch.where(lam > tol, 1 / lam, torch.zeros_like(lam))
    logdet = torch.where(lam > tol, lam, torch.ones_like(lam)).log().sum()
    return (V * inv) @ (V.T @ R), logdet


def _kalman(m: torch.Tensor, S: torch.Tensor, A: torch.Tensor, sigma: float, y: torch.Tensor):
    """Posterior (means (B, D), cov (D, D)) and log N(y; A m, A S A^T + sigma^2 I) (B,) of one Gaussian."""
    M = A.shape[0]
    AS = A @ S  # (M, D)
    G = AS @ A.T
    G = 0.5 * (G + G.T) + sigma**2 * torch.eye(M, dtype=torch.float64)
    r = y - A @ m  # (B, M)
    Kt, logdet = _psd_solve(G, AS)  # K^T = G^{-1} A S, (M, D)
    mean = m + r @ Kt
    # Joseph form (I - K A) S (I - K A)^T + sigma^2 K K^T: equal to S - K A S, and PSD by construction.
    IKA = torch.eye(S.shape[0], dtype=torch.float64) - Kt.T @ A
    cov = IKA @ S @ IKA.T + sigma**2 * (Kt.T @ Kt)
    cov = 0.5 * (cov + cov.T)
    sol, _ = _psd_solve(G, r.T)  # (M, B)
    loglik = -0.5 * ((r * sol.T).sum(1) + logdet + M * LOG_2PI)
    return mean, cov, loglik


def exact_posterior(prior: GaussianPrior, op, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior of ``x0 ~ prior`` given ``y = A x0 + op.sigma_y * n``: (mean (B, C, H, W), cov (D, D)).

    Kalman form ``K = S A^T (A S A^T + sigma^2 I)^{-1}``, ``mean = m + K (y - A m)``,
    ``cov = S - K A S`` (computed in Joseph form, symmetric PSD). The covariance does not depend
    on y. Zero rows of A are dropped first, so inpainting's unobserved pixels (and sigma_y = 0
    with a full-row-rank A) are fine. float64, CPU.
    """
    A, keep = _observed(op, prior.shape)
    yf = _flat_measurement(op, y, prior.shape)[:, keep]
    mean, cov, _ = _kalman(prior.mean.cpu(), prior.cov.cpu(), A, float(op.sigma_y), yf)
    return mean.reshape(-1, *prior.shape), cov


def exact_posterior_gmm(prior: GaussianMixturePrior, op, y: torch.Tensor):
    """Posterior of a Gaussian mixture prior: (weights (B, K), means (B, K, C, H, W), covs (K, D, D)).

    Component k's posterior is the Kalman update of N(m_k, S_k); its weight is
    ``∝ w_k N(y; A m_k, A S_k A^T + sigma^2 I)`` (normalised in log space). A GaussianPrior is
    treated as a one-component mixture.
    """
    w, means_p, covs_p = prior_components(prior)
    A, keep = _observed(op, prior.shape)
    yf = _flat_measurement(op, y, prior.shape)[:, keep]
    out = [_kalman(means_p[k], covs_p[k], A, float(op.sigma_y), yf) for k in range(len(w))]
    logw = torch.stack([o[2] for o in out], 1) + w.log()  # (B, K)
    weights = torch.softmax(logw, dim=1)
    means = torch.stack([o[0] for o in out], 1).reshape(yf.shape[0], len(w), *prior.shape)
    return weights, means, torch.stack([o[1] for o in out])


# ----------------------------------------------------------------------------------------------
# one measurement's posterior as a distribution
# ----------------------------------------------------------------------------------------------
class Posterior:
    """The exact posterior of one measurement: a Gaussian mixture (K = 1 for a Gaussian prior)."""

    def __init__(self, weights, means, covs):
        self.weights, self.means, self.covs = weights, means, covs  # (K,), (K, D), (K, D, D)
        self.mean = (weights[:, None] * means).sum(0)
        d = means - self.mean
        self.cov = (weights[:, None, None] * (covs + d[:, :, None] * d[:, None, :])).sum(0)
        self._chol = [torch.linalg.cholesky(c + 1e-12 * torch.eye(c.shape[0], dtype=c.dtype)) for c in covs]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        L = torch.stack(self._chol)[k]
        return self.means[k] + torch.einsum("nde,ne->nd", L, z)


def exact_posteriors(prior, op, y) -> list[Posterior]:
    """One :class:`Posterior` per measurement in ``y`` (B, ...), for a Gaussian or mixture prior."""
    w, means, covs = exact_posterior_gmm(prior, op, y.double())
    return [Posterior(w[b], means[b].reshape(w.shape[1], -1), covs) for b in range(y.shape[0])]


def held_out_measurements(prior, op, n: int, seed: int, ambiguous: bool):
    """(x0, y) for n held-out prior samples. With ``ambiguous`` (mixture), the n whose exact posterior
    weights are most balanced among 32 n candidates: mode coverage is only informative where the
    posterior has more than one mode."""
    g = torch.Generator().manual_seed(seed)
    cand = n * 32 if ambiguous else n
    x0 = prior.sample(cand, generator=g).float()
    y = op.measure(x0, generator=g)
    if ambiguous:
        w = exact_posterior_gmm(prior, op, y.double())[0]
        entropy = -(w * w.clamp_min(1e-300).log()).sum(1)
        idx = entropy.argsort(descending=True)[:n].sort().values
        x0, y = x0[idx], y[idx]
    return x0, y


# ----------------------------------------------------------------------------------------------
# what DAVI's objective converges to (Gaussian prior, Gaussian family): closed form
# ----------------------------------------------------------------------------------------------
def ikl_curvature(v: torch.Tensor, alphas_cumprod: torch.Tensor, t_ikl: int, dim: int) -> torch.Tensor:
    """f(v) = (1 / 2D) mean_{t < t_ikl} w_t a_t / (a_t v + 1 - a_t), w_t = sqrt((1 - a_t) / a_t).

    For a Gaussian prior N(m, S) and Gaussian q = N(mu, C), the mapper's IKL surrogate
    (davi.training.losses.IKLLoss: per element (eps_theta - eps_psi) * x_hat, averaged over the D pixels)
    is the gradient of (1/D) mean_t w_t KL(q_t || p_t). Its stationarity conditions read
    ``2 f(S) (mu - m)`` for the mean and ``f(S) - f(C)`` for the covariance (f acting on eigenvalues):
    f plays the role that S^{-1} / 2 plays for the plain KL(q || p). f is not proportional to 1/v
    (it is bounded at v = 0 and falls roughly like log(1/v)), which is why DAVI's optimum is not the
    exact posterior."""
    a = alphas_cumprod[:t_ikl].double()
    w = ((1 - a) / a).sqrt()
    v = v.double()
    return (w * a / (a * v[..., None] + 1 - a)).mean(-1) / (2 * dim)


def _ikl_curvature_inverse(r: torch.Tensor, alphas_cumprod, t_ikl: int, dim: int) -> torch.Tensor:
    """v >= 0 with f(v) = r (bisection in log v); 0 where r >= f(0) (the optimum is a point mass)."""
    lo = torch.full_like(r, -40.0)
    hi = torch.full_like(r, 15.0)
    for _ in range(100):
        mid = (lo + hi) / 2
        too_small = ikl_curvature(mid.exp(), alphas_cumprod, t_ikl, dim) > r  # f decreasing: v must grow
        lo = torch.where(too_small, mid, lo)
        hi = torch.where(too_small, hi, mid)
    v = ((lo + hi) / 2).exp()
    return torch.where(r >= ikl_curvature(torch.zeros_like(r), alphas_cumprod, t_ikl, dim), torch.zeros_like(v), v)


def davi_fixed_point(prior, op, y: torch.Tensor, lambda_con: float, t_ikl: int, lambda_reg: float = 0.0):
    """Minimiser over Gaussians q = N(mu, C) of DAVI's per-sample objective on a Gaussian prior:

        J(q) = (1/D) mean_{t < t_ikl} w_t KL(q_t || p_t) + (lambda_con / M) E_q ||y - A x||^2,

    the normalisation of davi_training (IKL averaged over D pixels, consistency = mse over the M
    entries of A x). Setting its gradients to zero:

        mu = (f(S) + (lambda_con / M) A^T A)^{-1} (f(S) m + (lambda_con / M) A^T y),
        f(C) = f(S) + (lambda_con / M) A^T A,

    to be compared with the exact posterior, (S^{-1} + A^T A / sigma^2)^{-1} (S^{-1} m + A^T y / sigma^2)
    and C^{-1} = S^{-1} + A^T A / sigma^2. The paired term lambda_reg * mse(x0, x_hat), averaged over
    x0 ~ p(x0 | y), adds (lambda_reg / D) (||mu - E[x0 | y]||^2 + tr C): it adds lambda_reg / D to both
    precisions, pulling mu to the posterior mean and shrinking C. Returns (means (B, D), cov (D, D)), float64.
    """
    A = operator_matrix(op, prior.shape)  # (M, D), zero rows included (they count in the mse)
    M, D = A.shape
    ab = prior.schedule.alphas_cumprod.cpu()
    lam_s, V = prior.eigvals.cpu(), prior.eigvecs.cpu()
    F_S = (V * ikl_curvature(lam_s, ab, t_ikl, D)) @ V.T
    AtA = (lambda_con / M) * (A.T @ A)
    R = F_S + AtA + (lambda_reg / D) * torch.eye(D, dtype=torch.float64)
    yf = y.double().reshape(y.shape[0], -1)
    rhs = F_S @ prior.mean.cpu() + (lambda_con / M) * (yf @ A)  # (B, D)
    if lambda_reg:
        rhs = rhs + (lambda_reg / D) * exact_posterior(prior, op, y.double())[0].reshape(y.shape[0], -1)
    mu = torch.linalg.solve(R, rhs.T).T
    r, U = torch.linalg.eigh(0.5 * (R + R.T))
    C = (U * _ikl_curvature_inverse(r, ab, t_ikl, D)) @ U.T
    return mu, 0.5 * (C + C.T)


def davi_objective(prior, op, y, mu, C, lambda_con: float, t_ikl: int) -> torch.Tensor:
    """J(q) of :func:`davi_fixed_point` for q = N(mu, C) (mu (B, D)), summed over the batch; autograd-able
    (used to check that the closed form is a stationary point)."""
    A = operator_matrix(op, prior.shape)
    M, D = A.shape
    a = prior.schedule.alphas_cumprod.cpu()[:t_ikl].double()
    w = ((1 - a) / a).sqrt()
    S, m = prior.cov.cpu(), prior.mean.cpu()
    eye = torch.eye(D, dtype=torch.float64)
    Cq = a[:, None, None] * C + (1 - a)[:, None, None] * eye
    Cp = a[:, None, None] * S + (1 - a)[:, None, None] * eye
    Lp = torch.linalg.cholesky(Cp)
    trace = torch.cholesky_solve(Cq, Lp).diagonal(dim1=1, dim2=2).sum(1)  # (T,)
    d = a.sqrt()[:, None, None] * (mu - m)[None]  # (T, B, D)
    maha = torch.cholesky_solve(d.transpose(1, 2), Lp).transpose(1, 2).mul(d).sum(2)  # (T, B)
    logdet = torch.linalg.slogdet(Cp)[1] - torch.linalg.slogdet(Cq)[1]
    kl = 0.5 * (trace[:, None] + maha - D + logdet[:, None])  # (T, B)
    ikl = (w[:, None] * kl).mean(0) / D
    yf = y.double().reshape(y.shape[0], -1)
    con = ((yf - mu @ A.T).pow(2).sum(1) + (A @ C @ A.T).trace()) * lambda_con / M
    return (ikl + con).sum()


def calibrate_lambda_con(prior, op, y, t_ikl: int, grid=None, rel_tol: float = 0.02) -> tuple[float, dict]:
    """lambda_con for which davi_fixed_point is closest (mean W2 over the y's) to the exact posterior:
    the smallest grid value within ``rel_tol`` of the best W2 (at large t_ikl the W2 curve is flat
    above ~10 and its argmin drifts to the end of the grid, where the consistency term would swamp
    the IKL in training). Returns (lambda_con, {lambda: W2})."""
    grid = grid if grid is not None else [float(v) for v in torch.logspace(-2, 3, 21)]
    m_ex, C_ex = exact_posterior(prior, op, y.double())
    m_ex = m_ex.reshape(y.shape[0], -1)
    scores = {}
    for lam in grid:
        mu, C = davi_fixed_point(prior, op, y, lam, t_ikl)
        scores[lam] = sum(gaussian_w2(mu[b], C, m_ex[b], C_ex) for b in range(y.shape[0])) / y.shape[0]
    best = min(scores.values())
    return min(lam for lam, w2 in scores.items() if w2 <= best * (1 + rel_tol)), scores
