"""Recipe for DAVI (job: davi): alternate the implicit score network and the mapper.

One iteration (SPEC section 3):

1. draw clean images x0, measure y = A(x0) + sigma_y n, and a PPB input x_a;
   the mapper produces x_hat = I_phi(x_a, a) (its graph is kept for step 3);
2. **score phase** (mapper frozen): one AdamW step on s_psi with denoising score matching on
   stopgrad(x_hat), t uniform over all T;
3. **mapper phase** (s_psi and the teacher frozen, evaluated without gradients): one AdamW
   step on I_phi with ``lambda_ikl * IKL + lambda_con * mse(y, A x_hat) + lambda_reg * mse(x0, x_hat)``;
4. the trainer updates the mapper's EMA.

Step 2 uses the same x_hat as step 3 so each iteration runs the mapper forward once.
With ``lambda_ikl = 0`` the score network is not built at all (the regression ablation).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from davi.config import Config
from davi.export import export_mapper
from davi.losses import DDPMLoss, IKLLoss, consistency_loss, regression_loss
from davi.mapper import Mapper, PPBSampler
from davi.metrics import psnr
from davi.operators import build_operator
from davi.prior import PriorError, load_prior
from davi.trainer import Phase, Recipe


def check_prior_fits_data(prior, cfg: Config) -> None:
    if prior.channels != cfg.data.channels or prior.resolution != cfg.data.resolution:
        raise PriorError(f"prior {cfg.prior.path} is {prior.channels}x{prior.resolution}x{prior.resolution} but "
                         f"data.channels={cfg.data.channels}, data.resolution={cfg.data.resolution}")


def display_measurement(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """y as an image of like's size (nearest upsampling for low-resolution measurements)."""
    return y if y.shape == like.shape else F.interpolate(y, size=like.shape[-2:], mode="nearest")


def make_card(cfg: Config, prior, operator, step: int) -> dict:
    return {
        "task": cfg.operator.name,
        "operator": operator.params(),
        "sigma_y": operator.sigma_y,
        "h": cfg.mapper.h,
        "tanh": cfg.mapper.tanh,
        "resolution": cfg.data.resolution,
        "channels": cfg.data.channels,
        "prior": {"identity": prior.identity, "digest": prior.digest},
        "steps": step,
        "config": cfg.to_dict(),
    }


def davi_recipe(cfg: Config, accelerator, prior=None, val_images: torch.Tensor | None = None) -> Recipe:
    """``prior`` may be any ScorePrior (e.g. an analytic one); without a UNet of its own, the mapper and
    the score network are fresh UNets of the ``prior`` section's architecture."""
    device = accelerator.device
    prior = load_prior(cfg.prior) if prior is None else prior
    check_prior_fits_data(prior, cfg)
    prior.to(device)
    operator = build_operator(cfg.operator, cfg.data.resolution, cfg.data.channels).to(device)
    c = cfg.data.channels
    dc = cfg.davi

    unet = getattr(prior, "unet", None)
    if unet is None:
        from davi.prior import build_unet

        unet = build_unet(cfg.prior, cfg.data)
    mapper = Mapper.from_prior_unet(unet, cfg.mapper.h, cfg.mapper.tanh, prior.num_timesteps)
    if not cfg.train.init_from_prior:
        mapper = Mapper(**{k: v for k, v in mapper.config.items() if not k.startswith("_")})
    mapper.train().requires_grad_(True)
    if cfg.train.gradient_checkpointing:
        mapper.net.enable_gradient_checkpointing()
    networks = {"mapper": mapper}
    lrs = {"mapper": cfg.train.lr}
    use_ikl = dc.lambda_ikl > 0
    if use_ikl:
        score_unet = copy.deepcopy(unet).train().requires_grad_(True)
        if cfg.train.gradient_checkpointing:
            score_unet.enable_gradient_checkpointing()
        networks["score"] = score_unet
        lrs["score"] = dc.score_lr

    schedule = prior.schedule.to(device)
    dsm = DDPMLoss(schedule)
    ikl = IKLLoss(schedule, dc.t_ikl)
    ppb = PPBSampler(mapper, prior.schedule.alphas_cumprod, cfg.mapper.h, dc.ppb_alpha, dc.ppb_beta,
                     enabled=dc.ppb)
    recipe = Recipe(networks=networks, phases=[], ema_network="mapper", lrs=lrs)
    cache: dict[str, torch.Tensor] = {}

    def draw(batch) -> None:
        """Measure, draw the PPB input and run the mapper once (graph kept for the mapper phase)."""
        x0 = batch["image"]
        y = operator.measure(x0)
        x_a, a = ppb(x0, operator.lift(y))
        cache.update(x0=x0, y=y, x_hat=recipe.extra["nets"]["mapper"](x_a, a))

    def score_eps(x_t, t):
        with accelerator.autocast():
            return recipe.extra["nets"]["score"](x_t, t).sample[:, :c]

    def score_phase(batch):
        if "x_hat" not in cache:  # the first of davi.score_steps score updates draws the samples
            draw(batch)
        return dsm(score_eps, cache["x_hat"].detach()), {}

    def frozen_score_eps(x_t, t):
        net = accelerator.unwrap_model(recipe.extra["nets"]["score"])
        with torch.no_grad(), accelerator.autocast():
            return net(x_t, t).sample[:, :c]

    def teacher_eps(x_t, t):
        with accelerator.autocast():
            return prior.eps(x_t, t)

    def mapper_phase(batch):
        if "x_hat" not in cache:
            draw(batch)
        x0, y, x_hat = cache.pop("x0"), cache.pop("y"), cache.pop("x_hat")
        logs = {}
        loss = x_hat.new_zeros(()).float()
        if use_ikl:
            l_ikl, ikl_logs = ikl(x_hat, teacher_eps, frozen_score_eps)
            loss = loss + dc.lambda_ikl * l_ikl
            logs.update(ikl_logs)
            logs["loss/ikl"] = l_ikl.item()
        if dc.lambda_con != 0:
            l_con = consistency_loss(operator, y, x_hat)
            loss = loss + dc.lambda_con * l_con
            logs["loss/consistency"] = l_con.item()
        if dc.lambda_reg != 0:
            l_reg = regression_loss(x0, x_hat)
            loss = loss + dc.lambda_reg * l_reg
            logs["loss/regression"] = l_reg.item()
        return loss, logs

    if use_ikl:
        # davi.score_steps DSM updates of s_psi (fresh t and noise each) per mapper update
        recipe.phases += [Phase("score", "score", score_phase) for _ in range(dc.score_steps)]
    recipe.phases.append(Phase("mapper", "mapper", mapper_phase))

    # A fixed validation batch: the first test images, measured with a fixed seed.
    from davi.data import load_split

    val_x0 = (val_images[: cfg.log.num_val] if val_images is not None
              else load_split(cfg.data, "test").tensor(limit=cfg.log.num_val)).to(device)
    g = torch.Generator().manual_seed(12345)
    val_y = operator.measure(val_x0, generator=g)
    val_z = torch.randn((cfg.log.num_samples, *val_x0.shape), generator=g).to(device)

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

    def finish(ema_mapper, out: Path, step: int):
        export_mapper(ema_mapper.cpu(), out / "export", make_card(cfg, prior, operator, step))

    recipe.validate, recipe.finish = validate, finish
    return recipe
