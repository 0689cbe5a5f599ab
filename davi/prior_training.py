"""Recipe for training a diffusion prior (job: prior): the DDPM loss on one UNet2DModel."""

from __future__ import annotations

from pathlib import Path

import torch

from davi.config import Config
from davi.losses import DDPMLoss
from davi.prior import DiffusionPrior, Schedule, build_scheduler, build_unet, sample, save_prior
from davi.trainer import Phase, Recipe


def prior_recipe(cfg: Config, accelerator) -> Recipe:
    unet = build_unet(cfg.prior, cfg.data)
    if cfg.train.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    scheduler = build_scheduler(cfg.prior)
    loss = DDPMLoss(Schedule(scheduler.alphas_cumprod).to(accelerator.device))
    recipe = Recipe(networks={"unet": unet}, phases=[], ema_network="unet", lrs={"unet": cfg.train.lr})

    def ddpm_phase(batch):
        net = recipe.extra["nets"]["unet"]
        return loss(lambda x, t: net(x, t).sample, batch["image"]), {}

    recipe.phases.append(Phase("ddpm", "unet", ddpm_phase))

    def validate(accelerator, ema_unet, step):
        prior = DiffusionPrior(ema_unet, scheduler)
        g = torch.Generator().manual_seed(cfg.train.seed)
        return {}, {"samples": sample(prior, cfg.log.num_val, num_steps=50, generator=g, device=accelerator.device)}

    def finish(ema_unet, out: Path, step: int):
        save_prior(ema_unet.float().cpu(), scheduler, out / "prior",
                   extra={"steps": step, "data": cfg.data.source, "config": cfg.to_dict()})

    recipe.validate, recipe.finish = validate, finish
    return recipe
