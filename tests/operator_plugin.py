"""A user operator outside the package, reached as ``operator.name: operator_plugin:Decimate``
(tests/ is on pytest's pythonpath). It reads an existing config key (``operator.scale``)."""

from __future__ import annotations

from typing import Any

import torch

from davi.operators import Operator, OperatorError


class Decimate(Operator):
    """Keep every ``s``-th pixel: ``A x = x[..., ::s, ::s]``; ``A^T`` puts the values back among
    zeros, which is also a right inverse (``A A^T = I``); ``lift`` repeats each value."""

    has_pinv = True

    def __init__(self, sigma_y: float, resolution: int, channels: int, scale: int):
        super().__init__(sigma_y, resolution, channels)
        self.scale = scale

    @classmethod
    def from_config(cls, cfg: Any, resolution: int, channels: int) -> "Decimate":
        if not isinstance(cfg.scale, int) or cfg.scale < 1 or resolution % cfg.scale:
            raise OperatorError(f"operator.scale: expected a divisor of {resolution}, got {cfg.scale!r}")
        return cls(cfg.sigma_y, resolution, channels, cfg.scale)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "scale": self.scale}

    def _measured_hw(self, h: int, w: int) -> tuple[int, int]:
        return h // self.scale, w // self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        return x[..., :: self.scale, :: self.scale]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        s = self.scale
        x = y.new_zeros(*y.shape[:2], y.shape[-2] * s, y.shape[-1] * s)
        x[..., ::s, ::s] = y
        return x

    pinv = adjoint

    def lift(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        return y.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)


class NotAnOperator:
    pass
