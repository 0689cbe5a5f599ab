"""RED-Diff: the per-image variational baseline (Mardani et al. 2023, "A Variational Perspective
on Solving Inverse Problems with Diffusion Models": the RED-Diff objective and sampler).

For each measurement ``y`` a point estimate ``mu`` of the clean image is optimised with Adam.
At step ``k`` the timestep ``t`` runs down from ``T - 1`` to ``0``; with fresh noise ``eps``
and ``x_t = sqrt(ab) mu + sqrt(1 - ab) eps`` the objective of one image is

    obs_weight * 0.5 * mean((y - A mu)^2) + lam * w(t) * mean(stopgrad(eps_theta(x_t, t) - eps) * mu),

    w(t) = sqrt((1 - ab) / ab)   (the inverse of the prior's snr(t)).

The second term is a surrogate: its gradient in ``mu`` is ``lam * w(t) * (eps_theta - eps)``,
which is the score-distillation gradient of the diffused KL to the prior. In data units,
``(eps_theta - eps) * sqrt(1 - ab) / sqrt(ab)`` is the gap ``mu - x0_theta(x_t)`` between the
estimate and the prior's denoised guess; the inverse-SNR weight is exactly that conversion, so
every timestep pulls ``mu`` toward the prior's denoiser in the same (pixel) units, and the noisy
high-t steps (large weight, coarse structure) come before the fine low-t ones (small weight).
The prior is evaluated once per step and never differentiated.

Warm start (a second job for the same solver): ``solver(y, init=x_hat)`` starts ``mu`` at a
given image, e.g. a DAVI sample, instead of ``pinv(y)``, and ``t_max`` / ``t_min`` restrict the
timesteps. Started from a good image, the high-noise steps (which redraw coarse structure) are
not wanted; a few low-noise steps pull the estimate back to the measurement while the prior
keeps fine detail plausible.

The loss of a batch is the SUM of per-image losses (each a mean over that image's pixels) and
Adam acts elementwise, so every image is its own problem; its noise comes from its own
generator seeded by ``seeds[i]``, so image ``i``'s result depends only on ``(y_i, seeds[i])``,
not on the batch it shares.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from davi.models.prior import ScorePrior


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


class RedDiff:
    """``RedDiff(prior, operator, steps=100, lr=0.25, lam=0.25)(y, seeds)`` -> restored images ``(B, C, H, W)``.

    ``steps`` Adam steps (one prior evaluation each) at learning rate ``lr`` and Adam betas
    ``betas``; ``lam`` weighs the prior term and ``obs_weight`` the data term; ``init`` is where
    ``mu`` starts (``"pinv"``, or ``"lift"`` for operators without a cheap pseudo-inverse);
    ``t_max`` / ``t_min`` restrict the timesteps (a warm start). ``callback(step, t, mu)``, if given,
    is called after every Adam step with the step index, the integer timestep and the current
    estimate (a detached view: clone it to keep it).
    """

    def __init__(self, prior: ScorePrior, operator, steps: int = 100, lr: float = 0.25, lam: float = 0.25,
                 init: str = "pinv", obs_weight: float = 1.0, betas: tuple[float, float] = (0.9, 0.99),
                 t_max: int | None = None, t_min: int = 0):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"RedDiff steps must be an integer >= 1, got {steps!r}")
        if init not in ("pinv", "lift"):
            raise ValueError(f"RedDiff init must be 'pinv' or 'lift', got {init!r}")
        T = prior.num_timesteps
        t_max = T - 1 if t_max is None else int(t_max)
        if not 0 <= int(t_min) <= t_max <= T - 1:
            raise ValueError(f"RedDiff timesteps: need 0 <= t_min <= t_max <= {T - 1}, got t_min={t_min}, "
                             f"t_max={t_max}")
        self.prior = prior
        self.operator = operator
        self.steps, self.lr, self.lam, self.init = steps, float(lr), float(lam), init
        self.obs_weight, self.betas = float(obs_weight), (float(betas[0]), float(betas[1]))
        self.t_max, self.t_min = t_max, int(t_min)

    @property
    def nfe_per_sample(self) -> int:
        return self.steps  # one prior evaluation per step

    def timesteps(self) -> list[int]:
        """The descending integer timesteps, t_max ... t_min (default T - 1 ... 0), one per step."""
        return torch.linspace(self.t_max, self.t_min, self.steps,
                              dtype=torch.float64).round().long().tolist()

    def _check_measurement(self, y: torch.Tensor) -> None:
        """ValueError (the operator's one-line OperatorError) unless y fits the operator."""
        op = self.operator
        if not isinstance(y, torch.Tensor) or y.ndim == 0:
            raise ValueError(f"{op.name}: measurement must be a (B, ...) tensor, got {y!r:.80}")
        op.check_measurement(y, (y.shape[0], op.channels, op.resolution, op.resolution))
        if not y.is_floating_point():
            raise ValueError(f"{op.name}: measurement must be floating point, got {y.dtype}")

    def _init(self, y: torch.Tensor) -> torch.Tensor:
        op = self.operator
        if self.init == "pinv" and op.has_pinv:
            return op.pinv(y)
        return op.lift(y)  # e.g. deblur, which has no cheap pseudo-inverse

    def _check_init(self, init: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        op = self.operator
        expected = (y.shape[0], op.channels, op.resolution, op.resolution)
        if not isinstance(init, torch.Tensor) or tuple(init.shape) != expected:
            shape = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
            raise ValueError(f"{op.name}: warm-start image must have shape {expected}, got {shape}")
        return init.detach().to(device=y.device, dtype=y.dtype)

    def __call__(self, y: torch.Tensor, seeds: list[int] | None = None, progress: bool = False,
                 callback: Callable[[int, int, torch.Tensor], None] | None = None,
                 init: torch.Tensor | None = None) -> torch.Tensor:
        """``init``, if given, is the starting estimate (B, C, H, W) (a warm start); else the solver's ``init`` rule."""
        self._check_measurement(y)
        B = y.shape[0]
        seeds = list(range(B)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != B:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {B} measurements")
        prior, op = self.prior, self.operator
        y = y.detach()
        # Noise is drawn on the CPU from one generator per image, then moved: the same seeds
        # give the same noise on every device and for every batch composition.
        gens = [torch.Generator().manual_seed(s) for s in seeds]

        with torch.enable_grad():
            with torch.no_grad():
                mu0 = self._init(y) if init is None else self._check_init(init, y)
            mu = mu0.detach().clone().to(dtype=y.dtype).requires_grad_(True)
            opt = torch.optim.Adam([mu], lr=self.lr, betas=self.betas)
            steps = self.timesteps()
            for k, t_int in enumerate(tqdm(steps, desc="red-diff", disable=not progress, leave=False)):
                t = torch.full((B,), t_int, dtype=torch.long, device=y.device)
                ab = prior.alpha_bar(t, mu)
                eps = torch.stack([torch.randn(mu.shape[1:], generator=g, dtype=mu.dtype) for g in gens])
                eps = eps.to(mu.device)
                with torch.no_grad():
                    x_t = ab.sqrt() * mu + (1 - ab).sqrt() * eps
                    gap = (prior.eps(x_t, t).to(mu.dtype) - eps).detach()  # stopgrad(eps_theta - eps)
                w = ((1 - ab) / ab).sqrt()  # inverse SNR, (B, 1, 1, 1)

                obs = 0.5 * _per_sample_mean((y - op(mu)) ** 2)
                reg = _per_sample_mean(w * gap * mu)
                loss = (self.obs_weight * obs + self.lam * reg).sum()  # sum: images are independent

                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if callback is not None:
                    callback(k, t_int, mu.detach())
        return mu.detach()
