"""The consistency check of a family's mapper (``operator.family``): thresholds on r calibrated per noise
level over held-out images, each measured by its own member (davi.solvers.consistency has the statistic
and the single-operator calibration)."""

from __future__ import annotations

import math
from typing import Any

import torch

from davi.solvers.consistency import check_quantile, residual_statistic, threshold_entry, with_calibration
from davi.solvers.methods import member_method


def family_statistics(mapper, family, images: torch.Tensor, seed: int = 0, sigma_y: float | None = None,
                      device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, sigma_y) per image, (N,) each, for a family's mapper: image i is measured by its own member drawn
    from ``seed`` (at noise ``sigma_y`` when given, else the family's draw) and restored with its own seed."""
    from davi.operators import operator_from_params

    g = torch.Generator().manual_seed(seed)
    device = images.device if device is None else device
    r, sigmas = [], []
    for i in range(images.shape[0]):
        op = family.draw(g)
        if sigma_y is not None:
            op = operator_from_params({**op.params(), "sigma_y": sigma_y})
        op = op.to(device)
        y = op.measure(images[i: i + 1].cpu(), generator=g).to(device)
        with torch.no_grad():
            x_hat = member_method(mapper, family, op)(y, [seed * 100003 + i], 1)[0]
        r.append(residual_statistic(op, x_hat, y).cpu())
        sigmas.append(op.sigma_y)
    return torch.cat(r), torch.tensor(sigmas, dtype=torch.float64)


SIGMA_LEVELS = 5  # noise levels the thresholds are calibrated at, log-spaced over the family's range


def sigma_levels(family, levels: int = SIGMA_LEVELS) -> list[float]:
    """``levels`` noise levels log-spaced from the family's smallest sigma_y to its largest (one if equal)."""
    lo, hi = family.sigma_lo, family.sigma_hi
    if lo == hi:
        return [float(lo)]
    inner = torch.logspace(math.log10(lo), math.log10(hi), levels, dtype=torch.float64)[1:-1]
    return [float(lo), *(float(v) for v in inner), float(hi)]  # the ends exactly: members of the family


def calibrate_family_consistency(mapper, family, images: torch.Tensor, source: str = "", seed: int = 0,
                                 quantile: float = 0.99, device=None) -> dict[str, Any]:
    """The card's ``consistency`` entry for a family's mapper: every held-out image measured by its own
    member at each of :func:`sigma_levels`; per level the ``quantile`` of r (``by_sigma``, interpolated in
    log sigma_y at restore: ExportCard.threshold_at), and the pooled one as ``threshold``. r is normalised
    by sigma_y^2, but a mapper's precision is finite: at a small sigma_y its residuals exceed the noise
    (the first digit family's median r was 9 at sigma_y 0.01 and 1.0 at 0.1), so one threshold for all
    levels would miss at the small ones and flag nothing at the large ones."""
    check_quantile(quantile)
    levels = sigma_levels(family)
    r = [family_statistics(mapper, family, images, seed + k, sigma_y=s, device=device)[0] for k, s in enumerate(levels)]
    q = [float(torch.quantile(v.double(), quantile)) for v in r]
    return {**threshold_entry(torch.cat(r), quantile, source, seed),
            "members": "one per image and noise level, drawn from the family",
            "by_sigma": {"sigma_y": levels, "threshold": q, "images": int(images.shape[0]),
                         "interpolation": "linear in log sigma_y, constant outside"}}


def with_family_consistency(card: dict[str, Any], mapper, family, device=None, images: int = 500) -> dict[str, Any]:
    """``card`` (a card.json dict being written) with the family's calibrated ``consistency`` entry; unchanged,
    with a one-line note, when it cannot be calibrated."""
    return with_calibration(card, lambda held_out, source: calibrate_family_consistency(
        mapper, family, held_out, source=source, device=device), images)
