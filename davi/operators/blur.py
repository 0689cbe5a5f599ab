"""Blur operators."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from davi.operators.base import Operator, OperatorError, _is_int, _is_number
from davi.operators.files import _numbers, read_array_file
from davi.operators.registry import register_operator


def default_blur(resolution: int) -> tuple[int, float]:
    """The benchmark's 61 px / std 3 blur at 256 px, scaled to ``resolution``: (size, std).

    The side is ``round(61 * res / 256)`` (half rounded up), made odd by adding 1 when even, and
    at least 3; the std is ``3 * res / 256``. At 32 px that is 9 px / std 0.375 (a mild blur).
    """
    size = int(math.floor(61 * resolution / 256 + 0.5))
    if size % 2 == 0:
        size += 1
    return max(size, 3), 3.0 * resolution / 256


def gaussian_kernel(size: int, std: float) -> torch.Tensor:
    """(size, size) float64 Gaussian, normalised to sum 1 (outer product of 1-D Gaussians)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * std**2))
    g = g / g.sum()
    k = torch.outer(g, g)
    return k / k.sum()


def _blur_kernel(values: Any, where: str, resolution: int) -> torch.Tensor:
    """Any 2-D kernel with odd sides and a positive sum, normalised to sum 1 (float64)."""
    k = _numbers(values, where)
    kh, kw = k.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise OperatorError(
            f"{where}: kernel shape {(kh, kw)} has an even side; a centred kernel needs odd sides "
            f"(pad it with a row or column of zeros)"
        )
    if max(kh, kw) // 2 >= resolution:
        raise OperatorError(
            f"{where}: kernel shape {(kh, kw)} is too large for a {resolution} x {resolution} image "
            f"(reflect padding needs side // 2 < resolution)"
        )
    total = float(k.sum())
    if not np.any(k):
        raise OperatorError(f"{where}: the kernel is all zeros")
    if total <= 0:
        raise OperatorError(f"{where}: the kernel sums to {total:.6g}; a blur kernel needs a positive sum")
    return torch.from_numpy(k / total)


def _pad_along(t: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    if dim == -1:
        return F.pad(t, (before, after))
    return F.pad(t, (0, 0, before, after))


def _reflect_pad_adjoint(z: torch.Tensor, p: int, dim: int) -> torch.Tensor:
    """Adjoint of reflect padding by ``p`` on ``dim`` (-1 or -2): fold the borders back in.

    Reflect padding of ``x`` (length n) gives ``left[j] = x[p - j]`` and
    ``right[j] = x[n - 2 - j]`` for j < p, so the adjoint adds the flipped left border onto
    ``x[1 : p + 1]`` and the flipped right border onto ``x[n - 1 - p : n - 1]``.
    """
    if p == 0:
        return z
    n = z.shape[dim] - 2 * p
    center = z.narrow(dim, p, n)
    left = z.narrow(dim, 0, p).flip(dim)
    right = z.narrow(dim, p + n, p).flip(dim)
    return center + _pad_along(left, dim, 1, n - 1 - p) + _pad_along(right, dim, n - 1 - p, 1)


@register_operator("deblur")
class Deblur(Operator):
    r"""Blur: ``A x = k * pad(x)``, one kernel ``k`` for every channel; no cheap pinv, ``lift(y) = y``.

    ``k`` is a float64 ``(kh, kw)`` kernel with odd sides, summing to 1, and ``*`` is
    cross-correlation (``F.conv2d``); ``pad`` reflects ``kh // 2`` rows and ``kw // 2`` columns
    (scipy's ``mode="mirror"``), so ``A x`` has the image's size and a constant image stays
    constant. ``A^T y`` is the transposed convolution followed by the adjoint of reflect
    padding, which adds each padded border back onto the pixels it copied, so
    ``<A x, y> = <x, A^T y>`` holds exactly (the zero-padded flipped-kernel shortcut does not).

    The kernel is either

    * a Gaussian: ``operator.kernel_size`` / ``operator.kernel_std``, 0 meaning the benchmark's
      61 px / std 3 at 256 px scaled to the image (:func:`default_blur`); params() holds
      ``kernel_size`` and ``kernel_std``; or
    * any 2-D kernel in ``operator.kernel_file`` (``.npy``, or a grayscale image: a motion-blur
      streak, a defocus disc, a measured PSF), normalised to sum 1; params() holds
      ``kernel_file`` and the file's values as ``kernel``, so an export needs no file.
    """

    data_files = ("kernel_file",)

    def __init__(self, sigma_y: float, resolution: int, channels: int, kernel: torch.Tensor, kernel_params: dict):
        """``kernel``: float64 (kh, kw), odd sides, sums to 1; ``kernel_params``: where it came from (params())."""
        super().__init__(sigma_y, resolution, channels)
        self.kernel_params = dict(kernel_params)
        self.pads = (kernel.shape[0] // 2, kernel.shape[1] // 2)
        self.register_buffer("kernel", kernel, persistent=False)

    @classmethod
    def gaussian(cls, sigma_y: float, resolution: int, channels: int, size: int, std: float) -> "Deblur":
        return cls(sigma_y, resolution, channels, gaussian_kernel(size, std), {"kernel_size": size, "kernel_std": std})

    @classmethod
    def from_config(cls, cfg: Any, resolution: int, channels: int) -> "Deblur":
        values, where = getattr(cfg, "kernel", None), "operator params: kernel"  # params() carry a file kernel's values
        kernel_file = getattr(cfg, "kernel_file", "")
        if values is None and kernel_file:
            if cfg.kernel_size or cfg.kernel_std:
                raise OperatorError(
                    f"operator.kernel_file: {kernel_file} gives the kernel; leave operator.kernel_size and "
                    f"operator.kernel_std at 0 (got {cfg.kernel_size!r}, {cfg.kernel_std!r})"
                )
            values, where = read_array_file(kernel_file, "operator.kernel_file"), f"operator.kernel_file: {kernel_file}"
        if values is not None:
            kernel = _blur_kernel(values, where, resolution)
            raw = np.asarray(values, dtype=np.float64).tolist()
            return cls(cfg.sigma_y, resolution, channels, kernel, {"kernel_file": str(kernel_file), "kernel": raw})
        if not _is_int(cfg.kernel_size) or cfg.kernel_size < 0:
            raise OperatorError(f"operator.kernel_size: expected an integer >= 0, got {cfg.kernel_size!r}")
        if not _is_number(cfg.kernel_std) or cfg.kernel_std < 0:
            raise OperatorError(f"operator.kernel_std: expected a finite number >= 0, got {cfg.kernel_std!r}")
        size, std = default_blur(resolution)
        size = cfg.kernel_size or size
        std = float(cfg.kernel_std) or std
        if size % 2 == 0:
            raise OperatorError(f"operator.kernel_size: must be odd to keep the image size, got {size}")
        if size // 2 >= resolution:
            raise OperatorError(
                f"operator.kernel_size: {size} is too large for a {resolution} x {resolution} image "
                f"(reflect padding needs kernel_size // 2 < resolution)"
            )
        return cls.gaussian(cfg.sigma_y, resolution, channels, size, std)

    def params(self) -> dict[str, Any]:
        return {**super().params(), **self.kernel_params}

    def describe(self) -> str:
        if "kernel_size" in self.kernel_params:
            return f"Gaussian deblurring (kernel {self.kernel_params['kernel_size']}, std {self.kernel_params['kernel_std']:g})"
        kh, kw = self.kernel.shape
        return f"deblurring ({kh}x{kw} kernel from {Path(self.kernel_params['kernel_file']).name})"

    def _check_spatial(self, shape: tuple, what: str) -> None:
        ph, pw = self.pads
        if ph >= shape[-2] or pw >= shape[-1]:
            if "kernel_size" in self.kernel_params:
                kernel = f"operator.kernel_size={self.kernel_params['kernel_size']}"
            else:
                kernel = f"the {tuple(self.kernel.shape)} kernel of operator.kernel_file={self.kernel_params['kernel_file']}"
            raise OperatorError(
                f"deblur: {what} of shape {shape} is too small for {kernel} "
                f"(reflect padding needs kernel side // 2 = {max(self.pads)} < H and W)"
            )

    def _weight(self, t: torch.Tensor) -> torch.Tensor:
        return self.kernel.to(t).expand(t.shape[1], 1, *self.kernel.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        ph, pw = self.pads
        xp = F.pad(x, (pw, pw, ph, ph), mode="reflect") if ph or pw else x
        return F.conv2d(xp, self._weight(x), groups=x.shape[1])

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        # conv2d is a cross-correlation; its adjoint is conv_transpose2d with the same weight,
        # giving the padded image, whose adjoint of reflect padding folds the borders back.
        self._check_image(y, "measurement")
        ph, pw = self.pads
        z = F.conv_transpose2d(y, self._weight(y), groups=y.shape[1])
        return _reflect_pad_adjoint(_reflect_pad_adjoint(z, pw, -1), ph, -2)

    def lift(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        return y


# -- super-resolution ------------------------------------------------------------------------
