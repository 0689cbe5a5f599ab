"""The one-step restorer: an export folder in, posterior samples, their mean and spread, and a
consistency check out (DAVI, Lee et al. 2024: ``x = I_phi(lift(y) + h z, T - 1)``).

    restorer = davi.Restorer.from_pretrained("davi/assets/mappers/sr4_sampler")
    out = restorer(y, samples=8, seed=0)          # out.samples, out.mean, out.std, out.consistency, out.flagged
    out = restorer(y, samples=4, refine="auto")   # flagged images refined with warm-started RED-Diff
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from davi.data.datasets import DataError
from davi.io.card import ExportCard, ExportError


@dataclass(frozen=True)
class Restoration:
    """What :class:`Restorer` returns for ``B`` measurements and ``K`` samples each.

    ``consistency`` (B,) is ``||A x - y||^2 / (M sigma_y^2)`` of the first returned sample (None when
    ``sigma_y = 0``); ``flagged`` (B,) says which one-step answers exceed the card's threshold (None
    without a threshold): such an answer does not explain its measurement, do not trust it.
    ``refined`` (B,) says which images were refined (None without ``refine``).
    """

    samples: torch.Tensor
    consistency: torch.Tensor | None = None
    flagged: torch.Tensor | None = None
    refined: torch.Tensor | None = None
    one_step_consistency: torch.Tensor | None = None
    network_evaluations: float = 1.0  # per image, all samples
    batch_seconds: list[tuple[float, int]] = field(default_factory=list, repr=False)

    @property
    def mean(self) -> torch.Tensor:
        """The samples' mean (B, C, H, W): the restoration."""
        return self.samples.mean(0)

    @property
    def std(self) -> torch.Tensor:
        """The samples' per-pixel standard deviation (zeros for one sample); a posterior std only for
        a mapper trained with the sampler objective (``card.objective == "sampler"``)."""
        return self.samples.std(0) if self.samples.shape[0] > 1 else torch.zeros_like(self.samples[0])


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    names = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in names:
        raise ExportError(f"dtype {dtype!r}: not one of {', '.join(names)}")
    return names[dtype]


class Restorer:
    """One-step posterior sampling with a trained mapper export (DAVI, Lee et al. 2024).

    Load one with :meth:`from_pretrained`; call it on measurements ``y`` of shape
    ``operator.measurement_shape((B, C, H, W))`` (pixels in [-1, 1]) to get a :class:`Restoration`.
    ``restorer.card`` (an :class:`~davi.io.card.ExportCard`) says the task, the operator's settings,
    ``sigma_y``, the objective and the consistency threshold; ``restorer.operator`` is the operator
    (``restorer.operator.measure(x, generator=g)`` simulates measurements of clean images ``x``).
    """

    def __init__(self, mapper, operator, card: ExportCard, export_dir: str | Path | None = None,
                 dtype: torch.dtype = torch.float32, runtime: str = "torch", noise_on_device: bool = False):
        self.mapper, self.operator, self.card = mapper, operator, card
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.dtype, self.runtime, self.noise_on_device = dtype, runtime, noise_on_device
        self._prior = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32",
                        runtime: str = "torch", trust_remote_code: bool = False,
                        noise_on_device: bool = False) -> "Restorer":
        """The restorer of an export folder (``card.json`` + safetensors weights).

        ``dtype`` ``fp16``/``bf16`` need a GPU; ``runtime="onnx"`` runs the export's ``mapper.onnx`` in
        ONNX Runtime (CPU, fp32). An operator the card names by import path is code outside davi and
        is refused unless ``trust_remote_code=True``. Errors are one-line :class:`ExportError`.
        """
        from davi.io.export import load_export

        device, dtype = torch.device(device), _dtype(dtype)
        if runtime not in ("torch", "onnx"):
            raise ExportError(f"runtime {runtime!r}: not one of torch, onnx")
        if runtime == "onnx" and (device.type != "cpu" or dtype != torch.float32):
            raise ExportError("runtime onnx runs on the CPU in fp32 (ONNX Runtime); drop device/dtype")
        if dtype != torch.float32 and device.type != "cuda":
            raise ExportError(f"dtype {dtype} needs a GPU; this run is on {device}")
        mapper, card, operator = load_export(path, device, trust_remote_code=trust_remote_code)
        typed = ExportCard.from_dict(card, str(Path(path) / "card.json"))
        typed.threshold  # a broken consistency entry is an error now, not mid-restore
        return cls(mapper, operator, typed, path, dtype, runtime, noise_on_device)

    @property
    def device(self) -> torch.device:
        return next(self.mapper.parameters()).device

    @property
    def prior(self):
        """The diffusion prior the export was trained against (loaded on first use: refinement and
        RED-Diff need it, one-step restores do not); assign another one to use it instead."""
        if self._prior is None:
            from davi.models.prior import DiffusionPrior

            self._prior = DiffusionPrior.from_pretrained(self.card.prior.identity).to(self.device)
        return self._prior

    @prior.setter
    def prior(self, prior) -> None:
        self._prior = prior

    def image_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        """(batch, C, H, W) of the images this export restores."""
        return batch, self.card.channels, self.card.resolution, self.card.resolution

    def check_measurement(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` on the restorer's device, after one-line errors for a wrong type, shape or non-finite value."""
        from davi.operators import OperatorError

        if not isinstance(y, torch.Tensor) or y.dim() != 4 or not y.is_floating_point():
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise OperatorError(f"{self.card.task}: measurements must be a float tensor (B, C, h, w), got {got}")
        expected = self.operator.measurement_shape(self.image_shape(y.shape[0]))
        if tuple(y.shape) != tuple(expected):
            raise OperatorError(f"{self.card.task}: measurements must have shape (B, {expected[1]}, {expected[2]}, "
                                f"{expected[3]}), got {tuple(y.shape)}")
        bad = (~torch.isfinite(y.flatten(1))).any(1).nonzero().flatten().tolist()
        if bad:
            raise DataError(f"measurement {bad[0]}: contains NaN or infinite values")
        return y.to(self.device)

    def one_step_method(self):
        """The one-network-evaluation method behind a call (PyTorch, or ONNX Runtime)."""
        from davi.solvers.methods import DaviMethod

        if self.runtime == "onnx":
            from davi.io.onnx import OnnxDaviMethod

            return OnnxDaviMethod(self.export_dir, self.operator)
        return DaviMethod(self.mapper, self.operator, self.dtype, noise_on_device=self.noise_on_device)

    def refining_method(self, refine: int | str):
        """The one-step method followed by warm-started RED-Diff steps: ``"auto"`` refines the images the
        card's threshold flags (19 steps), an integer K refines every image with K steps."""
        from davi.solvers.consistency import parse_refine
        from davi.solvers.methods import REFINE_STEPS, RefinedDaviMethod, Refiner

        steps = parse_refine(str(refine))
        threshold = self.card.threshold
        if steps == "auto" and threshold is None:
            raise ExportError(f"{self.export_dir or 'this export'}: no consistency threshold in the card, which "
                              f"refine='auto' needs (refine=K refines every image)")
        refiner = Refiner(self.prior, self.operator, steps=REFINE_STEPS if steps == "auto" else steps)
        return RefinedDaviMethod(self.one_step_method(), refiner, threshold if steps == "auto" else None)

    def __call__(self, y: torch.Tensor, samples: int = 1, seed: int = 0, refine: int | str | None = None,
                 batch_size: int = 16, progress: bool = True) -> Restoration:
        """``samples`` restorations of each measurement in ``y`` (B, C, h, w); image i's draws depend only
        on (``seed``, i). ``refine``: None, ``"auto"`` or a number of RED-Diff steps (see
        :meth:`refining_method`)."""
        from davi.solvers.consistency import residual_statistic
        from davi.solvers.methods import restore_in_batches

        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive integer, got {samples!r}")
        y = self.check_measurement(y)
        method = self.one_step_method() if refine is None else self.refining_method(refine)
        run = restore_in_batches(method, y, samples, seed, batch_size, progress)
        noisy = self.operator.sigma_y > 0  # without noise the statistic has no scale
        stat = residual_statistic(self.operator, run.samples[0].to(self.device), y).cpu() if noisy else None
        one_step = run.one_step_statistic if refine is not None else stat
        threshold = self.card.threshold
        flagged = one_step > threshold if threshold is not None and one_step is not None and noisy else None
        nfe = float(samples)
        if run.refined is not None:  # refined images cost 1 + steps per sample, the others 1
            nfe = samples * (1 + method.refiner.steps * float(run.refined.float().mean()))
        return Restoration(run.samples, stat, flagged, run.refined, one_step if noisy else None, nfe,
                           run.batch_seconds)

    def __repr__(self) -> str:
        return (f"Restorer(task={self.card.task!r}, objective={self.card.objective!r}, "
                f"export={str(self.export_dir)!r}, device={self.device})")
