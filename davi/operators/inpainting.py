"""Inpainting operators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from davi.operators.base import Operator, OperatorError, _is_int, _is_number, _shape
from davi.operators.files import _numbers, read_array_file
from davi.operators.registry import register_operator


class _MaskOperator(Operator):
    r"""Inpainting: ``A x = m . x`` with a fixed 0/1 mask ``m`` of shape (res, res), shared by all channels.

    ``A`` is diagonal with 0/1 entries, so ``A^T = A``, ``A A = A`` and ``pinv = lift = A``
    (the measurement with the missing pixels at 0). Noise falls on the observed pixels only.
    """

    has_pinv = True

    def __init__(self, sigma_y: float, resolution: int, channels: int, mask: torch.Tensor):
        super().__init__(sigma_y, resolution, channels)
        self.register_buffer("mask", mask.reshape(1, 1, self.resolution, self.resolution), persistent=False)

    def _check_spatial(self, shape: tuple, what: str) -> None:
        if tuple(shape[-2:]) != (self.resolution, self.resolution):
            raise OperatorError(
                f"{self.name}: {what} shape {shape} does not match the operator's "
                f"{self.resolution} x {self.resolution} mask (resolution={self.resolution})"
            )

    def _masked(self, t: torch.Tensor, what: str) -> torch.Tensor:
        self._check_image(t, what)
        return t * self.mask.to(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._masked(x, "image")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._masked(y, "measurement")

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._masked(y, "measurement")

    def lift(self, y: torch.Tensor) -> torch.Tensor:
        return self._masked(y, "measurement")

    def measured_mask(self, y: torch.Tensor) -> torch.Tensor:
        return self.mask.to(y)


@register_operator("box_inpaint")
class BoxInpaint(_MaskOperator):
    """Box inpainting: the mask zeroes a ``box_size`` x ``box_size`` square (0 = half the side).

    The box's top-left corner is ``(box_top, box_left)``; -1 (the default) on an axis centres it
    there, at ``(res - box) // 2`` (on odd/even mismatches it sits half a pixel up-left). A given
    position needs ``0 <= box_top, box_left <= res - box``. params() names the position only when
    it is not the centre, so a centred box keeps the params it always had. Otherwise as
    :class:`_MaskOperator`.
    """

    def __init__(self, sigma_y: float, resolution: int, channels: int, box_size: int,
                 box_top: int | None = None, box_left: int | None = None):
        centre = (resolution - box_size) // 2
        top = centre if box_top is None or box_top < 0 else int(box_top)
        left = centre if box_left is None or box_left < 0 else int(box_left)
        mask = torch.ones(resolution, resolution)
        mask[top : top + box_size, left : left + box_size] = 0
        super().__init__(sigma_y, resolution, channels, mask)
        self.box_size = int(box_size)
        self.box_top, self.box_left = top, left

    @property
    def centred(self) -> bool:
        centre = (self.resolution - self.box_size) // 2
        return self.box_top == centre and self.box_left == centre

    @classmethod
    def from_config(cls, cfg: Any, resolution: int, channels: int) -> "BoxInpaint":
        if not _is_int(cfg.box_size) or cfg.box_size < 0:
            raise OperatorError(f"operator.box_size: expected an integer >= 0, got {cfg.box_size!r}")
        box = cfg.box_size or resolution // 2
        if not 1 <= box < resolution:
            raise OperatorError(
                f"operator.box_size: a {box} px box does not fit a {resolution} x {resolution} image "
                f"(need 1 <= box_size < resolution, 0 = half the side)"
            )
        # Params of cards written before the position existed have no box_top / box_left: centred.
        top, left = getattr(cfg, "box_top", -1), getattr(cfg, "box_left", -1)
        for key, v in (("box_top", top), ("box_left", left)):
            if not _is_int(v) or not -1 <= v <= resolution - box:
                raise OperatorError(
                    f"operator.{key}: a {box} px box at {v!r} does not fit a {resolution} x {resolution} image "
                    f"(need 0 <= {key} <= {resolution - box}, or -1 = centred)"
                )
        return cls(cfg.sigma_y, resolution, channels, box, top, left)

    def params(self) -> dict[str, Any]:
        where = {} if self.centred else {"box_top": self.box_top, "box_left": self.box_left}
        return {**super().params(), "box_size": self.box_size, **where}

    def describe(self) -> str:
        if self.centred:
            return f"box inpainting (centred {self.box_size}x{self.box_size} box missing)"
        return (f"box inpainting ({self.box_size}x{self.box_size} box missing, "
                f"top-left corner at row {self.box_top}, column {self.box_left})")


@register_operator("random_inpaint")
class RandomInpaint(_MaskOperator):
    """Random inpainting: the mask drops a fixed set of ``round(drop_fraction * res^2)`` pixel locations.

    The locations are the first ones of ``torch.randperm(res^2)`` drawn from
    ``torch.Generator().manual_seed(mask_seed)`` (the global RNG is untouched); the same mask
    for every channel and batch item. Otherwise as :class:`_MaskOperator`.
    """

    def __init__(self, sigma_y: float, resolution: int, channels: int, drop_fraction: float, mask_seed: int):
        n = resolution * resolution
        g = torch.Generator().manual_seed(int(mask_seed))
        mask = torch.ones(n)
        mask[torch.randperm(n, generator=g)[: int(round(float(drop_fraction) * n))]] = 0
        super().__init__(sigma_y, resolution, channels, mask)
        self.drop_fraction = float(drop_fraction)
        self.mask_seed = int(mask_seed)

    @classmethod
    def from_config(cls, cfg: Any, resolution: int, channels: int) -> "RandomInpaint":
        if not _is_number(cfg.drop_fraction) or not 0 <= cfg.drop_fraction < 1:
            raise OperatorError(f"operator.drop_fraction: expected a number in [0, 1), got {cfg.drop_fraction!r}")
        if not _is_int(cfg.mask_seed) or not -(2**63) <= cfg.mask_seed < 2**64:
            raise OperatorError(f"operator.mask_seed: expected a 64-bit integer, got {cfg.mask_seed!r}")
        return cls(cfg.sigma_y, resolution, channels, float(cfg.drop_fraction), cfg.mask_seed)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "drop_fraction": self.drop_fraction, "mask_seed": self.mask_seed}

    def describe(self) -> str:
        return f"random inpainting ({self.drop_fraction:.0%} of pixels missing, mask seed {self.mask_seed})"


def _inpainting_mask(values: Any, where: str, resolution: int) -> torch.Tensor:
    """A (res, res) 0/1 float mask from an array or from rows of '0'/'1' characters."""
    if isinstance(values, list) and all(isinstance(row, str) for row in values):
        if any(set(row) - {"0", "1"} for row in values):
            raise OperatorError(f"{where}: rows must hold only the characters 0 and 1")
        values = [[c == "1" for c in row] for row in values]
    m = _numbers(values, where)
    if m.shape != (resolution, resolution):
        raise OperatorError(
            f"{where}: mask shape {_shape(m.shape)} does not match the {resolution} x {resolution} images "
            f"(data.resolution={resolution})"
        )
    if not np.isin(m, (0.0, 1.0)).all():
        odd = float(m[~np.isin(m, (0.0, 1.0))][0])
        raise OperatorError(
            f"{where}: values other than 0 (missing) and 1 (observed), e.g. {odd:.6g}; "
            f"save a binary mask (an image: black = missing, white = observed)"
        )
    if not m.any():
        raise OperatorError(f"{where}: the mask observes no pixel (all 0)")
    return torch.from_numpy(m).float()


@register_operator("inpaint")
class Inpaint(_MaskOperator):
    """Inpainting with any fixed mask read from ``operator.mask_file``: 1 (white) = observed, 0 (black) = missing.

    The file is a ``.npy`` array or an image (grayscale; 8-bit 0/255, 16-bit 0/65535) of the
    images' size; anything but the two levels is an error rather than a silent threshold.
    params() holds ``mask_file`` and the mask as rows of '0'/'1' characters (``mask``), so an
    export needs no file. Otherwise as :class:`_MaskOperator`.
    """

    data_files = ("mask_file",)

    def __init__(self, sigma_y: float, resolution: int, channels: int, mask: torch.Tensor, mask_file: str = ""):
        super().__init__(sigma_y, resolution, channels, mask)
        self.mask_file = str(mask_file)

    @classmethod
    def from_config(cls, cfg: Any, resolution: int, channels: int) -> "Inpaint":
        values, where = getattr(cfg, "mask", None), "operator params: mask"  # params() carry the mask itself
        mask_file = getattr(cfg, "mask_file", "")
        if values is None:
            if not mask_file:
                raise OperatorError("operator.mask_file: the inpaint operator needs a mask file (1 = observed, 0 = missing)")
            values, where = read_array_file(mask_file, "operator.mask_file"), f"operator.mask_file: {mask_file}"
        return cls(cfg.sigma_y, resolution, channels, _inpainting_mask(values, where, resolution), mask_file)

    def params(self) -> dict[str, Any]:
        rows = ["".join("1" if v else "0" for v in row) for row in self.mask[0, 0].tolist()]
        return {**super().params(), "mask_file": self.mask_file, "mask": rows}

    def describe(self) -> str:
        missing = 1 - float(self.mask.mean())
        return f"inpainting ({missing:.0%} of pixels missing, mask from {Path(self.mask_file).name or 'params'})"


# -- denoising -------------------------------------------------------------------------------
