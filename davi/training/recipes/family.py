"""One mapper for a family of degradations (``operator.family``): every training image draws its own
operator, parameters and sigma_y; a batch mixes them.

The networks, the bridge and the alternation are DAVI's (Lee et al. 2024, Alg. 1; the sampler objective
of :mod:`davi.training.recipes.sampler`). What changes with a family, so that the optimum stays the
posterior p(x | y, A, sigma_y) of every member:

1. the mapper is **conditioned** (``mapper.condition``, davi.models.conditioning): lift(y) alone does
   not say which member measured y;
2. the consistency weight is **per image**, derived from that image's own sigma_y and measurement size
   M_i: ``lambda_i = w_bar M_i / (2 D sigma_i^2)`` (:func:`davi.training.losses.sampler_consistency_weight`,
   where the derivation is): a shared weight would put the optimum of a noisy member off its posterior;
3. s_psi, which must learn the score of q(x | y) per member, sees the member's condition too (maps and
   vector as input channels, beside the ``center`` or ``lift`` conditioning, which a family requires).

With ``davi.objective: paired`` the same draws feed the paired objective (IKL + lambda_con consistency +
lambda_reg regression), e.g. as a warm start for the sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from davi.config import ConfigError
from davi.models.conditioning import Condition, family_condition, score_inputs
from davi.operators.family import OperatorBatch
from davi.training.losses import (
    DDPMLoss,
    IKLLoss,
    ikl_horizons,
    mean_matching_loss,
    regression_loss,
    sampler_consistency_weight,
)
from davi.training.recipe import Update
from davi.training.recipes.parts import (
    ikl_term,
    mapper_center,
    score_condition,
    score_updates,
)
from davi.training.recipes.sampler import check_input_noise


def check_family_config(cfg) -> None:
    """One-line ConfigErrors for settings a family cannot train with."""
    if cfg.davi.lambda_ikl > 0 and cfg.davi.score_condition == "none":
        raise ConfigError("davi.score_condition: a family needs s_psi conditioned on y (center or lift): "
                          "q(x | y) differs between members")


@dataclass
class FamilyDraw:
    """One batch's draw: its operators, measurements, lifts, condition and the mapper's samples."""

    operators: OperatorBatch
    ys: list
    lifted: torch.Tensor
    condition: Condition
    x_hat: torch.Tensor
    score_cond: object  # s_psi's input as a function of (x_t, t), or None


def measure_and_map_family(nets, accelerator, cfg, schedule, family, ppb, x0: torch.Tensor) -> FamilyDraw:
    """Draw an operator per image (from the global RNG: checkpointed, so a resumed run draws the same),
    measure, lift, condition, and run the mapper once (its graph kept for the mapper's update)."""
    ops = family.draw_many(x0.shape[0])
    batch = OperatorBatch(ops)
    ys = batch.measure(x0)
    lifted = batch.lift(ys)
    condition = family_condition(family, ops, x0, embedding=cfg.mapper.condition == "embedding")
    x_a, a = ppb(x0, lifted)
    x_hat = nets["mapper"](x_a, a, None, condition)
    vectors = torch.stack([family.condition_vector(op) for op in ops]).to(x0)
    cond = score_condition(cfg.davi, schedule, lifted,
                           lambda: mapper_center(nets, accelerator, ppb.mean(x0, lifted, a), a, condition),
                           extra=score_inputs(condition, vectors))
    return FamilyDraw(batch, ys, lifted, condition, x_hat, cond)


def consistency_weights(alphas_cumprod: torch.Tensor, t_ikl: int | torch.Tensor, draw: FamilyDraw) -> torch.Tensor:
    """(B,) the derived weight of each image, from its own sigma_y, measurement size and IKL horizon
    (``t_ikl``: one, or per image)."""
    D = math.prod(draw.x_hat.shape[1:])
    sigmas, sizes = draw.operators.sigma_y.tolist(), draw.operators.measurement_numel
    horizons = t_ikl.tolist() if isinstance(t_ikl, torch.Tensor) else [t_ikl] * len(sigmas)
    return torch.tensor([sampler_consistency_weight(alphas_cumprod, t, s, D, m)
                         for t, s, m in zip(horizons, sigmas, sizes)], device=draw.x_hat.device)


def family_iteration(cfg, accelerator, prior, family, ppb, teacher_eps):
    """``iteration(nets, batch)`` for a family: the sampler objective (or the paired one) with per-image
    operators, conditions and consistency weights."""
    dc, c = cfg.davi, cfg.data.channels
    schedule = prior.schedule
    sampler = dc.objective == "sampler"
    dsm = DDPMLoss(schedule, t_max=dc.t_ikl if sampler else None)
    ikl = IKLLoss(schedule, dc.t_ikl)
    alphas_cumprod = schedule.alphas_cumprod.cpu()
    if sampler:
        check_input_noise(cfg, family.sigma_lo)

    def iteration(nets, batch):
        x0 = batch["image"]
        draw = measure_and_map_family(nets, accelerator, cfg, schedule, family, ppb, x0)
        # each image's IKL horizon: the config's, or the t below its own noise level (davi.ikl_noise_ratio)
        horizons = (ikl_horizons(alphas_cumprod, draw.operators.sigma_y, dc.ikl_noise_ratio, dc.t_ikl)
                    if sampler and dc.ikl_noise_ratio else None)
        if "score" in nets:
            yield from score_updates(nets, draw.x_hat, dsm, dc.score_steps, accelerator, c, draw.score_cond, horizons)
        loss, logs = x0.new_zeros(()).float(), {}
        if "score" in nets:
            l_ikl, logs = ikl_term(ikl, draw.x_hat, teacher_eps, nets, accelerator, c, draw.score_cond, horizons)
            loss = loss + dc.lambda_ikl * l_ikl
        residual = draw.operators.residual(draw.ys, draw.x_hat)  # (B,) per image mean over its own M_i
        weights = (dc.lambda_ikl * consistency_weights(alphas_cumprod, dc.t_ikl if horizons is None else horizons,
                                                       draw) if sampler
                   else torch.full_like(residual, dc.lambda_con))
        loss = loss + (weights * residual).mean()
        logs.update({"loss/consistency": residual.mean().item(), "family/weight_mean": weights.mean().item()})
        if sampler and dc.lambda_mean:
            # two independent samples at the inference input (x_hat is one when PPB is off)
            first = _inference_sample(nets, ppb, x0, draw) if ppb.enabled else draw.x_hat
            l_mean = mean_matching_loss(x0, first, _inference_sample(nets, ppb, x0, draw))
            loss, logs["loss/mean_matching"] = loss + dc.lambda_mean * l_mean, l_mean.item()
        if not sampler and dc.lambda_reg:
            l_reg = regression_loss(x0, draw.x_hat)
            loss, logs["loss/regression"] = loss + dc.lambda_reg * l_reg, l_reg.item()
        yield Update("mapper", "mapper", loss, logs)

    return iteration


def _inference_sample(nets, ppb, x0: torch.Tensor, draw: FamilyDraw) -> torch.Tensor:
    """A fresh sample at the measurement end (a = T - 1) for the draw's measurements and condition."""
    x_a, a = ppb.at_inference(x0, draw.lifted)
    return nets["mapper"](x_a, a, None, draw.condition)


def family_validation(cfg, family, val_x0: torch.Tensor):
    """A fixed validation batch, each image with its own member (drawn with a fixed seed), and its report."""
    from davi.eval.metrics import psnr

    g = torch.Generator().manual_seed(12345)
    ops = family.draw_many(val_x0.shape[0], generator=g)
    batch = OperatorBatch(ops)
    ys = batch.measure(val_x0, generator=g)
    lifted = batch.lift(ys)
    condition = family_condition(family, ops, val_x0, embedding=cfg.mapper.condition == "embedding")
    B, C, H, W = val_x0.shape
    val_z = torch.randn((cfg.log.num_samples, B, C + cfg.mapper.noise_channels, H, W), generator=g).to(val_x0)

    @torch.no_grad()
    def validate(accelerator, ema_mapper, step):
        samples = torch.stack([ema_mapper.restore(lifted, z, condition=condition) for z in val_z]).clamp(-1, 1)
        std = samples.std(0) if len(samples) > 1 else torch.zeros_like(val_x0)
        scalars = {"psnr/lift": psnr(lifted, val_x0).mean().item(),
                   "psnr/sample": psnr(samples[0], val_x0).mean().item(),
                   "psnr/mean": psnr(samples.mean(0), val_x0).mean().item(),
                   "posterior_std": std.mean().item()}
        std_img = (std / std.amax().clamp_min(1e-8)) * 2 - 1
        return scalars, {"grid": torch.cat([lifted.clamp(-1, 1), *samples, std_img, val_x0]).clamp(-1, 1)}

    return validate
