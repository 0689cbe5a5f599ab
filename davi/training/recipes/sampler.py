"""The sampler objective (``davi.objective: sampler``): DAVI's mapper trained as a posterior sampler.

Same networks, bridge inputs and alternation as the paired objective (:mod:`davi.training.recipes.davi`;
DAVI, Lee et al. 2024, Alg. 1). It differs where the paired objective's optimum is not the
posterior (docs/posterior_check.md derives this in closed form for Gaussian priors):

1. no paired regression term (``davi.lambda_reg`` must be 0): averaged over p(x0 | y) it adds
   lambda_reg (||mu - E[x0|y]||^2 + tr C) / D, pulling every sample to the posterior mean;
2. the consistency weight is derived from sigma_y, not tuned:
   ``lambda = w_bar M / (2 D sigma_y^2)`` (:func:`davi.training.losses.sampler_consistency_weight`, where the
   derivation is), so that the mapper loss is proportional to KL(q || p(x | y)) as t_ikl -> 1;
   ``davi.lambda_con`` is not read;
3. s_psi learns by denoising score matching on t < t_ikl only, the t the IKL reads (with a small
   t_ikl, t uniform over all T would spend 95-99% of its updates where the IKL never looks);
4. the derivation in 2. needs the IKL of one measurement's samples, E_y KL(q_t(. | y) || p_t). An
   unconditional s_psi learns the score of the samples pooled over all y instead, whose KL any split
   of the prior's spread between the mean map and the per-y spread minimises; with
   ``davi.score_condition: center`` s_psi sees x_t - sqrt(ab_t) c(y) and c(y) (c: the mapper's
   noise-free output) and learns the score of q(x_t | y) (docs/sampler.md, measured there);
5. optionally (``davi.lambda_mean``) a mean-matching term, ``mean((x_hat - x0)(x_hat' - x0))`` over two
   independent samples for the same y (:func:`davi.training.losses.mean_matching_loss`): minimised by any
   sampler whose mean is E[x | y], whatever its spread, so the posterior stays the optimum while the
   mean gets a direct gradient (the IKL's reaches it only through s_psi, which lags the mapper).

The mapper's randomness must not be mixed into the measurement much: with ``mapper.noise_channels: 0`` it is
only ``h z`` ADDED TO lift(y), which reaches the samples through the same posterior gain as y, so a mapper
with the posterior's mean has at least ``h^2 G G^T`` of covariance (G: the posterior gain). Per measured
pixel that is about ``h^2 / sigma_y^2`` of the posterior's variance: 4x at h 0.1, sigma_y 0.05, which a
prior that predicts the measured pixels well (docs/family.md: a smooth stationary prior) cannot hide.
:func:`check_input_noise` warns; the remedy is ``h <= sigma_y / 2`` with ``noise_channels >= 1``.

The bias of the diffused KL grows with t_ikl (within 1% of the exact posterior at t_ikl <= 10,
4.4% at 50, 11-22% at 400 on the 8x8 Gaussian benchmark), so the presets use a small one.
"""

from __future__ import annotations

import math
import warnings

import torch

from davi.training.losses import (
    DDPMLoss,
    IKLLoss,
    consistency_loss,
    ikl_horizons,
    mean_matching_loss,
    sampler_consistency_weight,
)
from davi.training.recipe import Update
from davi.training.recipes.parts import ikl_term, measure_and_map, score_updates


def ikl_horizon(cfg, prior, sigma_y: float) -> int:
    """The run's IKL horizon: davi.t_ikl, or with davi.ikl_noise_ratio the number of t whose noise level is at
    most that ratio times sigma_y (davi.training.losses.ikl_horizons; at most t_ikl)."""
    if not cfg.davi.ikl_noise_ratio:
        return cfg.davi.t_ikl
    return int(ikl_horizons(prior.schedule.alphas_cumprod, torch.tensor([float(sigma_y)]), cfg.davi.ikl_noise_ratio,
                            cfg.davi.t_ikl)[0])


def consistency_weight(cfg, prior, operator) -> float:
    """The derived lambda of this run (image size D and measurement size M of one sample)."""
    shape = (1, cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
    D = math.prod(shape[1:])
    M = math.prod(operator.measurement_shape(shape)[1:])
    return sampler_consistency_weight(prior.schedule.alphas_cumprod.cpu(), ikl_horizon(cfg, prior, operator.sigma_y),
                                      operator.sigma_y, D, M)


# h z's forced share of a measured pixel's posterior variance is about (h / sigma_y)^2: at most 1/4 below.
INPUT_NOISE_RATIO = 1 / 2


def check_input_noise(cfg, sigma_y_min: float) -> str:
    """The warning (also returned; "" when none) for a sampler whose randomness is mostly ``h z`` added to the
    measurement (``mapper.h > sigma_y / 2`` at the smallest sigma_y) or that has none at unit scale
    (``mapper.noise_channels: 0``): the first forces h^2 G G^T of covariance on it (over-dispersion where the
    prior predicts the measured pixels; docs/family.md), the second leaves only h z to spread the unmeasured."""
    h, noise = cfg.mapper.h, cfg.mapper.noise_channels
    if h <= INPUT_NOISE_RATIO * sigma_y_min and noise >= 1:
        return ""
    text = (f"davi.objective=sampler with mapper.h={h} and mapper.noise_channels={noise} at sigma_y {sigma_y_min:g}: "
            f"h z is added to lift(y) and goes through the posterior gain like y, forcing about (h / sigma_y)^2 = "
            f"{(h / sigma_y_min) ** 2:.2g} of a measured pixel's posterior variance; for calibrated samples use "
            f"mapper.h <= {INPUT_NOISE_RATIO * sigma_y_min:.3g} and mapper.noise_channels >= 1 (docs/family.md)")
    warnings.warn(text, stacklevel=2)
    return text


def sampler_iteration(cfg, accelerator, prior, operator, ppb, teacher_eps):
    """``iteration(nets, batch)`` of the sampler objective (one generator call = one training iteration)."""
    dc, c = cfg.davi, cfg.data.channels
    schedule = prior.schedule
    t_ikl = ikl_horizon(cfg, prior, operator.sigma_y)
    dsm = DDPMLoss(schedule, t_max=t_ikl)
    ikl = IKLLoss(schedule, t_ikl)
    # lambda_ikl scales the whole objective (IKL + lambda* consistency), so the optimum stays the posterior
    lam = dc.lambda_ikl * consistency_weight(cfg, prior, operator)
    check_input_noise(cfg, operator.sigma_y)

    def iteration(nets, batch):
        x0 = batch["image"]
        y, lifted, x_hat, cond = measure_and_map(nets, accelerator, dc, schedule, operator, ppb, x0)

        yield from score_updates(nets, x_hat, dsm, dc.score_steps, accelerator, c, cond)

        l_ikl, logs = ikl_term(ikl, x_hat, teacher_eps, nets, accelerator, c, cond)
        l_con = consistency_loss(operator, y, x_hat)
        loss = dc.lambda_ikl * l_ikl + lam * l_con
        logs.update({"loss/consistency": l_con.item(), "sampler/lambda": lam})
        if dc.lambda_mean:
            # two independent samples at the inference input (x_hat is one when PPB is off)
            first = nets["mapper"](*ppb.at_inference(x0, lifted)) if ppb.enabled else x_hat
            l_mean = mean_matching_loss(x0, first, nets["mapper"](*ppb.at_inference(x0, lifted)))
            loss = loss + dc.lambda_mean * l_mean
            logs["loss/mean_matching"] = l_mean.item()
        yield Update("mapper", "mapper", loss, logs)

    return iteration
