"""Recipe ``unpaired``: a DAVI mapper trained from measurements alone (no clean image anywhere).

DAVI's mapper objective (Lee et al. 2024, Alg. 1) uses the clean image x0 twice: in the paired
regression ``lambda_reg * mse(x0, x_hat)`` and as the clean end of the Perturbed Posterior Bridge,
``x_a = mu_x0[a] x0 + mu_x1[a] lift(y) + h (1 - alpha_bar[a]) z``. Neither is needed for the
variational part: the integral KL against the frozen prior and measurement consistency read only
the mapper's output and ``y``. One iteration on a batch ``{"y", "index"[, "anchor"]}``:

1. bridge input: with anchors (the RED-Diff solution of each measurement, Mardani et al. 2023,
   from ``davi anchors``) the bridge runs from the anchor to ``lift(y)``,
   ``x_a = mu_x0[a] anchor + mu_x1[a] lift(y) + ...``, ``a ~ T Beta(ppb_alpha, ppb_beta)``;
   without anchors the bridge is off: ``x_a = lift(y) + h z`` at ``a = T - 1``, the inference input;
2. ``davi.score_steps`` denoising-score-matching steps of s_psi on stopgrad(x_hat), as paired;
3. the mapper: ``lambda_ikl * IKL + lambda_con * mse(y, A x_hat) + lambda_anchor * mse(anchor, x_hat)``
   (``davi.lambda_con`` as the paired config's; the anchor regression is optional, 0 by default).

The batches come from :class:`davi.data.measurements.MeasurementDataset` (``Recipe.train_set``), whose
items carry no ``"image"``; validation shows the first training measurements, their lift and
samples, and reports the consistency residual (there is no clean image to compute a PSNR with).
"""

from __future__ import annotations

from pathlib import Path

import torch

from davi.builders import prior_from_config
from davi.config import Config
from davi.data.anchors import load_anchors
from davi.data.measurements import load_measurements
from davi.io.export import export_mapper, make_card
from davi.io.images import display_measurement
from davi.models.mapper import PPBSampler
from davi.operators import build_operator
from davi.training.losses import DDPMLoss, IKLLoss, consistency_loss, regression_loss
from davi.training.recipe import Recipe, Update
from davi.training.recipes.davi import build_networks, check_prior_fits_data
from davi.training.recipes.parts import (
    ikl_and_consistency,
    mapper_center,
    score_condition,
    score_updates,
)


def unpaired_recipe(cfg: Config, accelerator, prior=None) -> Recipe:
    device = accelerator.device
    prior = prior_from_config(cfg) if prior is None else prior
    check_prior_fits_data(prior, cfg)
    prior.to(device)
    operator = build_operator(cfg.operator, cfg.data.resolution, cfg.data.channels).to(device)
    data = load_measurements(cfg, operator)
    if cfg.unpaired.anchors:
        data = data.with_anchors(load_anchors(cfg.unpaired.anchors, data))
    networks, lrs = build_networks(cfg, prior)
    ppb = PPBSampler(networks["mapper"], prior.schedule.alphas_cumprod, cfg.mapper.h, cfg.davi.ppb_alpha,
                     cfg.davi.ppb_beta, enabled=cfg.davi.ppb and data.anchors is not None)

    def teacher_eps(x_t, t):
        with accelerator.autocast():
            return prior.eps(x_t, t)

    iteration = _measurement_objective(cfg, accelerator, prior, operator, ppb, teacher_eps)

    def finish(ema_mapper, out, step):
        card = {**make_card(cfg, prior, operator, step), "objective": "unpaired",
                "measurements": {"source": data.source, "count": len(data), "digest": data.digest,
                                 "anchors": cfg.unpaired.anchors or None}}
        export_mapper(ema_mapper, Path(out) / "export", card)

    return Recipe(networks=networks, lrs=lrs, ema_network="mapper", iteration=iteration,
                  frozen_until={"mapper": cfg.davi.score_warmup},
                  validate=_validation(cfg, operator, data.y[: cfg.log.num_val], device), finish=finish,
                  train_set=data)


def _measurement_objective(cfg: Config, accelerator, prior, operator, ppb, teacher_eps):
    c, dc, uc = cfg.data.channels, cfg.davi, cfg.unpaired
    dsm = DDPMLoss(prior.schedule.to(accelerator.device))
    ikl = IKLLoss(prior.schedule, dc.t_ikl)

    def iteration(nets, batch):
        # 1. bridge input from the anchor (or the inference input), one mapper forward
        y = batch["y"]
        lifted = operator.lift(y)
        anchor = batch.get("anchor")
        if anchor is not None:
            x_a, a = ppb(anchor, lifted)
            x_mean = ppb.mean(anchor, lifted, a)
        else:
            mapper = accelerator.unwrap_model(nets["mapper"])
            x_a = mapper.inference_input(lifted, torch.randn_like(lifted))
            a = torch.full((y.shape[0],), mapper.num_timesteps - 1, dtype=torch.long, device=y.device)
            x_mean = lifted
        x_hat = nets["mapper"](x_a, a)

        # 2. s_psi learns the score of the mapper's current samples
        cond = score_condition(dc, ikl.schedule, lifted, lambda: mapper_center(nets, accelerator, x_mean, a))
        if "score" in nets:
            yield from score_updates(nets, x_hat, dsm, dc.score_steps, accelerator, c, cond)

        # 3. the mapper: integral KL to the frozen prior, consistency, optional anchor regression
        loss, logs = ikl_and_consistency(dc, ikl, x_hat, y, operator, teacher_eps, nets, accelerator, c, cond)
        if uc.lambda_anchor != 0 and anchor is not None:
            l_anchor = regression_loss(anchor, x_hat)
            loss = loss + uc.lambda_anchor * l_anchor
            logs["loss/anchor"] = l_anchor.item()
        yield Update("mapper", "mapper", loss, logs)

    return iteration


def _validation(cfg: Config, operator, val_y: torch.Tensor, device):
    """The first training measurements: lift, samples and their spread, and the consistency residual."""
    val_y = val_y.to(device)
    g = torch.Generator().manual_seed(12345)
    z_channels = cfg.data.channels + cfg.mapper.noise_channels
    val_z = torch.randn((cfg.log.num_samples, len(val_y), z_channels, cfg.data.resolution, cfg.data.resolution),
                        generator=g).to(device)

    @torch.no_grad()
    def validate(accelerator, ema_mapper, step):
        lifted = operator.lift(val_y)
        samples = torch.stack([ema_mapper.restore(lifted, z) for z in val_z]).clamp(-1, 1)
        std = samples.std(0) if len(samples) > 1 else torch.zeros_like(lifted)
        scalars = {"consistency/sample": consistency_loss(operator, val_y, samples[0]).item(),
                   "consistency/lift": consistency_loss(operator, val_y, lifted).item(),
                   "posterior_std": std.mean().item()}
        std_img = (std / std.amax().clamp_min(1e-8)) * 2 - 1
        rows = [display_measurement(val_y, lifted), lifted, *samples, std_img]
        return scalars, {"grid": torch.cat(rows).clamp(-1, 1)}

    return validate
