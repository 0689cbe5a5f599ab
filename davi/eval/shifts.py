"""Controlled distribution shifts of clean images, for out-of-distribution tests of a mapper.

Each shift turns clean images ``x`` (``(B, C, H, W)``, pixels in [-1, 1], background -1 as in
the bundled digits) into images of another "style"; the shifted image is the new ground truth,
and the measurement is taken of it (``y = A shift(x) + sigma_y n``). Every shift has two
strengths, level 1 (mild) and level 2 (strong):

=============  ===========================================  =================================
shift          level 1                                      level 2
=============  ===========================================  =================================
thicken        grey dilation, 3x3 cross (4-neighbourhood)   grey dilation, 3x3 square
thin           grey erosion, 3x3 cross                      grey erosion, 3x3 square
blur           Gaussian blur, std 0.8 px                    Gaussian blur, std 1.5 px
rotate         20 degrees                                   45 degrees
scale          zoom x1.25 about the centre                  zoom x1.5
translate      (+3, +3) px                                  (+6, +6) px
invert         contrast inverted at half amplitude (-x/2)   contrast inverted (-x)
=============  ===========================================  =================================

Grey dilation/erosion are the max/min over a structuring element (``max_pool2d``); the
geometric shifts resample bilinearly (``grid_sample``) and fill with the background value -1.
All shifts are deterministic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["SHIFTS", "LEVELS", "shift_names", "apply_shift"]

LEVELS = (1, 2)


def _grey_dilate(x: torch.Tensor, square: bool) -> torch.Tensor:
    if square:
        return F.max_pool2d(x, 3, stride=1, padding=1)
    # cross: max of the pixel and its 4 neighbours (padding with -inf leaves borders unchanged)
    p = F.pad(x, (1, 1, 1, 1), value=-math.inf)
    return torch.stack([x, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amax(0)


def thicken(x: torch.Tensor, level: int) -> torch.Tensor:
    return _grey_dilate(x, square=level >= 2)


def thin(x: torch.Tensor, level: int) -> torch.Tensor:
    return -_grey_dilate(-x, square=level >= 2)  # erosion = -dilation(-x)


def blur(x: torch.Tensor, level: int) -> torch.Tensor:
    from davi.operators import gaussian_kernel

    std = {1: 0.8, 2: 1.5}[level]
    size = 2 * math.ceil(3 * std) + 1
    k = gaussian_kernel(size, std).to(x).expand(x.shape[1], 1, size, size)
    return F.conv2d(F.pad(x, (size // 2,) * 4, mode="replicate"), k, groups=x.shape[1])


def _affine(x: torch.Tensor, angle_deg: float = 0.0, zoom: float = 1.0, shift_px: tuple[float, float] = (0, 0)):
    """Resample x under rotation by ``angle_deg``, zoom and a (dx, dy) pixel translation."""
    B, _, H, W = x.shape
    a = math.radians(angle_deg)
    # grid_sample maps output coordinates to input ones: the inverse of the wanted transform.
    cos, sin = math.cos(a) / zoom, math.sin(a) / zoom
    tx, ty = -2 * shift_px[0] / W, -2 * shift_px[1] / H
    theta = torch.tensor([[cos, -sin, cos * tx - sin * ty], [sin, cos, sin * tx + cos * ty]],
                         dtype=x.dtype, device=x.device).expand(B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # sample x + 1 with zero padding, so the area moved in from outside is background (-1)
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def rotate(x: torch.Tensor, level: int) -> torch.Tensor:
    return _affine(x, angle_deg={1: 20.0, 2: 45.0}[level])


def scale(x: torch.Tensor, level: int) -> torch.Tensor:
    return _affine(x, zoom={1: 1.25, 2: 1.5}[level])


def translate(x: torch.Tensor, level: int) -> torch.Tensor:
    d = {1: 3.0, 2: 6.0}[level]
    return _affine(x, shift_px=(d, d))


def invert(x: torch.Tensor, level: int) -> torch.Tensor:
    return -x * {1: 0.5, 2: 1.0}[level]


SHIFTS = {"thicken": thicken, "thin": thin, "blur": blur, "rotate": rotate, "scale": scale,
          "translate": translate, "invert": invert}


def shift_names() -> list[str]:
    """Every shift at every level, e.g. ``thicken-1``, ..., ``invert-2``."""
    return [f"{s}-{lv}" for s in SHIFTS for lv in LEVELS]


def apply_shift(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` under the shift ``name`` (``<shift>-<level>``, or ``none``), clamped to [-1, 1]."""
    if name == "none":
        return x.clone()
    shift, _, level = name.rpartition("-")
    if shift not in SHIFTS or level not in {str(lv) for lv in LEVELS}:
        raise ValueError(f"shift {name!r}: expected 'none' or one of {', '.join(shift_names())}")
    with torch.no_grad():
        return SHIFTS[shift](x, int(level)).clamp(-1, 1)
