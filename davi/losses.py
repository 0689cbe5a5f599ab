"""Loss classes (EDM style: a callable per objective, its weighting stated once).

SPEC section 3. ``DDPMLoss`` trains a prior and, on detached mapper samples, the implicit
score network ``s_psi``; ``IKLLoss`` is the surrogate whose gradient with respect to the
mapper output is the integral-KL gradient; ``consistency_loss`` and ``regression_loss`` are
the measurement and paired terms of the mapper loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class DDPMLoss:
    """Denoising score matching, ``|| eps_net(x_t, t) - eps ||^2`` with t uniform over all T."""

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, eps_fn, x0: torch.Tensor) -> torch.Tensor:
        t = torch.randint(0, self.schedule.num_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, t, noise)
        return F.mse_loss(eps_fn(x_t, t).float(), noise.float())
