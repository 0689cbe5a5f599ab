"""The consistency check of a family's mapper (``operator.family``): one threshold on r calibrated over
held-out images each measured by its own member and noise level (davi.solvers.consistency has the
statistic and the single-operator calibration)."""

from __future__ import annotations

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


def calibrate_family_consistency(mapper, family, images: torch.Tensor, source: str = "", seed: int = 0,
                                 quantile: float = 0.99, device=None) -> dict[str, Any]:
    """The card's ``consistency`` entry for a family's mapper: one threshold, the ``quantile`` of r over
    held-out ``images`` each measured by its own member and noise level (r is normalised by sigma_y^2, so
    one threshold should serve every noise level: benchmarks/family.py measures the false alarms per
    sigma_y)."""
    check_quantile(quantile)
    r, _ = family_statistics(mapper, family, images, seed, device=device)
    return {**threshold_entry(r, quantile, source, seed),
            "members": "one per image, drawn from the family (sigma_y included)"}


def with_family_consistency(card: dict[str, Any], mapper, family, device=None, images: int = 500) -> dict[str, Any]:
    """``card`` (a card.json dict being written) with the family's calibrated ``consistency`` entry; unchanged,
    with a one-line note, when it cannot be calibrated."""
    return with_calibration(card, lambda held_out, source: calibrate_family_consistency(
        mapper, family, held_out, source=source, device=device), images)
