"""The frozen diffusion prior: a diffusers ``UNet2DModel`` + the DDPM schedule it was trained with.

DDPM (Ho et al. 2020), as DAVI (Lee et al. 2024) and RED-Diff (Mardani et al. 2023) use it. At integer
timesteps ``t`` (a ``(B,)`` long tensor) it gives

* ``eps(x_t, t)``   the network's noise prediction (first C channels of a learned-variance model),
* ``score(x_t, t) = -eps / sqrt(1 - alpha_bar)``,
* ``x0(x_t, t)    = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)``,
* ``snr(t)        = sqrt(alpha_bar / (1 - alpha_bar))``,

and ``q_sample`` diffuses clean images. The module is frozen (eval mode, no gradients) and
moves itself to the device and dtype of its input, so callers never juggle copies.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from davi.config import DataConfig, PriorConfig

BUNDLED_PRIORS = {"mnist32": Path(__file__).resolve().parents[1] / "assets" / "prior_mnist32"}


class PriorError(ValueError):
    """A prior that cannot be loaded (named in the message)."""


def build_unet(cfg: PriorConfig, data: DataConfig):
    """A fresh UNet2DModel for training a prior from scratch on ``data``."""
    from diffusers import UNet2DModel

    levels = len(cfg.block_out_channels)
    attn = set(cfg.attention_levels)
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(levels)))
    return UNet2DModel(
        sample_size=data.resolution,
        in_channels=data.channels,
        out_channels=data.channels,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
    )


def with_extra_inputs(unet, extra: int, zero: bool):
    """A copy of ``unet`` whose first convolution takes ``extra`` more input channels, placed after the
    original ones. The original weights are kept; the new ones are zero (the copy computes exactly
    what ``unet`` does until it learns to use them) or, with ``zero=False``, freshly initialised."""
    from diffusers import UNet2DModel

    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    c = cfg["in_channels"]
    wide = UNet2DModel.from_config({**cfg, "in_channels": c + extra})
    state = dict(unet.state_dict())
    weight = wide.conv_in.weight.detach().clone()
    if zero:
        weight.zero_()
    weight[:, :c] = state["conv_in.weight"]
    wide.load_state_dict({**state, "conv_in.weight": weight})
    return wide


def build_scheduler(cfg: PriorConfig | None = None, alphas_cumprod: torch.Tensor | None = None, **options):
    """The project's one diffusers ``DDPMScheduler`` builder.

    From ``cfg`` (T, beta range and beta schedule; default ``PriorConfig()``: T = 1000, linear betas
    1e-4 .. 0.02, the DDPM schedule of Ho et al. 2020 that DAVI and RED-Diff's priors use), or from a
    given ``alphas_cumprod`` (betas recovered from its ratios, computed in its dtype). ``options`` go
    to the scheduler (e.g. ``variance_type``). Samples are never clipped.
    """
    from diffusers import DDPMScheduler

    options = {"clip_sample": False, **options}
    if alphas_cumprod is not None:
        ab = alphas_cumprod.detach().cpu()
        betas = 1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
        return DDPMScheduler(num_train_timesteps=len(ab), trained_betas=betas.float().numpy(), **options)
    cfg = cfg or PriorConfig()
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                         beta_end=cfg.beta_end, beta_schedule=cfg.beta_schedule, **options)


def _extract(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped (B, 1, 1, 1) in like's dtype/device."""
    return values.to(like.device)[t.to(like.device).long()].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class Schedule(nn.Module):
    """alpha_bar and what derives from it; shared by the prior, its analytic stand-ins and DAVI."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.register_buffer("alphas_cumprod", alphas_cumprod.double().clone(), persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return _extract(self.alphas_cumprod, t, like)

    def snr(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod
        return _extract((ab / (1 - ab)).sqrt(), t, like)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


class ScorePrior(nn.Module):
    """Interface shared by every prior: subclasses implement ``eps_with_grad`` (or ``eps``); the rest
    follows. A prior is frozen: it stays in eval mode and ``eps`` runs without autograd."""

    schedule: Schedule

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.schedule.alpha_bar(t, like)

    def snr(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.schedule.snr(t, like)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.schedule.q_sample(x0, t, noise)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.eps_with_grad(x_t, t)

    def eps_with_grad(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps with autograd through x_t (the weights stay frozen); for tests and guidance."""
        raise NotImplementedError

    def score(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -self.eps(x_t, t) / (1 - self.alpha_bar(t, x_t)).sqrt()

    def x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar(t, x_t)
        return (x_t - (1 - ab).sqrt() * self.eps(x_t, t)) / ab.sqrt()


class DiffusionPrior(ScorePrior):
    """A frozen ``UNet2DModel`` with its ``DDPMScheduler``."""

    def __init__(self, unet, scheduler, identity: str = "", digest: str = ""):
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.schedule = Schedule(scheduler.alphas_cumprod)
        self.identity = identity  # where it came from (path or hub id)
        self.digest = digest  # sha256 of its weights file, for export cards
        self.channels = unet.config.in_channels
        self.resolution = unet.config.sample_size

    def _follow(self, x: torch.Tensor) -> torch.dtype:
        """Move the network to x's device, and to x's dtype when that is float32/float64. A half-precision
        input leaves the weights as they are (casting them down and back up would round them for good):
        the network runs in its own dtype (autocast, when on, still computes in half)."""
        p = next(self.unet.parameters())
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else p.dtype
        if p.device != x.device or p.dtype != dtype:
            self.unet.to(device=x.device, dtype=dtype)
        return dtype

    def eps_with_grad(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.shape[1] != self.channels:
            raise PriorError(f"prior {self.identity}: expects {self.channels} channel(s), got input of shape "
                             f"{tuple(x_t.shape)}")
        dtype = self._follow(x_t)
        t = t.to(x_t.device).long().expand(x_t.shape[0]) if t.ndim <= 1 else t
        out = self.unet(x_t.to(dtype), t).sample
        # Learned-variance checkpoints predict (eps, variance): keep eps.
        return out[:, : self.channels].to(x_t.dtype)

    @classmethod
    def from_pretrained(cls, path: str) -> "DiffusionPrior":
        unet, scheduler, identity, digest = load_unet_and_scheduler(path)
        return cls(unet, scheduler, identity, digest)


def safetensors_digest(folder: Path) -> str:
    """sha256 (16 hex digits) of every .safetensors file under ``folder``: which weights these are."""
    files = sorted(folder.rglob("*.safetensors"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16] if files else ""


def resolve_prior_path(path: str) -> str:
    if path.startswith("bundled:"):
        name = path.split(":", 1)[1]
        if name not in BUNDLED_PRIORS:
            raise PriorError(f"prior.path: unknown bundled prior {name!r} (have: {', '.join(BUNDLED_PRIORS)})")
        return str(BUNDLED_PRIORS[name])
    return path


def _own_memory(unet):
    """Copy weights read from safetensors into fresh float32 tensors.

    They can arrive as views at unaligned addresses, where CPU kernels sum in another order:
    without the copy a loaded prior's outputs differ (by about an ulp) from those of the network
    that was saved. Weights stored in half precision (the shipped prior, to halve its size) are
    computed in float32: the copies trained from them need float32, and CPUs run half slowly.
    """
    with torch.no_grad():
        for t in [*unet.parameters(), *unet.buffers()]:
            half = t.dtype in (torch.float16, torch.bfloat16)
            t.data = t.data.float() if half else t.data.clone()
    return unet


def load_unet_and_scheduler(path: str):
    """Load (unet, scheduler, identity, digest) from a diffusers folder, a bundled name or a hub id.

    A folder may be a pipeline folder (``unet/`` + ``scheduler/``) or a bare UNet folder
    (``config.json`` + weights, with an optional ``scheduler_config.json`` beside it).
    Weights are read as safetensors only.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    from davi.io.atomic import recover_folder

    resolved = resolve_prior_path(path)
    folder = Path(resolved)
    recover_folder(folder)
    try:
        if folder.exists():
            if (folder / "unet").is_dir():
                unet_dir, sched_dir = folder / "unet", folder / "scheduler"
            else:
                unet_dir, sched_dir = folder, folder
            if not (unet_dir / "config.json").is_file():
                raise PriorError(f"{unet_dir}: not a diffusers UNet folder (no config.json)")
            if not list(unet_dir.glob("*.safetensors")):
                raise PriorError(f"{unet_dir}: no .safetensors weights (convert .pt/.bin checkpoints first: "
                                 f"davi convert)")
            unet = _own_memory(UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=True))
            if (sched_dir / "scheduler_config.json").is_file():
                scheduler = DDPMScheduler.from_pretrained(str(sched_dir))
            else:  # a bare UNet folder: the published priors' schedule
                scheduler = build_scheduler(PriorConfig())
            return unet, scheduler, path, safetensors_digest(unet_dir)
        unet = _own_memory(UNet2DModel.from_pretrained(resolved, subfolder="unet", use_safetensors=True))
        scheduler = DDPMScheduler.from_pretrained(resolved, subfolder="scheduler")
        return unet, scheduler, path, ""
    except PriorError:
        raise
    except Exception as e:
        raise PriorError(f"{path}: cannot load a diffusers UNet2DModel "
                         f"({e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None


def save_prior(unet, scheduler, folder: str | Path, extra: dict | None = None) -> None:
    """Write a diffusers folder (unet/ + scheduler/, safetensors) atomically: temp folder + rename."""
    from davi.io.atomic import replace_folder, temp_folder_for

    tmp = temp_folder_for(folder)
    unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)
    scheduler.save_pretrained(str(tmp / "scheduler"))
    if extra:
        (tmp / "training.json").write_text(json.dumps(extra, indent=2))
    replace_folder(tmp, folder)


def ddim_scheduler(alphas_cumprod: torch.Tensor):
    """A diffusers DDIMScheduler (Song et al. 2021) on a prior's own alpha_bar (float32, as diffusers
    computes), final step to alpha_bar = 1: the deterministic sampler of :func:`sample`."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(build_scheduler(alphas_cumprod=alphas_cumprod.float()).config,
                                     set_alpha_to_one=True)


@torch.no_grad()
def sample(prior: ScorePrior, n: int, num_steps: int = 50, generator: torch.Generator | None = None,
           device: str | torch.device = "cpu", batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Draw ``n`` images from a prior with deterministic DDIM (eta = 0) on its own schedule."""
    from tqdm.auto import tqdm

    sched = ddim_scheduler(prior.schedule.alphas_cumprod)
    sched.set_timesteps(num_steps)
    c, r = prior.channels, prior.resolution
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.randn(b, c, r, r, generator=generator).to(device)
        for t in tqdm(sched.timesteps, desc=f"sampling {start + b}/{n}", disable=not progress, leave=False):
            eps = prior.eps(x, torch.full((b,), int(t), device=device))
            x = sched.step(eps, t, x).prev_sample
        out.append(x.clamp(-1, 1).cpu())
    return torch.cat(out)
