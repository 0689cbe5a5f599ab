"""Super resolution operators."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from davi.operators.base import Operator, OperatorError, _is_int
from davi.operators.registry import register_operator


@register_operator("sr")
class SuperResolution(Operator):
    r"""Super-resolution: ``A x = avgpool_s(x)``, the mean of each ``s x s`` block (``s = operator.scale``).

    ``A^T y = up_s(y) / s^2`` (nearest upsampling spreads each value over its block);
    ``pinv(y) = up_s(y)`` is a right inverse (``A up_s y = y``); ``lift(y)`` is bilinear
    upsampling. Images need H and W divisible by ``s``.
    """

    has_pinv = True

    def __init__(self, sigma_y: float, resolution: int, channels: int, scale: int):
        super().__init__(sigma_y, resolution, channels)
        self.scale = int(scale)

    @classmethod
    def from_config(cls, cfg: Any, resolution: int, channels: int) -> "SuperResolution":
        if not _is_int(cfg.scale) or cfg.scale < 1:
            raise OperatorError(f"operator.scale: expected an integer >= 1, got {cfg.scale!r}")
        if resolution % cfg.scale:
            raise OperatorError(
                f"operator.scale: image shape {resolution} x {resolution} is not divisible by scale {cfg.scale}"
            )
        return cls(cfg.sigma_y, resolution, channels, cfg.scale)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "scale": self.scale}

    def describe(self) -> str:
        return f"{self.scale}x super-resolution ({self.scale}x{self.scale} average pooling)"

    def _check_spatial(self, shape: tuple, what: str) -> None:
        if what == "image" and (shape[-2] % self.scale or shape[-1] % self.scale):
            raise OperatorError(
                f"sr: image shape {shape} is not divisible by operator.scale={self.scale} (H and W must be)"
            )

    def _measured_hw(self, h: int, w: int) -> tuple[int, int]:
        return h // self.scale, w // self.scale

    def _nearest(self, y: torch.Tensor) -> torch.Tensor:
        s = self.scale
        return y.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        return F.avg_pool2d(x, self.scale) if self.scale > 1 else x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        return self._nearest(y) / self.scale**2

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        return self._nearest(y)

    def lift(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        if self.scale == 1:
            return y
        return F.interpolate(y, scale_factor=self.scale, mode="bilinear", align_corners=False)


# -- inpainting ------------------------------------------------------------------------------
