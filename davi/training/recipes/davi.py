"""Recipe ``davi``: alternate the implicit score network and the mapper (DAVI, Lee et al. 2024, Alg. 1).

One iteration:

1. draw clean images x0, measure y = A(x0) + sigma_y n, and a Perturbed Posterior Bridge input
   x_a; the mapper produces x_hat = I_phi(x_a, a) (its graph is kept for step 3);
2. **score updates** (mapper frozen): ``davi.score_steps`` AdamW steps on s_psi with denoising
   score matching on stopgrad(x_hat), t uniform over all T;
3. **mapper update** (s_psi and the teacher frozen, evaluated without gradients): one AdamW
   step on I_phi with ``lambda_ikl * IKL + lambda_con * mse(y, A x_hat) + lambda_reg * mse(x0, x_hat)``
   (the paired objective; the regression term is what needs clean images);
4. the loop updates the mapper's EMA.

This is ``davi.objective: paired``; ``davi.objective: sampler`` (:mod:`davi.training.recipes.sampler`) keeps
steps 1, 2 and 4 and changes what makes its optimum the posterior. ``davi.init_mapper`` warm-starts
the mapper from an export (either objective).

Step 2 uses the same x_hat as step 3, so each iteration runs the mapper forward once.
With ``lambda_ikl = 0`` the score network is not built at all (the regression ablation).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from davi.builders import prior_from_config, run_operator
from davi.config import Config, ConfigError
from davi.eval.metrics import psnr
from davi.io.export import export_mapper, load_export, make_card
from davi.io.images import display_measurement
from davi.models.mapper import Mapper, PPBSampler
from davi.models.prior import PriorError, with_extra_inputs
from davi.solvers.consistency import with_consistency
from davi.solvers.family_consistency import with_family_consistency
from davi.solvers.methods import DaviMethod
from davi.training.losses import DDPMLoss, IKLLoss, regression_loss
from davi.training.recipe import Recipe, Update
from davi.training.recipes.parts import (
    ikl_and_consistency,
    measure_and_map,
    score_updates,
)
from davi.training.recipes.family import check_family_config, family_iteration, family_validation
from davi.training.recipes.sampler import consistency_weight, sampler_iteration


def check_prior_fits_data(prior, cfg: Config) -> None:
    if prior.channels != cfg.data.channels or prior.resolution != cfg.data.resolution:
        raise PriorError(f"prior {cfg.prior.path} is {prior.channels}x{prior.resolution}x{prior.resolution} but "
                         f"data.channels={cfg.data.channels}, data.resolution={cfg.data.resolution}")


def build_networks(cfg: Config, prior, family=None) -> tuple[dict, dict]:
    """The trained networks and their learning rates: the mapper and, when IKL is on, s_psi.

    Both start as copies of the prior's UNet (or, for a prior without one, e.g. an analytic
    prior, fresh UNets of the ``prior`` section's architecture). For a ``family`` both are
    conditioned (davi.models.conditioning), their new inputs starting at zero weight.
    """
    unet = getattr(prior, "unet", None)
    if unet is None:
        from davi.models.prior import build_unet

        unet = build_unet(cfg.prior, cfg.data)
    cond = _condition_sizes(cfg, family)
    mapper = Mapper.from_prior_unet(unet, cfg.mapper.h, cfg.mapper.tanh, prior.num_timesteps,
                                    cfg.mapper.noise_channels, cond["mapper_channels"], cond["mapper_dim"])
    if not cfg.train.init_from_prior:
        mapper = Mapper(**{k: v for k, v in mapper.config.items() if not k.startswith("_")})
    networks, lrs = {"mapper": mapper.train().requires_grad_(True)}, {"mapper": cfg.train.lr}
    if cfg.davi.lambda_ikl > 0:
        # a measurement-conditioned s_psi starts as the prior too: its extra inputs have zero weights
        score = (copy.deepcopy(unet) if cfg.davi.score_condition == "none"
                 else with_extra_inputs(unet, cfg.data.channels + cond["score_channels"], zero=True))
        networks["score"], lrs["score"] = score.train().requires_grad_(True), cfg.davi.score_lr
    if cfg.train.gradient_checkpointing:
        mapper.net.enable_gradient_checkpointing()
        if "score" in networks:
            networks["score"].enable_gradient_checkpointing()
    return networks, lrs


def _condition_sizes(cfg: Config, family) -> dict[str, int]:
    """Input channels and vector size of the conditioned mapper and s_psi (all 0 without a family)."""
    from davi.models.conditioning import map_channels, score_channels

    if family is None:
        return {"mapper_channels": 0, "mapper_dim": 0, "score_channels": 0}
    embedding = cfg.mapper.condition == "embedding"
    return {"mapper_channels": map_channels(cfg.data.channels),
            "mapper_dim": family.cond_dim if embedding else 0,
            "score_channels": score_channels(cfg.data.channels, family.cond_dim)}


def davi_recipe(cfg: Config, accelerator, prior=None, val_images: torch.Tensor | None = None) -> Recipe:
    """``prior`` may be any ScorePrior (e.g. an analytic one); ``val_images`` replace the first test images."""
    device = accelerator.device
    prior = prior_from_config(cfg) if prior is None else prior
    check_prior_fits_data(prior, cfg)
    prior.to(device)
    operator, family = run_operator(cfg)
    operator = operator.to(device)
    networks, lrs = build_networks(cfg, prior, family)
    dc = cfg.davi

    schedule = prior.schedule.to(device)
    ppb = PPBSampler(networks["mapper"], prior.schedule.alphas_cumprod, cfg.mapper.h, dc.ppb_alpha, dc.ppb_beta,
                     enabled=dc.ppb)

    def teacher_eps(x_t, t):
        with accelerator.autocast():
            return prior.eps(x_t, t)

    if dc.init_mapper:
        _warm_start(networks["mapper"], dc.init_mapper)
    val_x0 = _validation_images(cfg, val_images, device)
    if family is not None:
        check_family_config(cfg)
        iteration = family_iteration(cfg, accelerator, prior, family, ppb, teacher_eps)
        validate = family_validation(cfg, family, val_x0)
    else:
        iteration = (sampler_iteration(cfg, accelerator, prior, operator, ppb, teacher_eps) if dc.objective == "sampler"
                     else _paired_objective(cfg, accelerator, operator, ppb, DDPMLoss(schedule),
                                            IKLLoss(schedule, dc.t_ikl), teacher_eps))
        validate = _validation(cfg, operator, val_x0, device)

    def finish(ema_mapper, out, step):
        card = make_card(cfg, prior, operator, step, family)  # the card.json being written (a dict)
        if family is None and dc.objective == "sampler":
            card = {**card, "consistency_weight": consistency_weight(cfg, prior, operator)}
        if val_images is None and dc.calibration_images > 0:
            # trained on the config's data: its held-out test images set the flag's threshold
            card = (with_consistency(card, DaviMethod(ema_mapper, operator), operator, device,
                                     images=dc.calibration_images) if family is None
                    else with_family_consistency(card, ema_mapper, family, device, images=dc.calibration_images))
        export_mapper(ema_mapper, Path(out) / "export", card)

    return Recipe(networks=networks, lrs=lrs, ema_network="mapper", iteration=iteration,
                  frozen_until={"mapper": dc.score_warmup}, validate=validate, finish=finish)


def _warm_start(mapper, export_dir: str) -> None:
    """Copy an exported mapper's weights into ``mapper`` (same architecture; ConfigError otherwise). A
    source with fewer noise channels is widened (:func:`widened_noise_inputs`), so a sampler stage can add
    unit-scale randomness to a paired warm start trained without it."""
    source, _, _ = load_export(export_dir)
    state = source.state_dict()
    extra = mapper.config.noise_channels - source.config.noise_channels
    if extra > 0 and source.config.image_channels == mapper.config.image_channels:
        state = widened_noise_inputs(state, mapper, source.config.noise_channels)
    try:  # the whole mapper: a family's condition projection too
        mapper.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(f"davi.init_mapper={export_dir}: not this run's mapper architecture "
                          f"({str(e).splitlines()[0]})") from None


def widened_noise_inputs(state: dict, mapper, source_noise: int) -> dict:
    """``state`` (a mapper's with ``source_noise`` noise channels) for ``mapper``, which has more: the first
    convolution's input columns are [image, noise, condition maps]; the image's and the condition's keep
    the source's weights, the new noise channels keep ``mapper``'s own fresh initialisation (zero would be
    a stationary point of the spread: Mapper.from_prior_unet)."""
    key, c = "net.conv_in.weight", mapper.config.image_channels
    weight = mapper.state_dict()[key].detach().clone()
    src, new = state[key], mapper.config.noise_channels - source_noise
    if weight.shape[1] != src.shape[1] + new or weight.shape[0] != src.shape[0] or weight.shape[2:] != src.shape[2:]:
        return state  # another difference too (e.g. another width): load_state_dict names it
    weight[:, : c + source_noise] = src[:, : c + source_noise]
    weight[:, c + source_noise + new:] = src[:, c + source_noise:]
    return {**state, key: weight}


def _paired_objective(cfg: Config, accelerator, operator, ppb, dsm, ikl, teacher_eps):
    """``iteration(nets, batch)`` of the paired objective (the paper's recipe)."""
    c, dc = cfg.data.channels, cfg.davi

    def paired_iteration(nets, batch):
        # 1. measure, draw the bridge input, run the mapper once (graph kept for the mapper update)
        x0 = batch["image"]
        y, _, x_hat, cond = measure_and_map(nets, accelerator, dc, ikl.schedule, operator, ppb, x0)

        # 2. s_psi learns the score of the mapper's current samples
        if "score" in nets:
            yield from score_updates(nets, x_hat, dsm, dc.score_steps, accelerator, c, cond)

        # 3. the mapper: integral KL against the frozen prior, consistency, regression
        loss, logs = ikl_and_consistency(dc, ikl, x_hat, y, operator, teacher_eps, nets, accelerator, c, cond)
        if dc.lambda_reg != 0:
            l_reg = regression_loss(x0, x_hat)
            loss = loss + dc.lambda_reg * l_reg
            logs["loss/regression"] = l_reg.item()
        yield Update("mapper", "mapper", loss, logs)

    return paired_iteration


def _validation_images(cfg: Config, val_images, device) -> torch.Tensor:
    """The validation batch: ``val_images`` when given, else the first held-out test images."""
    from davi.data.datasets import load_split

    return (val_images[: cfg.log.num_val] if val_images is not None
            else load_split(cfg.data, "test").tensor(limit=cfg.log.num_val)).to(device)


def _validation(cfg: Config, operator, val_x0, device):
    """A fixed validation batch (measured with a fixed seed) and its report."""
    g = torch.Generator().manual_seed(12345)
    val_y = operator.measure(val_x0, generator=g)
    B, C, H, W = val_x0.shape
    val_z = torch.randn((cfg.log.num_samples, B, C + cfg.mapper.noise_channels, H, W), generator=g).to(device)

    @torch.no_grad()
    def validate(accelerator, ema_mapper, step):
        lifted = operator.lift(val_y)
        samples = torch.stack([ema_mapper.restore(lifted, z) for z in val_z]).clamp(-1, 1)
        mean, std = samples.mean(0), samples.std(0) if len(samples) > 1 else torch.zeros_like(val_x0)
        scalars = {"psnr/lift": psnr(lifted, val_x0).mean().item(),
                   "psnr/sample": psnr(samples[0], val_x0).mean().item(),
                   "psnr/mean": psnr(mean, val_x0).mean().item(),
                   "posterior_std": std.mean().item()}
        std_img = (std / std.amax().clamp_min(1e-8)) * 2 - 1
        rows = [display_measurement(val_y, val_x0), lifted, *samples, std_img, val_x0]
        return scalars, {"grid": torch.cat(rows).clamp(-1, 1)}

    return validate
