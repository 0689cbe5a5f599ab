"""Denoise operators."""

from __future__ import annotations

import torch

from davi.operators.base import Operator
from davi.operators.registry import register_operator


@register_operator("denoise")
class Denoise(Operator):
    """Denoising: ``A = I``, so ``A^T = pinv = lift = I`` and ``y = x + sigma_y n``."""

    has_pinv = True

    def describe(self) -> str:
        return "denoising"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        return y

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        return y

    def lift(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        return y
