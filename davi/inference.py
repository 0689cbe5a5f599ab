"""Restoration methods behind one interface, for infer.py and the benchmarks.

Every method maps a batch of measurements ``y`` (with per-image seeds) to ``K`` restorations
per image, shape ``(K, B, C, H, W)``, and says how many network evaluations it spends per
image and sample. Per-image seeds make each image's result independent of the batch it is in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from davi.config import RedDiffConfig


def per_image_noise(shape: tuple[int, ...], seeds: list[int], salt: int = 0, device=None,
                    dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` = (B, ...), image i drawn from its own seed."""
    out = torch.empty(shape, dtype=torch.float32)
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s) * 7919 + salt)
        out[i] = torch.randn(shape[1:], generator=g)
    return out.to(device=device, dtype=dtype)


class Method:
    name = "method"
    nfe_per_sample = 0
    stochastic = False

    def __call__(self, y: torch.Tensor, seeds: list[int], num_samples: int = 1) -> torch.Tensor:
        raise NotImplementedError


class LiftMethod(Method):
    """The baseline every restorer must beat: the measurement mapped back to image space."""

    name = "lift"

    def __init__(self, operator):
        self.operator = operator

    @torch.no_grad()
    def __call__(self, y, seeds, num_samples=1):
        return self.operator.lift(y).unsqueeze(0)


class DaviMethod(Method):
    """One mapper evaluation per sample: I_phi(lift(y) + h z, T - 1)."""

    name = "davi"
    nfe_per_sample = 1
    stochastic = True

    def __init__(self, mapper, operator, dtype: torch.dtype = torch.float32):
        self.mapper, self.operator, self.dtype = mapper, operator, dtype

    @torch.no_grad()
    def __call__(self, y, seeds, num_samples=1):
        lifted = self.operator.lift(y)
        out = []
        for k in range(num_samples):
            z = per_image_noise(tuple(lifted.shape), seeds, salt=k, device=lifted.device)
            if self.dtype != torch.float32:
                with torch.autocast(device_type=lifted.device.type, dtype=self.dtype):
                    x = self.mapper.restore(lifted, z)
            else:
                x = self.mapper.restore(lifted, z)
            out.append(x.float().clamp(-1, 1))
        return torch.stack(out)


class RedDiffMethod(Method):
    """Per-image variational optimisation (SPEC section 4): num_steps prior evaluations."""

    name = "red-diff"
    stochastic = True

    def __init__(self, prior, operator, cfg: RedDiffConfig, progress: bool = False):
        from davi.red_diff import RedDiff

        self.solver = RedDiff(prior, operator, cfg)
        self.nfe_per_sample = cfg.num_steps
        self.name = f"red-diff-{cfg.num_steps}"
        self.progress = progress

    def __call__(self, y, seeds, num_samples=1):
        out = [self.solver(y, seeds=[s * 1000 + k for s in seeds], progress=self.progress).detach()
               for k in range(num_samples)]
        return torch.stack(out).float().clamp(-1, 1)


@dataclass
class Timing:
    seconds_per_image: float
    batch_size: int


def time_method(method: Method, y: torch.Tensor, batch_size: int, repeats: int = 3) -> Timing:
    """Seconds per image (one sample each) after one warm-up batch; loading excluded."""
    yb = y[:batch_size]
    seeds = list(range(yb.shape[0]))
    method(yb, seeds)  # warm-up
    if yb.is_cuda:
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        method(yb, seeds)
        if yb.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return Timing(best / yb.shape[0], yb.shape[0])
