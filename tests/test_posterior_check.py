"""Regression guard for the exact-posterior check (benchmarks/posterior.py, docs/posterior_check.md).

DAVI trained against a closed-form Gaussian prior (4x4 digits) on SR x2 must land near the EXACT
posterior: sample mean and spread are compared with the Kalman posterior of davi.analytic. The
closed-form optimum of DAVI's own objective (``davi_fixed_point``), which the benchmark uses to
explain where DAVI lands, is checked to be a stationary point of that objective.
"""

from __future__ import annotations

import pytest
import torch

from davi.analytic import (
    davi_fixed_point,
    davi_objective,
    digit_images,
    exact_posteriors,
    fit_gaussian,
    mapper_samples,
    posterior_figures,
)

# The fast configuration: 4x4 digits (D = 16), rank-4 Gaussian, SR x2 (2x2 measurements), sigma_y 0.05,
# a [8, 16] UNet, 150 steps of batch 64, t_ikl = 1000, lambda_con = 3, lambda_reg = 0.
RES, STEPS, T_IKL, LAMBDA_CON = 4, 150, 1000, 3.0
NUM_Y, NUM_SAMPLES = 8, 512

# Tolerances, from measurements of exactly this configuration (one thread, seeds 0, 1, 2):
#   trained mapper: mean err 0.124, 0.126, 0.129 (relative error of the sample mean, averaged over the 8 y's);
#                   var ratio tr(C_hat) / tr(C) 0.72, 0.70, 0.68;
#   for reference:  exact-posterior samples 0.01 / 1.0; the optimum of DAVI's objective at these settings
#                   (davi_fixed_point) 0.082 / 1.04 -- the rest of the gap is training (150 steps);
#                   lift(y) 0.30; untrained mapper 0.76 / 1.87; IKL off (lambda_ikl = 0) 0.62 / 0.75.
# MEAN_TOL leaves a 40% margin over the worst measured value and sits well below lift(y) and every
# broken variant; the variance floor sits ~20% below the lowest measured ratio (0.68), so it rejects the
# collapsing sampler of docs/posterior_check.md (0.49) and anything closer to a point mass; the top
# excludes the untrained mapper's 1.87.
MEAN_TOL = 0.18
VAR_BAND = (0.55, 1.5)
# Top-5 eigen-direction variance ratios (v_i^T C_hat v_i / lambda_i): measured 0.118-1.124 (seed 0); a sampler
# collapsed along any of the posterior's main directions goes below 0.06, one blown up past 2.
TOP5_BAND = (0.06, 2.0)

# The sampler objective (davi.objective=sampler, t_ikl 20, derived weight 2.23) at the same budget, from scratch,
# with s_psi conditioned on the measurement (davi.score_condition=center), PPB off and mean matching
# (davi.lambda_mean=0.3): measured mean err 0.064, 0.050, 0.049, var ratio 0.78, 0.91, 0.92, top-5 0.45-1.58,
# 0.70-1.35, 0.69-1.15 (seeds 0, 1, 2). Without mean matching: 0.077 / 0.066 / 0.079, 0.72 / 0.82 / 0.69. With an
# unconditional s_psi (the marginal score, score_condition=none) the same run gives 0.108 / 0.33 / 0.12-0.57 and
# with s_psi seeing lift(y) 0.102 / 0.34: the variance floor of 0.5 (the paired objective's optimum is below 0.1,
# test_sampler.py) fails both. The mean tolerance leaves 40% over the worst seed (at this budget the runs
# without mean matching, 0.066-0.079, would pass it too: the mean term's gain shows at 8x8, docs/sampler.md).
# What this run cannot tell apart (the derived weight against davi.lambda_con or twice itself, mean matching on,
# off, or fed one draw twice) is pinned, in seconds, by tests/test_sampler.py's iteration tests on this same 4x4
# problem: the mapper loss's terms, and the closed-form optimum at the weight that loss applies.
SAMPLER_MEAN_TOL, SAMPLER_VAR_BAND, SAMPLER_TOP5_MIN = 0.09, (0.5, 1.5), 0.3


@pytest.fixture(scope="module")
def problem():
    """(prior, operator, y (NUM_Y measurements of held-out prior samples), exact posteriors)."""
    from davi.config import OperatorConfig
    from davi.operators import build_operator

    x, _ = digit_images(tuple(range(10)), resolution=RES)
    prior = fit_gaussian(x, rank=4)
    op = build_operator(OperatorConfig(name="sr", scale=2, sigma_y=0.05), RES, 1)
    g = torch.Generator().manual_seed(1)
    y = op.measure(prior.sample(NUM_Y, generator=g).float(), generator=g)
    return prior, op, y, exact_posteriors(prior, op, y)


def _config(out, *overrides):
    from davi.config import load_config

    return load_config(None, [
        "job=davi", f"train.output_dir={out}", f"data.resolution={RES}", "data.channels=1",
        "prior.block_out_channels=[8,16]", "prior.attention_levels=[]", "prior.norm_num_groups=8",
        "prior.attention_head_dim=8", "operator.name=sr", "operator.scale=2", "operator.sigma_y=0.05",
        "train.init_from_prior=false", "davi.lambda_reg=0", f"davi.lambda_con={LAMBDA_CON}", f"davi.t_ikl={T_IKL}",
        f"train.max_steps={STEPS}", "train.batch_size=64", "train.lr=2e-3", "davi.score_lr=2e-3",
        "train.ema_decay=0.99", "train.seed=0", f"train.checkpoint_every={STEPS}", "train.checkpoints_total_limit=1",
        "log.image_every=0", "log.progress=false", "log.num_val=4", "log.num_samples=2", *overrides])


def _check(samples, posts) -> tuple[float, float, bool]:
    """(mean err, var ratio, passed) of (n, B, D) samples against the exact posteriors."""
    f = posterior_figures(samples, posts)
    ok = f["mean_err"] <= MEAN_TOL and VAR_BAND[0] <= f["var_tr"] <= VAR_BAND[1]
    return f["mean_err"], f["var_tr"], ok


def test_davi_fixed_point_is_a_stationary_point_of_davi_objective(problem):
    """The closed form the benchmark uses to say what DAVI converges to: zero gradient in the mean, zero
    gradient in the covariance on its support, and a positive one (the variance would go below 0) on
    the directions it collapses; and it beats random perturbations."""
    prior, op, y, _ = problem
    for lam, t_ikl in ((0.3, 400), (3.0, 1000), (3.0, 20)):
        mu, C = davi_fixed_point(prior, op, y, lam, t_ikl)
        mu = mu.clone().requires_grad_(True)
        Cl = C.clone().requires_grad_(True)
        J = davi_objective(prior, op, y, mu, Cl, lam, t_ikl)
        J.backward()
        assert mu.grad.norm() < 1e-10
        e, U = torch.linalg.eigh(C)
        G = U.T @ Cl.grad @ U
        on = e > 1e-9 * e.max()
        assert G[on][:, on].abs().max() < 1e-10
        assert (G[~on][:, ~on].diagonal() > 0).all()
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            dm = 1e-2 * torch.randn(mu.shape, generator=g, dtype=torch.float64)
            B = 1e-2 * torch.randn(C.shape, generator=g, dtype=torch.float64)
            J2 = davi_objective(prior, op, y, mu.detach() + dm, C + B @ B.T, lam, t_ikl)
            assert J2 > J.detach()


def test_check_passes_exact_samples_and_fails_an_untrained_mapper(problem):
    from davi.models.mapper import Mapper
    from davi.models.prior import build_unet

    prior, op, y, posts = problem
    g = torch.Generator().manual_seed(0)
    exact = torch.stack([p.sample(NUM_SAMPLES, g) for p in posts], 1)
    err, var, ok = _check(exact, posts)
    assert ok and err < 0.03 and 0.9 < var < 1.1, (err, var)

    cfg = _config("unused")
    torch.manual_seed(0)
    untrained = Mapper.from_prior_unet(build_unet(cfg.prior, cfg.data), cfg.mapper.h, False, 1000).eval()
    err, var, ok = _check(mapper_samples(untrained, op, y, NUM_SAMPLES), posts)
    assert not ok and err > 2 * MEAN_TOL, (err, var)


@pytest.mark.slow
def test_trained_mapper_is_close_to_the_exact_posterior(problem, tmp_path):
    from davi.io.export import load_export
    from davi.training.recipes import davi_recipe
    from davi.training.loop import train

    prior, op, y, posts = problem
    images = prior.sample(8192, generator=torch.Generator().manual_seed(0)).float()
    out = train(_config(tmp_path / "run"), davi_recipe, prior=prior, train_images=images, val_images=images[:4])
    mapper, card, _ = load_export(out / "export")
    assert card["steps"] == STEPS and card["config"]["davi"]["lambda_reg"] == 0
    err, var, ok = _check(mapper_samples(mapper, op, y, NUM_SAMPLES, seed=2), posts)
    assert err <= MEAN_TOL, f"sample mean {err:.3f} from the exact posterior mean (tolerance {MEAN_TOL})"
    assert VAR_BAND[0] <= var <= VAR_BAND[1], f"variance ratio {var:.3f} outside {VAR_BAND}"
    f = posterior_figures(mapper_samples(mapper, op, y, NUM_SAMPLES, seed=2), posts)
    assert TOP5_BAND[0] <= f["var_top_min"] and f["var_top_max"] <= TOP5_BAND[1], (f["var_top_min"], f["var_top_max"])


@pytest.mark.slow
def test_sampler_objective_trains_towards_the_exact_posterior(problem, tmp_path):
    from davi.io.export import load_export
    from davi.training.recipes import davi_recipe
    from davi.training.loop import train

    prior, op, y, posts = problem
    images = prior.sample(8192, generator=torch.Generator().manual_seed(0)).float()
    cfg = _config(tmp_path / "run", "davi.objective=sampler", "davi.t_ikl=20", "davi.score_condition=center",
                  "davi.ppb=false", "davi.lambda_mean=0.3")
    out = train(cfg, davi_recipe, prior=prior, train_images=images, val_images=images[:4])
    mapper, card, _ = load_export(out / "export")
    assert card["objective"] == "sampler" and card["consistency_weight"] == pytest.approx(2.23, abs=0.01)
    f = posterior_figures(mapper_samples(mapper, op, y, NUM_SAMPLES, seed=2), posts)
    assert f["mean_err"] <= SAMPLER_MEAN_TOL, f["mean_err"]
    assert SAMPLER_VAR_BAND[0] <= f["var_tr"] <= SAMPLER_VAR_BAND[1], f["var_tr"]
    assert SAMPLER_TOP5_MIN <= f["var_top_min"] and f["var_top_max"] <= TOP5_BAND[1], (f["var_top_min"], f["var_top_max"])
