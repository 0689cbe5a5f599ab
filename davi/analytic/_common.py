"""float64 CPU conversion shared by the analytic priors, posteriors and distances."""

from __future__ import annotations

import math

import numpy as np
import torch

LOG_2PI = math.log(2 * math.pi)


def f64(x) -> torch.Tensor:
    """x as a float64 CPU tensor; Python numbers go straight to float64 (not through float32)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, (list, tuple)) or not x or not \
            isinstance(x[0], torch.Tensor) else torch.stack([f64(v) for v in x])
    return x.detach().to(device="cpu", dtype=torch.float64)
