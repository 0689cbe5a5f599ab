"""What the speed and memory benchmarks share: prior-sized networks, device names, median timing.

Architectures: ``ffhq256`` (DPS's FFHQ DDPM, 93.6M parameters) and ``imagenet256``
(guided-diffusion's unconditional ImageNet model, 552.8M), built by :mod:`davi.io.convert` from its
presets exactly as converted checkpoints are; ``small`` (1.5M: the ffhq256 layout at 1/8 of the
width, 16 GroupNorm groups) for quick CPU runs -- its numbers say nothing about the real scale.
Weights are random: neither speed nor memory depends on them.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch

ARCHS = ("ffhq256", "imagenet256", "small")


def unet_config(arch: str) -> dict:
    """UNet2DModel kwargs of a prior-sized network (see the module docstring)."""
    from davi.io.convert import PRESETS, unet_config_from_guided

    if arch in PRESETS:
        return unet_config_from_guided(**PRESETS[arch])
    if arch == "small":
        cfg = unet_config_from_guided(**{**PRESETS["ffhq256"], "num_channels": 32, "num_head_channels": 32})
        cfg.update(block_out_channels=tuple(c // 2 for c in cfg["block_out_channels"]), norm_num_groups=16,
                   attn_norm_num_groups=16)
        return cfg
    raise ValueError(f"--arch: {arch!r} is not one of {', '.join(ARCHS)}")


def count_parameters(arch: str) -> int:
    """Parameters of ``arch`` without allocating them (meta device)."""
    from diffusers import UNet2DModel

    with torch.device("meta"):
        return sum(p.numel() for p in UNet2DModel(**unet_config(arch)).parameters())


def random_unet(arch: str, seed: int = 0):
    """A UNet2DModel of ``arch`` with random weights (seeded), in eval mode."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**unet_config(arch)).eval()


def random_prior(unet):
    """A frozen DiffusionPrior around ``unet`` with the published priors' schedule (linear, T = 1000)."""
    from davi.config import PriorConfig
    from davi.models.prior import DiffusionPrior, build_scheduler

    return DiffusionPrior(unet, build_scheduler(PriorConfig()), identity="random", digest="")


def device_description(device: torch.device) -> str:
    """The GPU's name and CUDA version, or the CPU and its thread count: for a results file's header."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones
    (on CUDA each run is bracketed by a synchronize, so queued kernels are counted)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
