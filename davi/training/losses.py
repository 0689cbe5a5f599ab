"""Loss classes (EDM style: a callable per objective, its weighting stated once).

The objectives of DAVI (Lee et al. 2024). ``DDPMLoss`` (Ho et al. 2020) trains a prior and, on
detached mapper samples, the implicit score network ``s_psi``; ``IKLLoss`` is the surrogate whose
gradient with respect to the mapper output is the integral-KL gradient; ``consistency_loss`` and
``regression_loss`` are the measurement and paired terms of the mapper loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def uniform_timesteps(t_max: int | torch.Tensor, n: int, device) -> torch.Tensor:
    """(n,) t uniform over ``0 .. t_max - 1``; ``t_max`` one horizon, or a (n,) tensor of per-image horizons."""
    if isinstance(t_max, torch.Tensor):
        t_max = t_max.to(device)
        return torch.minimum((torch.rand(n, device=device) * t_max).long(), t_max - 1)
    return torch.randint(0, t_max, (n,), device=device)


def ikl_horizons(alphas_cumprod: torch.Tensor, sigma_y: torch.Tensor, ratio: float, t_cap: int) -> torch.Tensor:
    """(B,) per-image IKL horizons: how many t (from 0) have a noise level sqrt((1 - ab_t) / ab_t) of at most
    ``ratio * sigma_y`` of that image, clamped to [1, t_cap] (davi.ikl_noise_ratio)."""
    ab = alphas_cumprod[:t_cap].double().cpu()
    noise = ((1 - ab) / ab).sqrt()
    count = (noise[None, :] <= ratio * sigma_y.double().cpu()[:, None]).sum(1)
    return count.clamp(1, t_cap)


class DDPMLoss:
    """Denoising score matching, ``|| eps_net(x_t, t) - eps ||^2`` with t uniform over ``0 .. t_max - 1``
    (all T by default; the sampler objective's s_psi only needs the t its IKL reads)."""

    def __init__(self, schedule, t_max: int | None = None):
        self.schedule = schedule
        self.t_max = t_max or schedule.num_timesteps

    def __call__(self, eps_fn, x0: torch.Tensor, t_max: torch.Tensor | None = None) -> torch.Tensor:
        """``t_max``: per-image horizons (B,) in place of the loss's one."""
        t = uniform_timesteps(self.t_max if t_max is None else t_max, x0.shape[0], x0.device)
        noise = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, t, noise)
        return F.mse_loss(eps_fn(x_t, t).float(), noise.float())


class IKLLoss:
    """Surrogate whose gradient w.r.t. the mapper output is the integral-KL gradient.

    With ``x_t = sqrt(ab) x_hat + sqrt(1 - ab) eps`` and ``t ~ U{0 .. t_max - 1}``::

        L = mean( stopgrad(eps_theta(x_t, t) - eps_psi(x_t, t)) * x_hat )

    which is the x0 form ``mean(stopgrad(snr * (x0_psi - x0_theta)) * x_hat)`` of DAVI's IKL. Its gradient is

        dL/dx_hat = w(t) * (s_psi(x_t, t) - s_theta(x_t, t)) / N,   w(t) = sqrt(1 - ab_t),

    (N = x_hat.numel()), i.e. the KL gradient ``(s_psi - s_theta) dx_t/dx_hat`` with the
    weight ``w(t) / sqrt(ab_t)``: the score difference is weighted by the noise level, so
    low-noise steps, where both scores blow up, do not dominate. Descending it pulls samples
    towards high prior density (s_theta) and away from the sampler's own density (s_psi).
    """

    def __init__(self, schedule, t_max: int):
        if not 1 <= t_max <= schedule.num_timesteps:
            raise ValueError(f"davi.t_ikl must be in [1, {schedule.num_timesteps}], got {t_max}")
        self.schedule = schedule
        self.t_max = t_max

    def weight(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return (1 - self.schedule.alpha_bar(t, like)).sqrt()

    def __call__(self, x_hat: torch.Tensor, teacher_eps, student_eps, t: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None, t_max: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """``t_max``: per-image horizons (B,) in place of the loss's one (davi.ikl_noise_ratio)."""
        if t is None:
            t = uniform_timesteps(self.t_max if t_max is None else t_max, x_hat.shape[0], x_hat.device)
        if noise is None:
            noise = torch.randn_like(x_hat)
        with torch.no_grad():
            x_t = self.schedule.q_sample(x_hat.detach(), t, noise)
            diff = (teacher_eps(x_t, t).float() - student_eps(x_t, t).float())
        loss = (diff * x_hat.float()).mean()
        return loss, {"ikl/eps_gap": diff.pow(2).mean().item()}


def consistency_loss(operator, y: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Measurement consistency ``mse(y, A(x_hat))``."""
    return F.mse_loss(operator(x_hat.float()), y.float())


def regression_loss(x0: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Paired regression ``mse(x0, x_hat)`` (needs clean images: off for unpaired training)."""
    return F.mse_loss(x_hat.float(), x0.float())


def mean_matching_loss(x0: torch.Tensor, x_hat_a: torch.Tensor, x_hat_b: torch.Tensor) -> torch.Tensor:
    """``mean((x_hat_a - x0) * (x_hat_b - x0))`` for two samples of the mapper drawn independently for the
    same measurement y: an unbiased estimate of ``||m(y) - x0||^2 / D`` with ``m(y) = E_z I(y, z)``,
    the mapper's mean (E[(a - x0)(b - x0)] = (m - x0)^2 per pixel when a, b are independent given y).

    Averaged over p(x0 | y) it is ``(||m(y) - E[x0 | y]||^2 + tr Cov(x0 | y)) / D``: its minimiser is
    any sampler whose MEAN is the posterior mean, whatever its spread. Unlike the paired regression
    ``mse(x0, x_hat)``, which adds the samples' own spread ``tr C / D`` and so pulls every sample to the
    mean (a point mass), it leaves the spread to the IKL and the likelihood, and it agrees with their
    optimum (the posterior), so adding it moves no optimum; it gives the mean a direct, low-bias
    gradient that the IKL, read through a score network that lags the mapper, gives only weakly.
    """
    return ((x_hat_a.float() - x0.float()) * (x_hat_b.float() - x0.float())).mean()


def sampler_consistency_weight(alphas_cumprod: torch.Tensor, t_ikl: int, sigma_y: float, image_numel: int,
                               measurement_numel: int) -> float:
    """The consistency weight whose mapper objective has the exact posterior as its optimum (as t_ikl -> 1).

    The mapper's loss is ``L = L_IKL + lambda * mse(y, A x_hat)``. Per sample, :class:`IKLLoss`
    (gradient ``w_t (s_psi - s_theta) / D`` per pixel) is the gradient of ``(1/D) mean_{t < t_ikl} w_t
    KL(q_t || p_t)``, ``w_t = sqrt((1 - ab_t) / ab_t)``, and the mse is ``(1/M) ||y - A x||^2``
    (D = image_numel, M = measurement_numel, zero rows of A included). The posterior is the minimiser of

        KL(q || p(x | y)) = KL(q || p) + E_q ||y - A x||^2 / (2 sigma_y^2) + const.

    For t << the posterior's variances, ``ab_t -> 1`` and KL(q_t || p_t) -> KL(q || p), so L tends to
    ``(w_bar / D) KL(q || p) + (lambda / M) E_q ||y - A x||^2`` with ``w_bar = mean_{t < t_ikl} w_t``;
    it is proportional to KL(q || p(x | y)) when

        lambda = w_bar * M / (2 D sigma_y^2)     (t_ikl = 1: w_0 M / (2 D sigma_y^2)).

    For a Gaussian prior the optimum at this weight is in closed form (davi.analytic.davi_fixed_point):
    on the 8x8 benchmark problems it is within 1% of the exact posterior's mean and variance for
    t_ikl <= 10 and within 4.4% for t_ikl <= 50; beyond that the diffused KL's bias grows (11-22% at
    400). Undefined for sigma_y = 0 (a noiseless likelihood): the config refuses that combination.
    """
    if sigma_y <= 0:
        raise ValueError(f"the sampler objective needs sigma_y > 0, got {sigma_y}")
    ab = alphas_cumprod[:t_ikl].double()
    w_bar = float(((1 - ab) / ab).sqrt().mean())
    return w_bar * measurement_numel / (2 * image_numel * sigma_y**2)
