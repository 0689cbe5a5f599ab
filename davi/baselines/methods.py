"""DPS, DiffPIR and DDRM from deepinv 0.5.0 as davi Methods: ``method(y, seeds, num_samples) -> (K, B, C, H, W)``.

Each runs deepinv's own sampler, unedited, at deepinv's published defaults, on our prior (through
:class:`~davi.baselines.adapters.PriorDenoiser`) and our operator (through
:func:`~davi.baselines.adapters.as_physics`). What we adapt, and why:

* **pixel range**: y is handed over as ``(y + A 1) / 2`` with noise std ``sigma_y / 2`` (deepinv's
  samplers and denoisers work on [0, 1]); the result ``x'`` comes back as ``2 x' - 1``, clamped to
  [-1, 1] like every davi method's output;
* **noise level -> timestep**: the denoiser evaluates the prior at the timestep of nearest noise level
  (DPS's continuous VP SDE with beta 0.1 .. 20 and DiffPIR's beta 1e-4 .. 0.02 grid are the continuous
  and discrete forms of our DDPM schedule; DDRM's default sigmas 1 .. 0 lie on it);
* **seeds**: every (image, sample) is one deepinv run on a batch of one with the global RNG seeded inside
  ``torch.random.fork_rng`` (deepinv's DiffPIR and DDRM draw from the global RNG and ignore seed 0; DPS
  from its solver's generator, None by default): a restoration depends on its image's seed only, and the
  caller's RNG state is untouched. :meth:`DeepinvMethod.sample` runs a whole batch under one seed (the
  posterior benchmark's fast path).

Settings (deepinv 0.5.0 defaults): DPS ``num_steps=1000, weight=1.0, guidance="norm", solver="ddpm",
schedule="vp"`` (the denoised estimate clipped to [-1, 1] by deepinv); DiffPIR ``max_iter=100, zeta=0.1,
lambda_=7.0`` with the L2 data fidelity (its noise level read from the physics: ``sigma_y / 2``); DDRM
``sigmas=linspace(1, 0, 100), eta=0.85, etab=1.0``, on operators with an SVD only.
"""

from __future__ import annotations

import torch

from davi.solvers.methods import Method

DPS_DEFAULTS = {"num_steps": 1000, "weight": 1.0, "guidance": "norm", "solver": "ddpm", "schedule": "vp"}
DIFFPIR_DEFAULTS = {"max_iter": 100, "zeta": 0.1, "lambda_": 7.0}
DDRM_DEFAULTS = {"steps": 100, "eta": 0.85, "etab": 1.0}
# Tuning grids (davi.eval.tuning.bounded_search): three values a factor of 3 apart with deepinv's default in
# the middle (DDRM: eta 0.85 sits just below its bound 1), widened by that factor while the best train PSNR lies
# on an edge. zeta (DiffPIR) and eta (DDRM) weight fresh noise against the model's and must lie in [0, 1]
# (deepinv): a widening stops at the bound, and a choice on it is the best admissible value, reported "at the
# bound", never as interior. weight (DPS) and lambda_ (DiffPIR) are unbounded.
TUNING_GRIDS = {"dps": {"weight": (0.3, 1.0, 3.0)},
                "diffpir": {"lambda_": (2.333333, 7.0, 21.0), "zeta": (0.033333, 0.1, 0.3)},
                "ddrm": {"eta": (0.283333, 0.85, 1.0)}}
TUNING_BOUNDS = {"zeta": (0.0, 1.0), "eta": (0.0, 1.0)}


def run_seed(seed: int, k: int) -> int:
    """The deepinv run's seed for sample ``k`` of an image with seed ``seed`` (never 0: DiffPIR and DDRM
    skip seeding on 0)."""
    return int(seed) * 1000 + k + 1


class DeepinvMethod(Method):
    """Shared plumbing; subclasses build ``self.model`` and implement :meth:`_run` (on [0, 1] measurements)."""

    stochastic = True
    decomposable: bool | None = None

    def __init__(self, prior, operator, progress: bool = False):
        from davi.baselines.adapters import PriorDenoiser, as_physics

        self.prior, self.operator, self.progress = prior, operator, progress
        self.denoiser = PriorDenoiser(prior)
        self.physics = as_physics(operator, decomposable=self.decomposable)

    def _run(self, y_unit: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def slug(self) -> str:
        """A folder name for the settings: those that differ from deepinv's defaults, else "default" (a tuned
        choice equal to the defaults shares their cache)."""
        return "_".join(f"{k}{v:g}" for k, v in sorted(self.settings.items()) if self.defaults.get(k) != v) or "default"

    def cache_key(self, y: torch.Tensor, seed: int) -> dict:
        """What :meth:`sample` of ``y`` at ``seed`` depends on, as a cache's key: the method and all its
        settings, deepinv's version, y by digest, the seed, and the prior (its weights' digest, else its source)."""
        from davi.baselines._require import DEEPINV_VERSION
        from davi.io.chunks import digest

        prior = getattr(self.prior, "digest", "") or getattr(self.prior, "identity", "")
        return {"version": 1, "method": self.name, "settings": self.settings, "deepinv": DEEPINV_VERSION,
                "y": digest(y), "seed": seed, "prior": prior}

    def sample(self, y: torch.Tensor, seed: int, clamp: bool = True) -> torch.Tensor:
        """One restoration of every measurement in ``y`` (B, ...), the whole batch drawn from ``seed``;
        ``clamp=False`` keeps values outside [-1, 1] (posterior checks: clamping cuts the tails)."""
        from davi.baselines.adapters import from_unit, to_unit

        self.denoiser.to(y.device)
        self.physics.to(y.device)
        devices = [y.device] if y.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            x = self._run(to_unit(y.float(), self.operator))
        x = from_unit(x.detach().to(y.dtype))
        return x.clamp(-1, 1) if clamp else x

    def __call__(self, y, seeds, num_samples=1):
        from tqdm.auto import tqdm

        out = torch.empty(num_samples, *y.shape[:1], *self.image_shape(y), dtype=y.dtype, device=y.device)
        jobs = [(k, i) for k in range(num_samples) for i in range(y.shape[0])]
        for k, i in tqdm(jobs, desc=self.name, disable=not self.progress):
            out[k, i] = self.sample(y[i: i + 1], run_seed(seeds[i], k))[0]
        return out

    def image_shape(self, y) -> tuple[int, int, int]:
        return self.operator.channels, self.operator.resolution, self.operator.resolution


class DpsMethod(DeepinvMethod):
    """Diffusion posterior sampling (Chung et al., ICLR 2023): deepinv.sampling.DPS."""

    name = "dps"
    defaults = DPS_DEFAULTS

    def __init__(self, prior, operator, progress: bool = False, **settings):
        super().__init__(prior, operator, progress)
        from davi.baselines.adapters import dinv

        self.settings = {**DPS_DEFAULTS, **settings}
        self.nfe_per_sample = self.settings["num_steps"]  # each with a backward pass through the prior
        self._models: dict[str, object] = {}  # deepinv builds DPS's time grid on one device: one per device

    def _run(self, y_unit):
        from davi.baselines.adapters import dinv

        key = str(y_unit.device)
        if key not in self._models:
            self._models[key] = dinv.sampling.DPS(self.denoiser, device=y_unit.device, **self.settings)
        return self._models[key](y_unit, self.physics)


class DiffPirMethod(DeepinvMethod):
    """Denoising diffusion models for plug-and-play image restoration (Zhu et al., CVPRW 2023):
    deepinv.sampling.DiffPIR with the L2 data fidelity."""

    name = "diffpir"
    defaults = DIFFPIR_DEFAULTS

    def __init__(self, prior, operator, progress: bool = False, **settings):
        super().__init__(prior, operator, progress)
        from davi.baselines.adapters import dinv, noise_std

        self.settings = {**DIFFPIR_DEFAULTS, **settings}
        self.nfe_per_sample = self.settings["max_iter"]
        self.model = dinv.sampling.DiffPIR(self.denoiser, dinv.optim.data_fidelity.L2(),
                                           sigma=noise_std(operator), **self.settings)

    def _run(self, y_unit):
        return self.model(y_unit, self.physics)


class DdrmMethod(DeepinvMethod):
    """Denoising diffusion restoration models (Kawar et al., NeurIPS 2022): deepinv.sampling.DDRM; needs the
    operator's SVD (inpainting, denoising, SR by average pooling, separable blur)."""

    name = "ddrm"
    defaults = DDRM_DEFAULTS
    decomposable = True

    def __init__(self, prior, operator, progress: bool = False, **settings):
        super().__init__(prior, operator, progress)
        import numpy as np

        from davi.baselines.adapters import dinv

        self.settings = {**DDRM_DEFAULTS, **settings}
        self.nfe_per_sample = self.settings["steps"]
        sigmas = np.linspace(1, 0, self.settings["steps"])
        self.model = dinv.sampling.DDRM(self.denoiser, sigmas=sigmas, eta=self.settings["eta"],
                                        etab=self.settings["etab"])

    def _run(self, y_unit):
        return self.model(y_unit, self.physics)


BASELINES = {"dps": DpsMethod, "diffpir": DiffPirMethod, "ddrm": DdrmMethod}


def baseline_method(name: str, prior, operator, progress: bool = False, **settings) -> DeepinvMethod:
    """The Method for ``name`` (``dps``, ``diffpir``, ``ddrm``) at deepinv's defaults (``settings`` override)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r} (one of {', '.join(BASELINES)})")
    return BASELINES[name](prior, operator, progress=progress, **settings)
