"""Measurement operators ``A`` of the inverse problem ``y = A x + sigma_y n`` (DAVI, Lee et al. 2024),
deepinv style: one ``nn.Module`` per physics, its maths in its docstring.

Every operator maps images ``x`` of shape ``(B, C, H, W)`` (pixels in [-1, 1]) to a
measurement ``y = A x`` and offers

* ``forward(x)``  = ``A x``;
* ``adjoint(y)``  = ``A^T y``, the exact adjoint: ``<A x, y> == <x, A^T y>``;
* ``lift(y)``     = an image-space estimate ``y~`` of ``x`` (the mapper's input), same shape as ``x``;
* ``pinv(y)``     = a right inverse with ``A(pinv(y)) == y`` where one is cheap
  (``has_pinv``); otherwise ``NotImplementedError``;
* ``measure(x, generator)`` = ``A x + sigma_y * n``, ``n`` standard normal on the measured
  entries (exactly zero on the unobserved pixels of the inpainting operators);
* ``measurement_shape`` / ``check_measurement`` for validating user-supplied measurements;
* ``from_config(cfg, resolution, channels)``, the operator for an ``operator:`` config section,
  and ``params()``, a JSON-able dict (stored in export cards) from which
  :func:`operator_from_params` rebuilds an operator giving identical outputs.

Operators are found by name in the registry :data:`OPERATORS` (``{name: class}``, filled by
:func:`register_operator`). ``operator.name`` may also be an import path ``"module:Class"`` to an
:class:`Operator` subclass outside the package (docs/custom_operators.md); such an operator is
stored in export cards under that path. Two operators read data files, so the common cases need
no code: ``deblur`` with ``operator.kernel_file`` (any 2-D blur kernel) and ``inpaint`` with
``operator.mask_file`` (any mask); their params() hold the file's values, so an export works
without the file.

Any batch size and channel count work, on any device and floating dtype: kernels and
masks are non-persistent buffers cast to the input (``buf.to(x)``) on every call, so
float64 inputs get float64 math. Blur kernels are kept in float64 for that reason.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

__all__ = [
    "OperatorError",
    "Operator",
    "Deblur",
    "SuperResolution",
    "BoxInpaint",
    "RandomInpaint",
    "Inpaint",
    "Denoise",
    "OPERATORS",
    "register_operator",
    "operator_class",
    "build_operator",
    "operator_from_params",
    "default_blur",
    "gaussian_kernel",
    "read_array_file",
]


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


# -- the registry -----------------------------------------------------------------------------

OPERATORS: dict[str, type[Operator]] = {}


def register_operator(name: str) -> Callable[[type[Operator]], type[Operator]]:
    """Class decorator: make an Operator subclass available as ``operator.name: <name>``."""

    def register(cls: type[Operator]) -> type[Operator]:
        if not (isinstance(cls, type) and issubclass(cls, Operator)):
            raise TypeError(f"register_operator({name!r}): {cls!r} is not an Operator subclass")
        if ":" in name or not name:
            raise ValueError(f"register_operator({name!r}): a name is non-empty and has no ':' (import paths do)")
        if name in OPERATORS:
            raise ValueError(f"register_operator({name!r}): already taken by {OPERATORS[name].__qualname__}")
        cls.name = name
        OPERATORS[name] = cls
        return cls

    return register


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""


def operator_class(name: str) -> type[Operator]:
    """The class ``operator.name`` names: a registered name or a ``"module:Class"`` import path."""
    if isinstance(name, str) and name in OPERATORS:
        return OPERATORS[name]
    if not isinstance(name, str) or ":" not in name:
        raise OperatorError(
            f"operator.name: {name!r} is not one of {', '.join(OPERATORS)} "
            f"(or a 'module:Class' import path to an Operator subclass)"
        )
    module_name, _, qualname = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # not found, or any error raised while running the user's module
        raise OperatorError(f"operator.name: cannot import '{module_name}' ({type(e).__name__}: {_first_line(e)})") from None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise OperatorError(f"operator.name: module '{module_name}' has no '{qualname}'")
    if not (isinstance(obj, type) and issubclass(obj, Operator)) or obj is Operator:
        raise OperatorError(f"operator.name: {name} is not a subclass of davi.operators.Operator")
    return obj


def build_operator(cfg: Any, resolution: int, channels: int) -> Operator:
    """The operator ``cfg`` (an ``OperatorConfig``) names, for ``channels`` x ``resolution`` x ``resolution`` images."""
    cls = operator_class(cfg.name)
    if not _is_int(resolution) or resolution < 1:
        raise OperatorError(f"data.resolution: expected a positive integer, got {resolution!r}")
    if not _is_int(channels) or channels < 1:
        raise OperatorError(f"data.channels: expected a positive integer, got {channels!r}")
    if not _is_number(cfg.sigma_y) or cfg.sigma_y < 0:
        raise OperatorError(f"operator.sigma_y: expected a finite number >= 0, got {cfg.sigma_y!r}")
    for key in sorted({k for c in OPERATORS.values() for k in c.data_files} - set(cls.data_files)):
        if getattr(cfg, key, ""):
            readers = ", ".join(n for n, c in OPERATORS.items() if key in c.data_files)
            raise OperatorError(f"operator.{key}: operator '{cls.name}' reads no {key} (it is read by: {readers})")
    return cls.from_config(cfg, resolution, channels)


class _MissingParam(AttributeError):
    """A key absent from a params dict (an AttributeError, so ``getattr(cfg, key, default)`` works)."""


class _ParamsAsConfig:
    """An operator's params() dict read like an ``OperatorConfig``: its keys are the config's keys."""

    def __init__(self, params: dict):
        self._params = params

    def __getattr__(self, key: str) -> Any:
        try:
            return self._params[key]
        except KeyError:
            raise _MissingParam(key) from None


# Version-1 export cards list these ten keys for every operator; rebuilt from such a card, an
# operator ignores those it does not use.
_VERSION1_KEYS = frozenset(
    ("name", "sigma_y", "kernel_size", "kernel_std", "scale", "box_size", "drop_fraction", "mask_seed",
     "resolution", "channels")
)


def operator_from_params(params: dict) -> Operator:
    """Inverse of :meth:`Operator.params` (e.g. an export card's ``operator`` entry)."""
    if not isinstance(params, dict):
        raise OperatorError(f"operator params: expected a mapping, got {type(params).__name__}")
    for key in ("name", "resolution", "channels"):
        if key not in params:
            raise OperatorError(f"operator params: missing key '{key}'")
    try:
        op = build_operator(_ParamsAsConfig(params), params["resolution"], params["channels"])
    except _MissingParam as e:
        raise OperatorError(f"operator params: missing key '{e.args[0]}'") from None
    valid = op.params()
    legacy = _VERSION1_KEYS if _VERSION1_KEYS <= set(params) else frozenset()
    unknown = sorted(set(params) - set(valid) - legacy)
    if unknown:
        raise OperatorError(f"operator params: unknown key '{unknown[0]}' (valid: {', '.join(valid)})")
    return op


# -- data files -------------------------------------------------------------------------------


def _image_values(img: Image.Image) -> np.ndarray:
    """A grayscale view of any PIL image, scaled so that full white is 1."""
    if img.mode.startswith("I;16") or img.mode == "I":
        return np.asarray(img, dtype=np.float64) / 65535.0
    if img.mode == "F":
        return np.asarray(img, dtype=np.float64)
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def read_array_file(path: str | Path, key: str) -> np.ndarray:
    """A 2-D float64 array from a ``.npy`` file or an image (grayscale, white = 1); OperatorError naming ``key`` and the file."""
    p = Path(path)
    where = f"{key}: {p}"
    if not p.is_file():
        raise OperatorError(f"{where}: no such file")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
            if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
                raise OperatorError(f"{where}: expected a real-valued array, got dtype {arr.dtype}")
            arr = arr.astype(np.float64)
        else:
            with Image.open(p) as img:
                arr = _image_values(img)
    except (OSError, ValueError, UnidentifiedImageError) as e:
        if isinstance(e, OperatorError):
            raise
        raise OperatorError(f"{where}: unreadable ({type(e).__name__}: {_first_line(e)})") from None
    if arr.ndim != 2:
        raise OperatorError(f"{where}: expected a 2-D array (H, W), got shape {_shape(arr.shape)}")
    return arr


def _numbers(values: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise OperatorError(f"{where}: not an array of numbers") from None
    if arr.ndim != 2:
        raise OperatorError(f"{where}: expected a 2-D array (H, W), got shape {_shape(arr.shape)}")
    if not np.isfinite(arr).all():
        raise OperatorError(f"{where}: contains NaN or infinite values")
    return arr


# -- blur -------------------------------------------------------------------------------------


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
    """Box inpainting: the mask zeroes a centred ``box_size`` x ``box_size`` square (0 = half the side).

    The box starts at ``(res - box) // 2`` on both axes (on odd/even mismatches it sits half a
    pixel up-left). Otherwise as :class:`_MaskOperator`.
    """

    def __init__(self, sigma_y: float, resolution: int, channels: int, box_size: int):
        mask = torch.ones(resolution, resolution)
        top = (resolution - box_size) // 2
        mask[top : top + box_size, top : top + box_size] = 0
        super().__init__(sigma_y, resolution, channels, mask)
        self.box_size = int(box_size)

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
        return cls(cfg.sigma_y, resolution, channels, box)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "box_size": self.box_size}

    def describe(self) -> str:
        return f"box inpainting (centred {self.box_size}x{self.box_size} box missing)"


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
