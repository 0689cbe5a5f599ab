"""The one-step restorer: an export folder in, posterior samples, their mean and spread, and a
consistency check out (DAVI, Lee et al. 2024: ``x = I_phi(lift(y) + h z, T - 1)``).

    restorer = davi.Restorer.from_pretrained("davi/assets/mappers/sr4_sampler")
    out = restorer(y, samples=8, seed=0)          # out.samples, out.mean, out.std, out.consistency, out.flagged
    out = restorer(y, samples=4, refine="auto")   # flagged images refined with warm-started RED-Diff

A family export (one mapper for a family of operators and noise levels) restores any member, named per
call: ``restorer(y, operator={"name": "deblur", "kernel_std": 1.7}, sigma_y=0.08)``.
"""

from __future__ import annotations

import math
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
                 dtype: torch.dtype = torch.float32, runtime: str = "torch", noise_on_device: bool = False,
                 family=None, member_named: bool = False):
        self.mapper, self.operator, self.card = mapper, operator, card
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.dtype, self.runtime, self.noise_on_device = dtype, runtime, noise_on_device
        self.family, self._member_named = family, member_named  # a family export: which member is restored
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
        family = _card_family(typed, path)
        if family is not None and runtime == "onnx":
            raise ExportError(f"{path}: a family export runs in PyTorch only (its ONNX graph is not written yet)")
        return cls(mapper, operator, typed, path, dtype, runtime, noise_on_device, family)

    def with_operator(self, operator=None, sigma_y: float | None = None) -> "Restorer":
        """This restorer for another operator: an :class:`~davi.operators.Operator` or its params dict
        (``{"name": "deblur", "kernel_std": 1.7}``; unset keys take the operator's defaults), and/or
        another ``sigma_y``. A family export accepts any member of its family, another export only its
        own operator; anything else is a one-line OperatorError naming what is outside."""
        return self._with(_named_operator(self, operator, sigma_y), member_named=True)

    def _with(self, operator, member_named: bool) -> "Restorer":
        other = Restorer(self.mapper, operator.to(self.device), self.card, self.export_dir, self.dtype, self.runtime,
                         self.noise_on_device, self.family, member_named=member_named)
        other._prior = self._prior
        return other

    @property
    def threshold(self) -> float | None:
        """The consistency threshold for this restorer's operator and noise level (a family export's
        depends on sigma_y: ExportCard.threshold_at), or None when the card has none."""
        return self.card.threshold_at(self.operator.sigma_y)

    @property
    def size_multiple(self) -> int:
        """Image sides the mapper's network takes are multiples of this (its UNet halves them once per level)."""
        return 2 ** (len(self.mapper.config.unet_config["down_block_types"]) - 1)

    def at_size(self, side: int) -> "Restorer":
        """This restorer for ``side`` x ``side`` images: the mapper is fully convolutional, so one trained on
        32x32 digits or 64x64 patches restores larger images (the operator is rebuilt at that size with the
        same settings: kernel, scale, box size). A size it cannot take is a one-line OperatorError naming
        the sizes that work."""
        from davi.operators import OperatorError, operator_from_params

        if side == self.operator.resolution:
            return self
        m = self.size_multiple
        works = f"square images whose side is a multiple of {m} (e.g. {m * 4}, {m * 8}, {m * 32})"
        if side < m or side % m:
            raise OperatorError(f"{self.card.task}: {side}x{side} images: this mapper takes {works}")
        if self.runtime == "onnx":
            raise ExportError(f"{self.export_dir}: the ONNX graph is fixed at {self.card.resolution}x"
                              f"{self.card.resolution}; restore {side}x{side} images with runtime='torch'")
        try:
            op = operator_from_params({**self.operator.params(), "resolution": side})
        except OperatorError as e:
            raise OperatorError(f"{self.card.task}: {side}x{side} images: {e}") from None
        return self._with(op, self._member_named)

    def image_side(self, y: torch.Tensor) -> int:
        """The side of the square images the measurements ``y`` (B, C, h, h) measure (one-line errors otherwise)."""
        from davi.operators import OperatorError

        if not isinstance(y, torch.Tensor) or y.dim() != 4 or not y.is_floating_point():
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise OperatorError(f"{self.card.task}: measurements must be a float tensor (B, C, h, w), got {got}")
        measured = self.operator.measurement_shape(self.image_shape(1))[2]
        side, rest = divmod(y.shape[2] * self.operator.resolution, measured)
        if y.shape[2] != y.shape[3]:
            raise OperatorError(f"{self.card.task}: measurements must be square (B, C, h, h), got {tuple(y.shape)}")
        if rest:  # an operator whose measurement is larger than its image: only some sides map back
            step = measured // math.gcd(measured, self.operator.resolution)
            raise OperatorError(f"{self.card.task}: the measurement side must be a multiple of {step}, got "
                                f"{tuple(y.shape)}")
        return side

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
        """(batch, C, H, W) of the images this restorer restores (the export's size unless :meth:`at_size`)."""
        return batch, self.card.channels, self.operator.resolution, self.operator.resolution

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
        from davi.solvers.methods import DaviMethod, member_method

        if self.runtime == "onnx":
            from davi.io.onnx import OnnxDaviMethod

            return OnnxDaviMethod(self.export_dir, self.operator)
        if self.family is not None:
            return member_method(self.mapper, self.family, self.operator, dtype=self.dtype,
                                 noise_on_device=self.noise_on_device)
        return DaviMethod(self.mapper, self.operator, self.dtype, noise_on_device=self.noise_on_device)

    def refining_method(self, refine: int | str):
        """The one-step method followed by warm-started RED-Diff steps: ``"auto"`` refines the images the
        card's threshold flags (19 steps), an integer K refines every image with K steps."""
        from davi.solvers.consistency import parse_refine
        from davi.solvers.methods import REFINE_STEPS, RefinedDaviMethod, Refiner

        steps = parse_refine(str(refine))
        threshold = self.threshold
        if steps == "auto" and threshold is None:
            raise ExportError(f"{self.export_dir or 'this export'}: no consistency threshold in the card, which "
                              f"refine='auto' needs (refine=K refines every image)")
        refiner = Refiner(self.prior, self.operator, steps=REFINE_STEPS if steps == "auto" else steps)
        return RefinedDaviMethod(self.one_step_method(), refiner, threshold if steps == "auto" else None)

    def __call__(self, y: torch.Tensor, samples: int = 1, seed: int = 0, refine: int | str | None = None,
                 batch_size: int = 16, progress: bool = True, operator=None,
                 sigma_y: float | None = None) -> Restoration:
        """``samples`` restorations of each measurement in ``y`` (B, C, h, w); image i's draws depend only
        on (``seed``, i). ``refine``: None, ``"auto"`` or a number of RED-Diff steps (see
        :meth:`refining_method`). ``operator`` / ``sigma_y``: the member of a family export that measured
        ``y`` (see :meth:`with_operator`)."""
        from davi.solvers.consistency import residual_statistic
        from davi.solvers.methods import restore_in_batches

        if operator is not None or sigma_y is not None:
            return self.with_operator(operator, sigma_y)(y, samples, seed, refine, batch_size, progress)
        if self.family is not None and not self._member_named:
            raise ExportError(f"{self.export_dir or 'this export'}: a family export restores any member of "
                              f"{self.family.describe()}: name the one that measured y (operator=..., sigma_y=...)")
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive integer, got {samples!r}")
        side = self.image_side(y)
        if side != self.operator.resolution:
            return self.at_size(side)(y, samples, seed, refine, batch_size, progress)
        y = self.check_measurement(y)
        method = self.one_step_method() if refine is None else self.refining_method(refine)
        run = restore_in_batches(method, y, samples, seed, batch_size, progress)
        noisy = self.operator.sigma_y > 0  # without noise the statistic has no scale
        stat = residual_statistic(self.operator, run.samples[0].to(self.device), y).cpu() if noisy else None
        one_step = run.one_step_statistic if refine is not None else stat
        threshold = self.threshold
        flagged = one_step > threshold if threshold is not None and one_step is not None and noisy else None
        nfe = float(samples)
        if run.refined is not None:  # refined images cost 1 + steps per sample, the others 1
            nfe = samples * (1 + method.refiner.steps * float(run.refined.float().mean()))
        return Restoration(run.samples, stat, flagged, run.refined, one_step if noisy else None, nfe,
                           run.batch_seconds)

    def __repr__(self) -> str:
        return (f"Restorer(task={self.card.task!r}, objective={self.card.objective!r}, "
                f"export={str(self.export_dir)!r}, device={self.device})")


def _card_family(card: ExportCard, path):
    """The OperatorFamily a family export's card records, or None."""
    if "family" not in card.extra:
        return None
    from davi.operators import OperatorError
    from davi.operators.family import OperatorFamily

    try:
        return OperatorFamily.from_params(card.extra["family"])
    except (OperatorError, KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{Path(path) / 'card.json'}: bad family ({e})") from None


def _named_operator(restorer: Restorer, operator, sigma_y: float | None):
    """The operator a call names, checked against what the export was trained for."""
    from davi.operators import Operator, OperatorError, operator_from_params

    base = restorer.operator.params() if operator is None else (
        operator.params() if isinstance(operator, Operator) else dict(operator))
    if not isinstance(base, dict) or "name" not in base:
        raise OperatorError(f"operator: expected an Operator or a params dict with a 'name', got {operator!r}")
    # unset keys: a family member's own settings (e.g. its kernel size), else the export's operator's
    member = next((m.base for m in restorer.family.members if m.name == base["name"]), {}) if restorer.family else {}
    if restorer.family is not None and sigma_y is None and "sigma_y" not in base:
        raise OperatorError(f"sigma_y: a family export needs the measurement's noise level ({restorer.family.describe()})")
    params = {"resolution": restorer.card.resolution, "channels": restorer.card.channels,
              "sigma_y": restorer.operator.sigma_y, **member, **base, **({} if sigma_y is None else {"sigma_y": sigma_y})}
    op = operator_from_params(params)
    if restorer.family is not None:
        restorer.family.check(op)
    elif op.params() != restorer.operator.params():
        raise OperatorError(f"{restorer.card.task}: this export was trained for {restorer.operator.describe()} at "
                            f"sigma_y {restorer.operator.sigma_y:g} only, not {op.describe()} at sigma_y "
                            f"{op.sigma_y:g} (a family export covers ranges)")
    return op
