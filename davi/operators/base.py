"""The operator base class: ``A``, ``A^T``, lift, pinv, measurement noise and shape checks."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class OperatorError(ValueError):
    """A bad operator setting or data file, or an image / measurement of the wrong shape."""


def _shape(s: Any) -> tuple:
    return tuple(int(v) for v in s)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# -- the base class ---------------------------------------------------------------------------


class Operator(nn.Module):
    """A linear measurement operator ``A`` with Gaussian measurement noise of std ``sigma_y``.

    A subclass implements ``forward``/``adjoint``/``lift`` (and ``pinv`` with ``has_pinv``),
    ``from_config`` when it reads settings beyond ``sigma_y``, and ``params`` returning those
    settings under their ``operator.*`` config names: :func:`operator_from_params` reads a
    params dict back through ``from_config``, so the two must agree.
    """

    # The registered name (set by register_operator), else the class's "module:Class" import path.
    name: str = ""
    has_pinv: bool = False
    # The config keys naming data files this operator reads (e.g. "kernel_file").
    data_files: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # An unregistered subclass is known by its import path: what operator.name gives to
        # reach it and what params() stores, so user operators round-trip through export cards.
        cls.name = f"{cls.__module__}:{cls.__qualname__}"

    def __init__(self, sigma_y: float, resolution: int, channels: int):
        super().__init__()
        self.sigma_y = float(sigma_y)
        self.resolution = int(resolution)
        self.channels = int(channels)

    @classmethod
    def from_config(cls, cfg: Any, resolution: int, channels: int) -> "Operator":
        """The operator for ``cfg`` (an ``OperatorConfig``, or a params dict read like one).

        :func:`build_operator` has checked ``cfg.sigma_y``, ``resolution`` and ``channels``;
        a subclass checks its own keys and raises OperatorError naming the ``operator.*`` key.
        """
        return cls(cfg.sigma_y, resolution, channels)

    def params(self) -> dict[str, Any]:
        """JSON-able settings; :func:`operator_from_params` rebuilds an identical operator."""
        return {"name": self.name, "sigma_y": self.sigma_y, "resolution": self.resolution, "channels": self.channels}

    def describe(self) -> str:
        """A human name for the task, e.g. '4x super-resolution (4x4 average pooling)' (model cards, logs)."""
        return self.name

    # -- geometry -------------------------------------------------------------------------
    def _check_spatial(self, shape: tuple, what: str) -> None:
        """Raise OperatorError when an image of ``shape`` (B, C, H, W) does not fit."""

    def _measured_hw(self, h: int, w: int) -> tuple[int, int]:
        return h, w

    def _check_image(self, x: torch.Tensor, what: str = "image") -> None:
        if not isinstance(x, torch.Tensor):
            raise OperatorError(f"{self.name}: {what} must be a tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise OperatorError(f"{self.name}: {what} must have shape (B, C, H, W), got {_shape(x.shape)}")
        if not x.is_floating_point():
            raise OperatorError(f"{self.name}: {what} must be floating point, got {x.dtype}")
        self._check_spatial(_shape(x.shape), what)

    def measurement_shape(self, image_shape) -> tuple[int, int, int, int]:
        """Shape of ``A x`` for images of shape ``(B, C, H, W)``."""
        shape = _shape(image_shape)
        if len(shape) != 4 or min(shape) < 1:
            raise OperatorError(f"{self.name}: image shape must be (B, C, H, W), got {shape}")
        self._check_spatial(shape, "image")
        b, c, h, w = shape
        return (b, c, *self._measured_hw(h, w))

    def check_measurement(self, y: torch.Tensor, image_shape) -> None:
        """Raise OperatorError unless ``y`` is a measurement of images of ``image_shape``."""
        expected = self.measurement_shape(image_shape)
        actual = _shape(y.shape) if isinstance(y, torch.Tensor) else None
        if actual != expected:
            raise OperatorError(
                f"{self.name}: measurement has shape {actual}, expected {expected} "
                f"for images of shape {_shape(image_shape)}"
            )

    # -- the operator ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # A x
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # A^T y
        raise NotImplementedError

    def lift(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name}: no cheap pseudo-inverse (has_pinv is False)")

    def measured_mask(self, y: torch.Tensor) -> torch.Tensor | None:
        """1 on the measured entries of ``y``, 0 on unobserved ones (no noise there); None: all measured."""
        return None

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``A x + sigma_y * n``; ``n`` is drawn from ``generator`` (any device) when given."""
        y = self(x)
        if generator is None:
            n = torch.randn_like(y)
        else:
            dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
            n = torch.randn(y.shape, generator=generator, device=generator.device, dtype=dtype).to(y)
        mask = self.measured_mask(y)
        if mask is not None:
            n = n * mask
        return y + self.sigma_y * n

    def extra_repr(self) -> str:
        # Data-file values (kernel, mask) are too long for a repr; the file name says where they came from.
        shown = {k: v for k, v in self.params().items() if k != "name" and not isinstance(v, list)}
        return ", ".join(f"{k}={v!r}" for k, v in shown.items())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""
