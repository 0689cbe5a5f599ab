"""Recipe ``prior``: train a diffusion prior, the DDPM loss on one UNet2DModel (Ho et al. 2020)."""

from __future__ import annotations

from pathlib import Path

import torch

from davi.config import Config
from davi.models.prior import (
    DiffusionPrior,
    Schedule,
    build_scheduler,
    build_unet,
    sample,
    save_prior,
)
from davi.training.losses import DDPMLoss
from davi.training.recipe import Recipe, Update


def prior_recipe(cfg: Config, accelerator) -> Recipe:
    unet = build_unet(cfg.prior, cfg.data)
    if cfg.train.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    scheduler = build_scheduler(cfg.prior)
    ddpm = DDPMLoss(Schedule(scheduler.alphas_cumprod).to(accelerator.device))

    def iteration(nets, batch):
        unet = nets["unet"]
        yield Update("ddpm", "unet", ddpm(lambda x, t: unet(x, t).sample, batch["image"]))

    def validate(accelerator, ema_unet, step):
        prior = DiffusionPrior(ema_unet, scheduler)
        g = torch.Generator().manual_seed(cfg.train.seed)
        return {}, {"samples": sample(prior, cfg.log.num_val, num_steps=50, generator=g, device=accelerator.device)}

    def finish(ema_unet, out: Path, step: int):
        save_prior(ema_unet.float(), scheduler, out / "prior",
                   extra={"steps": step, "data": cfg.data.source, "config": cfg.to_dict()})

    return Recipe(networks={"unet": unet}, lrs={"unet": cfg.train.lr}, ema_network="unet",
                  iteration=iteration, validate=validate, finish=finish)
