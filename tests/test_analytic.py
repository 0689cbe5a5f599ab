"""Analytic priors (Gaussian, Gaussian mixture), their exact posteriors and the benchmark metrics.

Everything here is float64, tiny (1x2x2 .. 1x8x8 images) and seeded: seconds in total.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from davi.analytic import (
    GaussianMixturePrior,
    GaussianPrior,
    digit_images,
    exact_posterior,
    exact_posterior_gmm,
    fit_gaussian,
    fit_gmm,
    gaussian_w2,
    mode_coverage,
    operator_matrix,
    sliced_wasserstein,
    stationary_gaussian,
    variance_ratios,
)
from davi.config import OperatorConfig
from davi.operators import build_operator

F64 = torch.float64


def random_cov(d: int, g: torch.Generator, scale: float = 0.02, floor: float = 0.005) -> torch.Tensor:
    Q = torch.randn(d, d, generator=g, dtype=F64)
    return Q @ Q.T / d * scale + floor * torch.eye(d, dtype=F64)


def diffused_log_density(means, covs, weights, ab, x):
    """log sum_k w_k N(x; sqrt(ab) m_k, ab S_k + (1 - ab) I), written independently of davi.analytic."""
    d = x.shape[-1]
    terms = [
        torch.distributions.MultivariateNormal(ab.sqrt() * m, ab * S + (1 - ab) * torch.eye(d, dtype=F64)).log_prob(x)
        + math.log(w)
        for m, S, w in zip(means, covs, weights)
    ]
    return torch.logsumexp(torch.stack(terms), dim=0)


def autograd_eps(means, covs, weights, ab, x):
    x = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(diffused_log_density(means, covs, weights, ab, x).sum(), x)
    return -(1 - ab).sqrt() * score


def empirical_cov(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    xc = x - x.mean(0)
    return xc.T @ xc / (x.shape[0] - 1)


# ------------------------------------------------------------------------------------------------
# closed-form eps
# ------------------------------------------------------------------------------------------------
def test_gaussian_prior_interface():
    g = torch.Generator().manual_seed(0)
    prior = GaussianPrior(torch.zeros(1, 4, 4, dtype=F64), cov=random_cov(16, g))
    assert (prior.channels, prior.resolution, prior.shape, prior.dim) == (1, 4, (1, 4, 4), 16)
    assert prior.identity == "gaussian:dim=16" and prior.digest == ""
    assert prior.num_timesteps == 1000
    ab = prior.schedule.alphas_cumprod
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    assert torch.allclose(ab, torch.cumprod(1 - betas, 0).double(), rtol=1e-5)
    assert torch.allclose(prior.scheduler.alphas_cumprod.double(), ab)
    # float32 in, float32 out; t as a scalar, a (1,) or a (B,) tensor; no graph (frozen prior)
    x = torch.randn(3, 1, 4, 4, generator=g)
    out = prior.eps(x, torch.tensor(10))
    assert out.dtype == torch.float32 and out.shape == x.shape and not out.requires_grad
    assert torch.equal(out, prior.eps(x, torch.full((3,), 10)))
    assert torch.equal(out, prior.eps(x, torch.tensor([10])))
    assert torch.allclose(prior.eps(x.double(), torch.full((3,), 10)).float(), out, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        prior.eps(torch.zeros(2, 1, 2, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="either"):
        GaussianPrior(torch.zeros(4), cov=torch.eye(4), cov_diag=torch.ones(4), shape=(1, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        GaussianPrior(torch.zeros(4), cov=torch.eye(4))


def test_gaussian_eps_matches_autograd_score():
    g = torch.Generator().manual_seed(1)
    D = 16
    m = 0.3 * torch.randn(D, generator=g, dtype=F64)
    S = random_cov(D, g)
    prior = GaussianPrior(m.reshape(1, 4, 4), cov=S)
    t = torch.tensor([0, 1, 10, 250, 500, 999])
    x = torch.randn(len(t), 1, 4, 4, generator=g, dtype=F64)
    ab = prior.schedule.alphas_cumprod[t]
    want = torch.stack([autograd_eps([m], [S], [1.0], ab[i], x[i].reshape(-1)) for i in range(len(t))])
    got = prior.eps(x, t).reshape(len(t), -1)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-10)
    # the base class's score / x0 follow from eps
    assert torch.allclose(prior.score(x, t).reshape(len(t), -1), -want / (1 - ab[:, None]).sqrt(), rtol=1e-9)
    x0 = prior.x0(x, t).reshape(len(t), -1)
    assert torch.allclose(x0, (x.reshape(len(t), -1) - (1 - ab[:, None]).sqrt() * want) / ab[:, None].sqrt(),
                          rtol=1e-9, atol=1e-10)
    # log_prob is the diffused density
    lp = prior.log_prob(x, t)
    want_lp = torch.stack([diffused_log_density([m], [S], [1.0], ab[i], x[i].reshape(-1)) for i in range(len(t))])
    assert torch.allclose(lp, want_lp, rtol=1e-10)


def test_lowrank_plus_diagonal_equals_full_cov():
    g = torch.Generator().manual_seed(2)
    U = 0.2 * torch.randn(16, 3, generator=g, dtype=F64)
    d = 0.01 + 0.01 * torch.rand(16, generator=g, dtype=F64)
    m = torch.randn(16, generator=g, dtype=F64) * 0.1
    low = GaussianPrior(m, cov_factor=U, cov_diag=d, shape=(1, 4, 4))
    full = GaussianPrior(m, cov=U @ U.T + torch.diag(d), shape=(1, 4, 4))
    x = torch.randn(4, 1, 4, 4, generator=g, dtype=F64)
    t = torch.tensor([3, 100, 600, 999])
    assert torch.allclose(low.eps(x, t), full.eps(x, t), rtol=1e-10, atol=1e-12)
    # a purely diagonal prior is eps = sqrt(1-ab) (x - sqrt(ab) m) / (ab d + 1 - ab), elementwise
    diag = GaussianPrior(m, cov_diag=d, shape=(1, 4, 4))
    ab = diag.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    want = (1 - ab).sqrt() * (x - ab.sqrt() * m.view(1, 1, 4, 4)) / (ab * d.view(1, 1, 4, 4) + 1 - ab)
    assert torch.allclose(diag.eps(x, t), want, rtol=1e-10)


def test_gaussian_eps_is_the_regression_of_eps_on_x_t():
    """Monte Carlo: E[eps | x_t] is linear in x_t for a Gaussian prior; least squares of eps on
    (x_t, 1) over many (x0, eps) pairs recovers the closed form's matrix and offset."""
    g = torch.Generator().manual_seed(3)
    D, N = 4, 200_000
    m = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=F64)
    S = random_cov(D, g, scale=0.3, floor=0.02)
    prior = GaussianPrior(m, cov=S, shape=(1, 2, 2))
    for t_int in (50, 300, 800):
        ab = prior.schedule.alphas_cumprod[t_int]
        x0 = prior.sample(N, g).reshape(N, D)
        eps = torch.randn(N, D, generator=g, dtype=F64)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        design = torch.cat([xt, torch.ones(N, 1, dtype=F64)], 1)
        coef = torch.linalg.lstsq(design, eps).solution  # (D + 1, D)
        P = (1 - ab).sqrt() * torch.linalg.inv(ab * S + (1 - ab) * torch.eye(D, dtype=F64))
        assert torch.allclose(coef[:D].T, P, atol=0.02), t_int
        assert torch.allclose(coef[D], -ab.sqrt() * P @ m, atol=0.02), t_int
        # and prior.eps agrees with the regression's predictions
        pred = design[:2000] @ coef
        got = prior.eps(xt[:2000].reshape(-1, 1, 2, 2), torch.full((2000,), t_int)).reshape(2000, D)
        assert (got - pred).pow(2).mean() < 1e-4 * eps.var()


def test_gmm_with_one_component_is_the_gaussian():
    g = torch.Generator().manual_seed(4)
    m = 0.2 * torch.randn(1, 4, 4, generator=g, dtype=F64)
    S = random_cov(16, g)
    gauss = GaussianPrior(m, cov=S)
    gmm = GaussianMixturePrior([1.0], m[None], covs=S[None])
    assert gmm.identity == "gmm:k=1,dim=16" and (gmm.channels, gmm.resolution) == (1, 4)
    x = torch.randn(5, 1, 4, 4, generator=g, dtype=F64)
    t = torch.tensor([0, 7, 300, 700, 999])
    assert torch.allclose(gmm.eps(x, t), gauss.eps(x, t), rtol=1e-10, atol=1e-12)
    assert torch.allclose(gmm.log_prob(x, t), gauss.log_prob(x, t), rtol=1e-10)
    assert torch.allclose(gmm.log_prob(x), gauss.log_prob(x), rtol=1e-10)
    mix = GaussianMixturePrior.from_components([1.0], [gauss])
    assert torch.allclose(mix.eps(x, t), gauss.eps(x, t), rtol=1e-10, atol=1e-12)


def test_gmm_eps_matches_autograd_of_the_mixture_density():
    g = torch.Generator().manual_seed(5)
    D = 8
    means = torch.stack([torch.full((D,), 0.5), torch.full((D,), -0.4)]).double()
    means += 0.1 * torch.randn(2, D, generator=g, dtype=F64)
    covs = torch.stack([random_cov(D, g), random_cov(D, g, scale=0.05)])
    w = [0.3, 0.7]
    U = [torch.linalg.cholesky(c) for c in covs]  # also exercise the factor form (diag left out)
    gmm = GaussianMixturePrior(w, means, cov_factors=U, shape=(2, 2, 2))
    t = torch.tensor([0, 5, 50, 200, 400, 999])
    x = 0.6 * torch.randn(len(t), 2, 2, 2, generator=g, dtype=F64)
    ab = gmm.schedule.alphas_cumprod[t]
    want = torch.stack([autograd_eps(means, covs, w, ab[i], x[i].reshape(-1)) for i in range(len(t))])
    assert torch.allclose(gmm.eps(x, t).reshape(len(t), -1), want, rtol=1e-8, atol=1e-10)
    r = gmm.responsibilities(x, t)
    assert r.shape == (len(t), 2) and torch.allclose(r.sum(1), torch.ones(len(t), dtype=F64))
    # far from both modes, at low noise: responsibilities saturate without NaNs (log space)
    far = torch.full((2, 2, 2, 2), 30.0, dtype=F64)
    far[1] = -30
    out = gmm.eps(far, torch.tensor([0, 0]))
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------
# samplers on the analytic prior
# ------------------------------------------------------------------------------------------------
def test_ddpm_ancestral_sampling_reproduces_the_gaussian():
    g = torch.Generator().manual_seed(6)
    D, N = 4, 2000
    m = torch.tensor([0.4, -0.3, 0.1, 0.2], dtype=F64)
    S = random_cov(D, g, scale=0.1, floor=0.01)
    prior = GaussianPrior(m, cov=S, shape=(1, 2, 2))
    ab = prior.schedule.alphas_cumprod
    alphas = ab / torch.cat([ab.new_ones(1), ab[:-1]])
    x = torch.randn(N, 1, 2, 2, generator=g, dtype=F64)
    for t in range(prior.num_timesteps - 1, -1, -1):
        eps = prior.eps(x, torch.tensor(t))
        x = (x - (1 - alphas[t]) / (1 - ab[t]).sqrt() * eps) / alphas[t].sqrt()
        if t > 0:
            var = (1 - alphas[t]) * (1 - ab[t - 1]) / (1 - ab[t])
            x = x + var.sqrt() * torch.randn(x.shape, generator=g, dtype=F64)
    x = x.reshape(N, D)
    se = (S.diagonal() / N).sqrt()
    assert ((x.mean(0) - m).abs() < 4 * se).all()
    C = empirical_cov(x)
    assert torch.linalg.matrix_norm(C - S) < 0.1 * torch.linalg.matrix_norm(S)
    assert gaussian_w2(x.mean(0), C, m, S) < 0.05 * S.trace().sqrt()


def ddim_affine_map(prior, num_steps: int):
    """Deterministic DDIM (eta = 0) with the prior's exact eps is an affine map x_T -> c + G x_T:
    push 0 and the basis vectors through the same DDIMScheduler that davi.models.prior.sample uses.
    With x_T ~ N(0, I) its output is exactly N(c, G G^T)."""
    from davi.models.prior import ddim_scheduler

    sched = ddim_scheduler(prior.schedule.alphas_cumprod)
    sched.set_timesteps(num_steps)
    D = prior.dim
    x = torch.cat([torch.zeros(1, D, dtype=F64), torch.eye(D, dtype=F64)]).reshape(D + 1, *prior.shape)
    for t in sched.timesteps:
        x = sched.step(prior.eps(x, torch.full((D + 1,), int(t))), t, x).prev_sample
    x = x.reshape(D + 1, D).double()
    return x[0], (x[1:] - x[0]).T


def test_ddim_converges_to_the_gaussian():
    """Exact (no Monte Carlo): DDIM's output law approaches the prior as steps grow. At 100 steps
    it is visibly under-dispersed on this narrow prior (DDIM is a first-order solver: the last
    steps shrink low-variance directions), which is what this suite is for finding."""
    g = torch.Generator().manual_seed(7)
    m = torch.tensor([0.2, -0.1, 0.0, 0.1], dtype=F64)
    S = random_cov(4, g, scale=0.03, floor=0.005)
    prior = GaussianPrior(m, cov=S, shape=(1, 2, 2))
    w2, trace = [], []
    for n in (10, 100, 1000):
        c, G = ddim_affine_map(prior, n)
        w2.append(gaussian_w2(c, G @ G.T, m, S) / S.trace().sqrt().item())
        trace.append(float((G @ G.T).trace() / S.trace()))
    assert w2[0] > w2[1] > w2[2] and w2[2] < 0.015
    assert trace[1] < 0.95 and 0.97 < trace[2] < 1.0


def test_ddim_sampler_on_the_gaussian_prior():
    """davi.models.prior.sample (DDIM, eta = 0, 100 steps, float32, diffusers) runs on the analytic prior
    unchanged and draws from the law the affine map predicts (Monte Carlo tolerance)."""
    from davi.models.prior import sample

    g = torch.Generator().manual_seed(7)
    D, N = 4, 2000
    m = torch.tensor([0.2, -0.1, 0.0, 0.1], dtype=F64)
    S = random_cov(D, g, scale=0.03, floor=0.005)  # well inside [-1, 1]: sample() clamps
    prior = GaussianPrior(m, cov=S, shape=(1, 2, 2))
    x = sample(prior, N, num_steps=100, generator=g).double().reshape(N, D)
    c, G = ddim_affine_map(prior, 100)
    C_pred = G @ G.T
    se = (C_pred.diagonal() / N).sqrt()
    assert ((x.mean(0) - c).abs() < 4 * se).all()
    assert torch.linalg.matrix_norm(empirical_cov(x) - C_pred) < 0.1 * torch.linalg.matrix_norm(C_pred)


def test_red_diff_on_the_gaussian_prior_gets_closer_to_the_exact_posterior_mean():
    """RED-Diff starts at pinv(y) (exactly consistent, blind to the prior) and must end nearer the exact
    posterior mean, on every image. Adam's step does not shrink with the gradient, so a small lr is needed
    for the last iterates to settle (at the benchmarks' lr 0.25 it ends ~lr away from any fixed point)."""
    from davi.solvers.red_diff import RedDiff

    g = torch.Generator().manual_seed(8)
    prior = GaussianPrior(torch.zeros(1, 8, 8, dtype=F64), cov=random_cov(64, g, scale=0.1))
    op = build_operator(OperatorConfig(name="sr", scale=2), 8, 1)
    x0 = prior.sample(4, g)
    y = op.measure(x0, g)
    mean, _ = exact_posterior(prior, op, y)
    err = lambda x: (x - mean).flatten(1).norm(dim=1) / mean.flatten(1).norm(dim=1)  # noqa: E731
    out = RedDiff(prior, op, steps=300, lr=0.01, lam=0.25)(y)
    assert out.shape == x0.shape and torch.isfinite(out).all()
    assert (err(out) < 0.85 * err(op.pinv(y))).all(), (err(out), err(op.pinv(y)))


# ------------------------------------------------------------------------------------------------
# exact posteriors
# ------------------------------------------------------------------------------------------------
def _stripe_mask_file() -> str:
    """An 8x8 mask file for the file-defined inpainting operator: a diagonal band is missing."""
    import tempfile

    import numpy as np

    i, j = np.indices((8, 8))
    path = Path(tempfile.mkdtemp(prefix="davi_mask_")) / "mask.npy"
    np.save(path, (np.abs(i - j) > 1).astype(np.float32))
    return str(path)


OPERATOR_CASES = {
    "deblur": OperatorConfig(name="deblur", kernel_size=3, kernel_std=1.0),
    "inpaint": OperatorConfig(name="inpaint", mask_file=_stripe_mask_file()),
    "sr": OperatorConfig(name="sr", scale=2),
    "box_inpaint": OperatorConfig(name="box_inpaint", box_size=4),
    "random_inpaint": OperatorConfig(name="random_inpaint", drop_fraction=0.5, mask_seed=0),
    "denoise": OperatorConfig(name="denoise"),
}


def test_every_operator_is_covered():
    from davi.operators import OPERATORS

    assert set(OPERATOR_CASES) == set(OPERATORS)


@pytest.mark.parametrize("name", sorted(OPERATOR_CASES))
def test_exact_posterior_matches_the_information_form(name):
    g = torch.Generator().manual_seed(9)
    D, shape = 64, (1, 8, 8)
    op = build_operator(OPERATOR_CASES[name], 8, 1)
    m = 0.2 * torch.randn(D, generator=g, dtype=F64)
    S = random_cov(D, g, scale=0.1, floor=0.01)
    prior = GaussianPrior(m, cov=S, shape=shape)

    A = operator_matrix(op, shape)
    x = torch.randn(3, *shape, generator=g, dtype=F64)
    assert torch.allclose(A @ x.reshape(3, D).T, op(x).reshape(3, -1).T, atol=1e-12)
    yr = torch.randn(op.measurement_shape((3, *shape)), generator=g, dtype=F64)
    assert torch.allclose(A.T @ yr.reshape(3, -1).T, op.adjoint(yr).reshape(3, D).T, atol=1e-12)

    x0 = prior.sample(3, g)
    y = op.measure(x0, g)
    mean, cov = exact_posterior(prior, op, y)
    assert mean.shape == (3, *shape) and cov.shape == (D, D) and mean.dtype == F64

    s2 = op.sigma_y**2
    Si = torch.linalg.inv(S)
    P = torch.linalg.inv(Si + A.T @ A / s2)
    want_mean = (P @ (Si @ m[:, None] + A.T @ y.reshape(3, -1).T / s2)).T
    assert torch.allclose(cov, P, rtol=1e-7, atol=1e-10 * float(P.abs().max()))
    assert torch.allclose(mean.reshape(3, D), want_mean, rtol=1e-7, atol=1e-9)
    assert torch.allclose(cov, cov.T) and torch.linalg.eigvalsh(cov).min() > 0

    # normal equations, with the operator itself: A^T (A mu - y) / sigma^2 + S^{-1} (mu - m) = 0
    grad = op.adjoint(op(mean) - y) / s2 + (Si @ (mean.reshape(3, D) - m).T).T.reshape(mean.shape)
    scale = op.adjoint(y).abs().max() / s2
    assert grad.abs().max() < 1e-9 * scale


@pytest.mark.parametrize("name", ["box_inpaint", "random_inpaint", "inpaint"])
def test_exact_posterior_ignores_unobserved_pixels(name):
    """Inpainting's measurement has identically-zero rows of A (the dropped pixels): they carry no
    information, must not break the solve, even with sigma_y = 0."""
    g = torch.Generator().manual_seed(10)
    D, shape = 64, (1, 8, 8)
    cfg = OPERATOR_CASES[name]
    op = build_operator(cfg, 8, 1)
    prior = GaussianPrior(torch.zeros(D, dtype=F64), cov=random_cov(D, g, scale=0.1, floor=0.01), shape=shape)
    x0 = prior.sample(2, g)
    y = op.measure(x0, g)
    mean, cov = exact_posterior(prior, op, y)
    hole = op.mask.reshape(-1) == 0
    y_junk = y.clone().reshape(2, -1)
    y_junk[:, hole] = 5.0
    mean_junk, cov_junk = exact_posterior(prior, op, y_junk.reshape(y.shape))
    assert torch.equal(mean, mean_junk) and torch.equal(cov, cov_junk)

    exact = build_operator(OperatorConfig(**{**cfg.__dict__, "sigma_y": 0.0}), 8, 1)
    y0 = exact.measure(x0, g)
    mean0, cov0 = exact_posterior(prior, exact, y0)
    assert torch.isfinite(mean0).all() and torch.isfinite(cov0).all()
    seen = ~hole
    assert torch.allclose(mean0.reshape(2, -1)[:, seen], x0.reshape(2, -1)[:, seen], atol=1e-10)
    assert cov0[seen].abs().max() < 1e-10 and cov0[:, seen].abs().max() < 1e-10
    assert torch.linalg.eigvalsh(cov0[hole][:, hole]).min() > 0


def test_exact_posterior_gmm():
    g = torch.Generator().manual_seed(11)
    D, shape = 16, (1, 4, 4)
    means = torch.stack([torch.full((D,), 0.4), torch.full((D,), -0.4)]).double()
    covs = torch.stack([random_cov(D, g, scale=0.05), random_cov(D, g, scale=0.05)])
    w = torch.tensor([0.4, 0.6], dtype=F64)
    gmm = GaussianMixturePrior(w, means, covs=covs, shape=shape)
    op = build_operator(OperatorConfig(name="sr", scale=2, sigma_y=0.3), 4, 1)
    x0 = gmm.sample(3, g)
    y = op.measure(x0, g)
    weights, post_means, post_covs = exact_posterior_gmm(gmm, op, y)
    assert weights.shape == (3, 2) and post_means.shape == (3, 2, *shape) and post_covs.shape == (2, D, D)
    assert torch.allclose(weights.sum(1), torch.ones(3, dtype=F64))

    A = operator_matrix(op, shape)
    yf = y.reshape(3, -1)
    logw = torch.stack([
        torch.distributions.MultivariateNormal(A @ means[k], A @ covs[k] @ A.T + op.sigma_y**2 * torch.eye(4,
                                               dtype=F64)).log_prob(yf) + w[k].log()
        for k in range(2)], 1)
    assert torch.allclose(weights, torch.softmax(logw, 1), rtol=1e-9, atol=1e-12)
    for k in range(2):
        mk, ck = exact_posterior(gmm.component(k), op, y)
        assert torch.allclose(post_means[:, k], mk, rtol=1e-10, atol=1e-12)
        assert torch.allclose(post_covs[k], ck, rtol=1e-10, atol=1e-12)
    # a Gaussian prior is a one-component mixture
    w1, m1, c1 = exact_posterior_gmm(gmm.component(0), op, y)
    assert torch.equal(w1, torch.ones(3, 1, dtype=F64)) and torch.allclose(m1[:, 0], post_means[:, 0])


# ------------------------------------------------------------------------------------------------
# fitting
# ------------------------------------------------------------------------------------------------
def test_fit_gaussian_recovers_a_lowrank_plus_diagonal_model():
    g = torch.Generator().manual_seed(12)
    D, N = 16, 20_000
    U = 0.3 * torch.randn(D, 2, generator=g, dtype=F64)
    d = torch.full((D,), 0.01, dtype=F64)
    true = GaussianPrior(0.1 * torch.randn(D, generator=g, dtype=F64), cov_factor=U, cov_diag=d, shape=(1, 4, 4))
    x = true.sample(N, g)
    x[:, 0, 0, 0] = -1.0  # a constant pixel, as on a digit's border
    fit = fit_gaussian(x, rank=2, min_var=1e-4)
    assert fit.identity == "gaussian:dim=16,rank=2"
    S = true.cov.clone()
    S[0, :] = 0
    S[:, 0] = 0
    S[0, 0] = 1e-4
    assert torch.linalg.matrix_norm(fit.cov - S) < 0.05 * torch.linalg.matrix_norm(S)
    assert fit.cov[0, 0] == 1e-4
    assert torch.allclose(fit.mean[1:], true.mean[1:], atol=0.01) and fit.mean[0] == -1
    with pytest.raises(ValueError, match="rank"):
        fit_gaussian(x[:5], rank=5)


def test_stationary_gaussian_is_stationary_full_rank_and_not_fitted():
    prior = stationary_gaussian(resolution=5, mean=0.2, std=0.5, length_scale=2.0, nugget=1e-3)
    S, r = prior.cov, 5
    assert prior.shape == (1, 5, 5) and torch.all(prior.mean == 0.2)
    # Sigma_ij depends on the offset p_i - p_j only: every pair with the same offset has the same value
    seen = {}
    for i in range(r * r):
        for j in range(r * r):
            off = (i // r - j // r, i % r - j % r)
            seen.setdefault(off, []).append(float(S[i, j]))
    assert all(max(v) - min(v) < 1e-12 for v in seen.values())
    assert math.isclose(seen[(0, 0)][0], 0.25 + 1e-3) and math.isclose(seen[(0, 1)][0], 0.25 * math.exp(-1 / 8))
    assert float(prior.eigvals.min()) >= 1e-3 * (1 - 1e-9)  # full rank: the nugget bounds it below
    x = prior.sample(40_000, torch.Generator().manual_seed(0)).reshape(40_000, -1)
    assert torch.allclose(torch.cov(x.T), S, atol=0.01)
    with pytest.raises(ValueError, match="nugget"):
        stationary_gaussian(nugget=0.0)


def test_fit_gmm_from_labels_and_from_k():
    g = torch.Generator().manual_seed(13)
    a = 0.5 + 0.1 * torch.randn(300, 1, 2, 2, generator=g, dtype=F64)
    b = -0.5 + 0.1 * torch.randn(100, 1, 2, 2, generator=g, dtype=F64)
    x = torch.cat([a, b])
    labels = torch.tensor([7] * 300 + [3] * 100)
    gmm = fit_gmm(x, labels, rank=1)
    assert gmm.num_components == 2 and gmm.component_labels == (3, 7)
    assert torch.allclose(gmm.weights, torch.tensor([0.25, 0.75], dtype=F64))
    assert torch.allclose(gmm.means[0], b.reshape(100, -1).mean(0))
    assert torch.allclose(gmm.means[1], a.reshape(300, -1).mean(0))
    km = fit_gmm(x, 2, rank=1, generator=torch.Generator().manual_seed(0))
    assert sorted(km.weights.tolist()) == pytest.approx([0.25, 0.75])
    assert torch.isfinite(km.eps(x[:4], torch.tensor(500))).all()


def test_digit_mixture_identifies_the_digit():
    """Two classes of the bundled digits at 8 x 8: the exact posterior of a x2 down-sampled '1'
    puts its weight on the '1' component."""
    train, train_labels = digit_images((0, 1), resolution=8, per_class=100)
    assert train.shape == (200, 1, 8, 8) and train.dtype == F64 and train.min() >= -1 and train.max() <= 1
    gmm = fit_gmm(train, train_labels, rank=4)
    assert gmm.component_labels == (0, 1) and torch.allclose(gmm.weights, torch.full((2,), 0.5, dtype=F64))
    test, test_labels = digit_images((0, 1), resolution=8, split="test", per_class=3)
    op = build_operator(OperatorConfig(name="sr", scale=2), 8, 1)
    y = op.measure(test, torch.Generator().manual_seed(0))
    weights, means, covs = exact_posterior_gmm(gmm, op, y)
    assert torch.equal(weights.argmax(1), test_labels)
    assert weights.max(1).values.min() > 0.9


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
def test_gaussian_w2():
    g = torch.Generator().manual_seed(14)
    m = torch.randn(5, generator=g, dtype=F64)
    S = random_cov(5, g)
    assert gaussian_w2(m, S, m, S) < 1e-7
    # 1-D: W2^2 = (m1 - m2)^2 + (s1 - s2)^2
    w = gaussian_w2(torch.tensor([0.3], dtype=F64), torch.tensor([[4.0]], dtype=F64), torch.tensor([-0.1], dtype=F64),
                    torch.tensor([[0.25]], dtype=F64))
    assert w == pytest.approx(math.sqrt(0.4**2 + (2.0 - 0.5) ** 2), rel=1e-12)
    # commuting (diagonal) covariances: coordinatewise
    d1, d2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    assert gaussian_w2(torch.zeros(3), torch.diag(d1), torch.ones(3), torch.diag(d2)) == pytest.approx(
        math.sqrt(3 + 1 + 1), rel=1e-12)
    # symmetric, and a pure shift is the mean distance
    S2 = random_cov(5, g)
    assert gaussian_w2(m, S, 0 * m, S2) == pytest.approx(gaussian_w2(0 * m, S2, m, S), rel=1e-9)
    assert gaussian_w2(m, S, m + 0.5, S) == pytest.approx(0.5 * math.sqrt(5), rel=1e-6)


def test_sliced_wasserstein():
    g = torch.Generator().manual_seed(15)
    a = torch.randn(500, 1, 2, 2, generator=g, dtype=F64)
    assert sliced_wasserstein(a, a, 64, torch.Generator().manual_seed(0)) == 0.0
    # in 1-D every projection is +-1: a shift of 0.5 is exactly 0.5
    x = torch.randn(300, 1, generator=g, dtype=F64)
    assert sliced_wasserstein(x, x + 0.5, 8, torch.Generator().manual_seed(0)) == pytest.approx(0.5, rel=1e-12)
    dists = [sliced_wasserstein(a, a + s, 128, torch.Generator().manual_seed(0)) for s in (0.1, 0.3, 1.0)]
    assert dists[0] < dists[1] < dists[2]
    b = torch.randn(800, 1, 2, 2, generator=g, dtype=F64)  # unequal sizes, same law: small
    assert sliced_wasserstein(a, b, 128, torch.Generator().manual_seed(0)) < 0.15 < dists[2]


def test_variance_ratios():
    g = torch.Generator().manual_seed(16)
    S = random_cov(6, g, scale=0.5)
    prior = GaussianPrior(torch.zeros(6, dtype=F64), cov=S, shape=(1, 2, 3))
    x = prior.sample(20_000, g)
    r = variance_ratios(x, S, top_k=3)
    assert r["trace"] == pytest.approx(1.0, abs=0.05)
    assert r["top"].shape == (3,) and torch.allclose(r["top"], torch.ones(3, dtype=F64), atol=0.06)
    assert (r["eigenvalues"][:-1] >= r["eigenvalues"][1:]).all()
    half = variance_ratios(0.5 * x, S, top_k=3)
    assert half["trace"] == pytest.approx(0.25, abs=0.02)
    assert torch.allclose(half["top"], torch.full((3,), 0.25, dtype=F64), atol=0.02)


def test_mode_coverage():
    g = torch.Generator().manual_seed(17)
    D = 4
    w = torch.tensor([0.3, 0.7], dtype=F64)
    means = torch.stack([torch.full((D,), 1.0), torch.full((D,), -1.0)]).double()
    covs = torch.stack([0.05 * torch.eye(D), 0.1 * torch.eye(D)]).double()
    gmm = GaussianMixturePrior(w, means, covs=covs, shape=(1, 2, 2))
    x = gmm.sample(4000, g)
    cov = mode_coverage(x, w, means, covs)
    assert cov["fractions"].sum() == pytest.approx(1.0)
    assert torch.allclose(cov["fractions"], w, atol=0.03) and cov["tv"] < 0.03
    collapsed = mode_coverage(-torch.ones(10, 1, 2, 2, dtype=F64), w[None], means, covs)  # all on mode 2
    assert torch.equal(collapsed["fractions"], torch.tensor([0.0, 1.0], dtype=F64))
    assert collapsed["tv"] == pytest.approx(0.3)
