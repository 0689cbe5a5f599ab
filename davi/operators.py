"""Measurement operators A (SPEC section 2), deepinv style: one ``nn.Module`` per task.

Every operator maps images ``x`` of shape ``(B, C, H, W)`` (pixels in [-1, 1]) to a
measurement ``y = A x`` and offers

* ``forward(x)``  = ``A x``;
* ``adjoint(y)``  = ``A^T y``, the exact adjoint: ``<A x, y> == <x, A^T y>``;
* ``lift(y)``     = an image-space estimate ``y~`` (SPEC section 1), same shape as ``x``;
* ``pinv(y)``     = a right inverse with ``A(pinv(y)) == y`` where one is cheap
  (``has_pinv``); otherwise ``NotImplementedError``;
* ``measure(x, generator)`` = ``A x + sigma_y * n``, ``n`` standard normal on the measured
  entries (exactly zero on the unobserved pixels of the inpainting operators);
* ``measurement_shape`` / ``check_measurement`` for validating user-supplied measurements;
* ``params()``, a JSON-able dict that :func:`operator_from_params` turns back into an
  operator giving identical outputs (stored in export cards).

Any batch size and channel count work, on any device and floating dtype: kernels and
masks are non-persistent buffers cast to the input (``buf.to(x)``) on every call, so
float64 inputs get float64 math. The blur kernel is kept in float64 for that reason.

Scaling with the image (the benchmark figures are for 256 x 256):

* ``deblur``: with ``kernel_size == 0`` the kernel side is ``round(61 * res / 256)``
  (half rounded up), made odd by adding 1 when even, and at least 3; with
  ``kernel_std == 0`` the std is ``3 * res / 256``. At 256 px that is 61 px / std 3.0;
  at 32 px it is 9 px / std 0.375 (round(7.625) = 8, made odd -> 9), a mild blur.
  The kernel is the outer product of a normalised 1-D Gaussian, so it sums to 1.
  Reflect padding keeps the output the size of the input; it needs ``kernel_size // 2``
  smaller than both image sides.
* ``box_inpaint``: ``box_size == 0`` means half the image side; the box starts at
  ``(res - box) // 2`` on both axes (on odd/even mismatches it sits half a pixel up-left).
* ``random_inpaint``: exactly ``round(drop_fraction * res * res)`` pixel locations are
  dropped, picked by ``torch.randperm`` from ``torch.Generator().manual_seed(mask_seed)``;
  the mask is shared by all channels and batch items.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from davi.config import OperatorConfig

__all__ = [
    "OperatorError",
    "Operator",
    "Deblur",
    "SuperResolution",
    "BoxInpaint",
    "RandomInpaint",
    "Denoise",
    "OPERATORS",
    "build_operator",
    "operator_from_params",
    "default_blur",
]


class OperatorError(ValueError):
    """A bad operator setting, or an image / measurement of the wrong shape."""


# Keys of params(): the OperatorConfig fields plus the image geometry.
_CFG_KEYS = ("name", "sigma_y", "kernel_size", "kernel_std", "scale", "box_size", "drop_fraction", "mask_seed")
_PARAM_KEYS = _CFG_KEYS + ("resolution", "channels")


def _shape(s: Any) -> tuple:
    return tuple(int(v) for v in s)


def default_blur(resolution: int) -> tuple[int, float]:
    """The benchmark's 61 px / std 3 blur at 256 px, scaled to ``resolution``: (size, std)."""
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


class Operator(nn.Module):
    """Base class: a linear measurement operator with Gaussian measurement noise."""

    name: str = ""
    has_pinv: bool = False
    _own_keys: tuple[str, ...] = ()  # the params() keys this operator uses (for repr)

    def __init__(self, sigma_y: float, resolution: int, channels: int):
        super().__init__()
        self.sigma_y = float(sigma_y)
        self.resolution = int(resolution)
        self.channels = int(channels)

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

    def _noise_mask(self, y: torch.Tensor) -> torch.Tensor | None:
        return None

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``A x + sigma_y * n``; ``n`` is drawn from ``generator`` (any device) when given."""
        y = self(x)
        if generator is None:
            n = torch.randn_like(y)
        else:
            dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
            n = torch.randn(y.shape, generator=generator, device=generator.device, dtype=dtype).to(y)
        mask = self._noise_mask(y)
        if mask is not None:
            n = n * mask
        return y + self.sigma_y * n

    def params(self) -> dict[str, Any]:
        """JSON-able settings; :func:`operator_from_params` rebuilds an identical operator."""
        return {
            "name": self.name,
            "sigma_y": self.sigma_y,
            "kernel_size": 0,
            "kernel_std": 0.0,
            "scale": 4,
            "box_size": 0,
            "drop_fraction": 0.5,
            "mask_seed": 0,
            "resolution": self.resolution,
            "channels": self.channels,
        }

    def extra_repr(self) -> str:
        p = self.params()
        keys = ("sigma_y", *self._own_keys, "resolution", "channels")
        return ", ".join(f"{k}={p[k]!r}" for k in keys)


class Deblur(Operator):
    """Gaussian blur: depthwise convolution with one normalised kernel, reflect padding."""

    name = "deblur"
    has_pinv = False
    _own_keys = ("kernel_size", "kernel_std")

    def __init__(self, sigma_y: float, resolution: int, channels: int, kernel_size: int, kernel_std: float):
        super().__init__(sigma_y, resolution, channels)
        self.kernel_size = int(kernel_size)
        self.kernel_std = float(kernel_std)
        self.pad = self.kernel_size // 2
        self.register_buffer("kernel", gaussian_kernel(self.kernel_size, self.kernel_std), persistent=False)

    def _check_spatial(self, shape: tuple, what: str) -> None:
        if self.pad >= min(shape[-2:]):
            raise OperatorError(
                f"deblur: {what} of shape {shape} is too small for operator.kernel_size={self.kernel_size} "
                f"(reflect padding needs kernel_size // 2 = {self.pad} < H and W)"
            )

    def _weight(self, t: torch.Tensor) -> torch.Tensor:
        c = t.shape[1]
        return self.kernel.to(t).expand(c, 1, self.kernel_size, self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        p = self.pad
        xp = F.pad(x, (p, p, p, p), mode="reflect") if p else x
        return F.conv2d(xp, self._weight(x), groups=x.shape[1])

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        # conv2d is a cross-correlation; its adjoint is conv_transpose2d with the same weight,
        # giving the padded image, whose adjoint of reflect padding folds the borders back.
        self._check_image(y, "measurement")
        z = F.conv_transpose2d(y, self._weight(y), groups=y.shape[1])
        return _reflect_pad_adjoint(_reflect_pad_adjoint(z, self.pad, -1), self.pad, -2)

    def lift(self, y: torch.Tensor) -> torch.Tensor:
        self._check_image(y, "measurement")
        return y

    def params(self) -> dict[str, Any]:
        return {**super().params(), "kernel_size": self.kernel_size, "kernel_std": self.kernel_std}


class SuperResolution(Operator):
    """``scale`` x ``scale`` average pooling."""

    name = "sr"
    has_pinv = True
    _own_keys = ("scale",)

    def __init__(self, sigma_y: float, resolution: int, channels: int, scale: int):
        super().__init__(sigma_y, resolution, channels)
        self.scale = int(scale)

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

    def params(self) -> dict[str, Any]:
        return {**super().params(), "scale": self.scale}


class _MaskOperator(Operator):
    """``A x = mask * x`` with a fixed (1, 1, res, res) 0/1 mask; A is its own adjoint and pinv."""

    has_pinv = True

    def _set_mask(self, mask: torch.Tensor) -> None:
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

    def _noise_mask(self, y: torch.Tensor) -> torch.Tensor:
        return self.mask.to(y)


class BoxInpaint(_MaskOperator):
    """Zero a centered ``box_size`` x ``box_size`` square."""

    name = "box_inpaint"
    _own_keys = ("box_size",)

    def __init__(self, sigma_y: float, resolution: int, channels: int, box_size: int):
        super().__init__(sigma_y, resolution, channels)
        self.box_size = int(box_size)
        mask = torch.ones(resolution, resolution)
        top = (resolution - self.box_size) // 2
        mask[top : top + self.box_size, top : top + self.box_size] = 0
        self._set_mask(mask)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "box_size": self.box_size}


class RandomInpaint(_MaskOperator):
    """Drop a fixed random set of ``round(drop_fraction * res^2)`` pixel locations."""

    name = "random_inpaint"
    _own_keys = ("drop_fraction", "mask_seed")

    def __init__(self, sigma_y: float, resolution: int, channels: int, drop_fraction: float, mask_seed: int):
        super().__init__(sigma_y, resolution, channels)
        self.drop_fraction = float(drop_fraction)
        self.mask_seed = int(mask_seed)
        n = resolution * resolution
        g = torch.Generator().manual_seed(self.mask_seed)
        mask = torch.ones(n)
        mask[torch.randperm(n, generator=g)[: int(round(self.drop_fraction * n))]] = 0
        self._set_mask(mask)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "drop_fraction": self.drop_fraction, "mask_seed": self.mask_seed}


class Denoise(Operator):
    """Identity."""

    name = "denoise"
    has_pinv = True

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


OPERATORS = ("deblur", "sr", "box_inpaint", "random_inpaint", "denoise")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def build_operator(cfg: OperatorConfig, resolution: int, channels: int) -> Operator:
    """The operator ``cfg`` names, for ``channels`` x ``resolution`` x ``resolution`` images."""
    name = cfg.name
    if name not in OPERATORS:
        raise OperatorError(f"operator.name: {name!r} is not one of {', '.join(OPERATORS)}")
    if not _is_int(resolution) or resolution < 1:
        raise OperatorError(f"data.resolution: expected a positive integer, got {resolution!r}")
    if not _is_int(channels) or channels < 1:
        raise OperatorError(f"data.channels: expected a positive integer, got {channels!r}")
    if not _is_number(cfg.sigma_y) or cfg.sigma_y < 0:
        raise OperatorError(f"operator.sigma_y: expected a finite number >= 0, got {cfg.sigma_y!r}")
    sigma_y = float(cfg.sigma_y)

    if name == "deblur":
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
        return Deblur(sigma_y, resolution, channels, size, std)
    if name == "sr":
        if not _is_int(cfg.scale) or cfg.scale < 1:
            raise OperatorError(f"operator.scale: expected an integer >= 1, got {cfg.scale!r}")
        if resolution % cfg.scale:
            raise OperatorError(
                f"operator.scale: image shape {resolution} x {resolution} is not divisible by scale {cfg.scale}"
            )
        return SuperResolution(sigma_y, resolution, channels, cfg.scale)
    if name == "box_inpaint":
        if not _is_int(cfg.box_size) or cfg.box_size < 0:
            raise OperatorError(f"operator.box_size: expected an integer >= 0, got {cfg.box_size!r}")
        box = cfg.box_size or resolution // 2
        if not 1 <= box < resolution:
            raise OperatorError(
                f"operator.box_size: a {box} px box does not fit a {resolution} x {resolution} image "
                f"(need 1 <= box_size < resolution, 0 = half the side)"
            )
        return BoxInpaint(sigma_y, resolution, channels, box)
    if name == "random_inpaint":
        if not _is_number(cfg.drop_fraction) or not 0 <= cfg.drop_fraction < 1:
            raise OperatorError(f"operator.drop_fraction: expected a number in [0, 1), got {cfg.drop_fraction!r}")
        if not _is_int(cfg.mask_seed) or not -(2**63) <= cfg.mask_seed < 2**64:
            raise OperatorError(f"operator.mask_seed: expected a 64-bit integer, got {cfg.mask_seed!r}")
        return RandomInpaint(sigma_y, resolution, channels, float(cfg.drop_fraction), cfg.mask_seed)
    return Denoise(sigma_y, resolution, channels)


def operator_from_params(params: dict) -> Operator:
    """Inverse of :meth:`Operator.params` (e.g. an export card's ``operator`` entry)."""
    if not isinstance(params, dict):
        raise OperatorError(f"operator params: expected a mapping, got {type(params).__name__}")
    unknown = sorted(set(params) - set(_PARAM_KEYS))
    if unknown:
        raise OperatorError(f"operator params: unknown key '{unknown[0]}' (valid: {', '.join(_PARAM_KEYS)})")
    missing = [k for k in _PARAM_KEYS if k not in params]
    if missing:
        raise OperatorError(f"operator params: missing key '{missing[0]}'")
    cfg = OperatorConfig(**{k: params[k] for k in _CFG_KEYS})
    return build_operator(cfg, params["resolution"], params["channels"])
