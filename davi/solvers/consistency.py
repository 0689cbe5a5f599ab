"""When to trust a one-step restoration: a per-image measurement-consistency statistic and its
threshold, calibrated on held-out in-distribution data and stored in the export card.

For the measurement model ``y = A x + sigma_y n`` (Lee et al. 2024, section 2; n standard
normal on the M measured entries) the true image leaves a residual ``y - A x = sigma_y n``, so

    r(x_hat) = ||A x_hat - y||^2 / (M sigma_y^2)

is a chi-square with M degrees of freedom divided by M for ``x_hat = x``: mean 1, standard
deviation sqrt(2 / M). Only measured entries count (the pixels outside an inpainting box; every
pixel of a low-resolution image for SR). A posterior sample of a well-trained mapper fits the
measurement about as well as the truth; a mapper that is out of its depth (a measurement
unlike its training data) returns images whose A x_hat misses y, and r grows. The statistic is
computed on the first DAVI sample (noise salt 0), one mapper evaluation, no extra network.

Why this one (benchmarks/results/ood_statistics.md, the shipped mappers on shifted test digits):
candidates compared were this residual, the spread of two samples, and the measurement's own
atypicality (a probabilistic-PCA likelihood of y, one- or two-sided, or its distance to the nearest
train measurements); an earlier exploration also tried the residual of the two-sample mean and the
prior's denoising residual of the sample. The residual has the fewest false alarms (0.6-1.2% on
held-out digits) and catches the most where DAVI is worse than lift(y) on SR x4 and deblur, at one
network evaluation. On box the density tests catch more (56-66% vs 54%) at 2.0-2.6% false alarms;
OR-ed with r, the two-sided one raises deblur and box detection (92% -> 100%, 54% -> 73%) at
1.8-2.0% false alarms and a density file per export: not adopted. What no candidate sees: a wrong
answer consistent with a typical-looking y (SR x4 of thin or blurred strokes: DAVI reproduces the
4x4 block means with thicker strokes).

The threshold is a quantile (default the 99th percentile, for at most ~1% false alarms) of r on
held-out images the mapper never trained on, measured with seeded noise; the card keeps it with
its quantiles, the number of images and their source (``calibrate_consistency``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from typing import Any

import torch

from davi.config import ConfigError
from davi.io.card import STATISTIC, ExportCard

DEFINITION = "||A x_hat - y||^2 / (M sigma_y^2) over the M measured entries, first DAVI sample"
QUANTILES = (0.5, 0.9, 0.95, 0.98, 0.99, 0.995)


MAX_REFINE_STEPS = 1000


class ConsistencyError(ConfigError):
    """A consistency entry or refinement request that cannot be used (the message names the key)."""


def measured_mask(operator, y: torch.Tensor) -> torch.Tensor:
    """1 on measured entries of ``y``, 0 on unobserved ones, broadcastable to ``y``.

    The operator's ``measured_mask`` is the definition of "measured": ``measure`` adds noise
    exactly there (inpainting operators leave the unobserved pixels at exactly 0).
    """
    mask = operator.measured_mask(y)
    return torch.ones_like(y[:1]) if mask is None else mask.to(y)


def measured_residual(operator, x_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A x_hat - y on the measured entries and 0 elsewhere, float64, y's shape; M, the number of
    measured entries per image, (B,))."""
    mask = measured_mask(operator, y).expand_as(y)
    return ((operator(x_hat.to(y)) - y) * mask).double(), mask.double().flatten(1).sum(1)


def residual_statistic(operator, x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """r = ||A x_hat - y||^2 / (M sigma_y^2) per image, shape (B,), float64."""
    if operator.sigma_y <= 0:
        raise ConsistencyError(f"{operator.name}: sigma_y = 0, the residual has no noise scale")
    res, m = measured_residual(operator, x_hat, y)
    return res.flatten(1).pow(2).sum(1) / (m * operator.sigma_y ** 2)


def calibrate_consistency(method, operator, images: torch.Tensor, source: str = "", seed: int = 0,
                          quantile: float = 0.99, batch_size: int = 64, device=None) -> dict[str, Any]:
    """The card's ``consistency`` entry from held-out clean ``images`` (N, C, H, W).

    ``method`` is the one-step restorer, e.g. ``davi.solvers.methods.DaviMethod(mapper, operator)``;
    its first sample per image is scored, as infer.py does. Each image is measured with noise
    from ``seed`` and restored with its own seed; the threshold is the ``quantile`` of r over
    the N images. ``source`` says which images these were (e.g. "mnist32:test[500:1000]"):
    they must be images the mapper did not train on.
    """
    check_quantile(quantile)
    if images.ndim != 4 or images.shape[0] < 2:
        raise ConsistencyError(f"calibration needs at least 2 images (N, C, H, W), got {tuple(images.shape)}")
    device = images.device if device is None else device  # where the method's network is
    g = torch.Generator().manual_seed(seed)
    stats = []
    for start in range(0, images.shape[0], batch_size):
        y = operator.measure(images[start: start + batch_size].cpu(), generator=g).to(device)
        seeds = [seed * 100003 + start + i for i in range(y.shape[0])]
        with torch.no_grad():
            x_hat = method(y, seeds, 1)[0]
        stats.append(residual_statistic(operator, x_hat, y).cpu())
    return threshold_entry(torch.cat(stats), quantile, source, seed)


def check_quantile(quantile: float) -> None:
    if not 0 < quantile < 1:
        raise ConsistencyError(f"consistency quantile must be in (0, 1), got {quantile}")


def threshold_entry(r: torch.Tensor, quantile: float, source: str, seed: int) -> dict[str, Any]:
    """The card's ``consistency`` entry from the statistics ``r`` (N,) of held-out images: the threshold is
    their ``quantile``."""
    q = torch.quantile(r, torch.tensor([*QUANTILES, quantile], dtype=r.dtype))
    return {
        "statistic": STATISTIC,
        "definition": DEFINITION,
        "threshold": float(q[-1]),
        "threshold_quantile": quantile,
        "quantiles": {f"{p:g}": float(v) for p, v in zip(QUANTILES, q[:-1])},
        "mean": float(r.mean()),
        "n": int(r.numel()),
        "source": source,
        "seed": seed,
    }


def card_threshold(card: ExportCard | dict[str, Any]) -> float | None:
    """The calibrated threshold in an export card (an ExportCard, or a card.json dict: only its
    ``consistency`` entry is read), or None when the card has none; ConsistencyError when broken."""
    from davi.io.card import ExportError, parse_threshold

    try:
        # a dict may be a partial card (just a consistency entry), which ExportCard.from_dict would refuse
        return card.threshold if isinstance(card, ExportCard) else parse_threshold(card.get("consistency"))
    except ExportError as e:
        raise ConsistencyError(str(e)) from None


def parse_refine(value: str | None) -> int | str | None:
    """``--refine``: None (off), ``"auto"`` (flagged images only) or a number of steps."""
    if value is None:
        return None
    if value == "auto":
        return "auto"
    try:
        steps = int(value)
    except ValueError:
        steps = 0
    if not 1 <= steps <= MAX_REFINE_STEPS:
        raise ConsistencyError(f"--refine: expected 'auto' or a number of steps in 1..{MAX_REFINE_STEPS}, "
                               f"got {value!r}")
    return steps


def consistency_report(names: list[str], statistic: torch.Tensor, threshold: float | None,
                       refined: torch.Tensor | None = None,
                       statistic_refined: torch.Tensor | None = None) -> tuple[str, dict[str, Any]]:
    """(CSV text with one row per image, summary dict for settings.json).

    ``statistic`` is the first DAVI sample's; with refinement, ``statistic_refined`` is the
    written (refined) first sample's and ``refined`` says which images were refined.
    """
    flagged = statistic > threshold if threshold is not None else None
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["name", STATISTIC, "flagged"]
    if refined is not None:
        head += ["refined", f"{STATISTIC}_after_refinement"]
    w.writerow(head)
    for i, name in enumerate(names):
        row = [name, f"{float(statistic[i]):.6g}", "" if flagged is None else int(flagged[i])]
        if refined is not None:
            row += [int(refined[i]), f"{float(statistic_refined[i]):.6g}"]
        w.writerow(row)
    summary: dict[str, Any] = {
        "statistic": STATISTIC, "definition": DEFINITION, "threshold": threshold,
        "images": len(names), "flagged": None if flagged is None else int(flagged.sum()),
        "median": float(statistic.median()), "max": float(statistic.max()),
    }
    if refined is not None:
        summary["refined"] = int(refined.sum())
        summary["median_after_refinement"] = float(statistic_refined.median())
    return buf.getvalue(), summary


def _typed(card: ExportCard | dict[str, Any]) -> ExportCard:
    return ExportCard.coerce(card)


def data_config(card: ExportCard | dict[str, Any]):
    """The DataConfig an export was trained with (its card's ``config.data``): where its held-out images are."""
    from davi.config import DataConfig

    data = _typed(card).trained_data
    if "source" not in data:
        raise ConsistencyError("card.json: config.data.source missing; cannot tell which images are held out")
    return DataConfig(**{k: v for k, v in data.items() if k in DataConfig.__dataclass_fields__})


def calibration_images(card: ExportCard | dict[str, Any], start: int = 500, stop: int = 1000) -> tuple[torch.Tensor, str]:
    """Held-out images for an export's calibration: test images ``start:stop`` of the data set it was
    trained on (the training run's own split, from the card), and a description of them.

    The default range leaves test images 0-499 for measuring false alarms (benchmarks/ood.py); a
    test split of fewer than 1000 images gives its second half.
    """
    from davi.data.datasets import load_split

    cfg = data_config(card)
    split = load_split(cfg, "test")
    stop = min(stop, len(split))
    start = min(start, len(split) // 2)
    if stop - start < 2:
        raise ConsistencyError(f"{cfg.source}: the test split has {len(split)} image(s), too few to calibrate")
    return split.tensor(limit=stop - start, start=start), f"{cfg.source}:test[{start}:{stop}]"


def with_consistency(card: ExportCard | dict[str, Any], method, operator, device=None, images: int = 500):
    """``card`` with its ``consistency`` entry (calibrated on ``images`` of ``calibration_images``), for
    an export at the end of training; unchanged, with a one-line note, when it cannot be calibrated.
    An ExportCard gives an ExportCard, a card.json dict (one being written) a dict."""
    if operator.sigma_y <= 0:
        return card
    return with_calibration(card, lambda held_out, source: calibrate_consistency(
        method, operator, held_out, source=source, device=device), images)


def with_calibration(card: ExportCard | dict[str, Any], calibrate, images: int = 500):
    """``card`` with the entry ``calibrate(held_out, source)`` makes from ``images`` of ``calibration_images``;
    unchanged, with a one-line note, when it cannot be calibrated."""
    from davi.data.datasets import DataError

    try:
        held_out, source = calibration_images(card, stop=500 + images)
        entry = calibrate(held_out, source)
    except (ConsistencyError, DataError) as e:
        print(f"note: export without a consistency threshold ({e})")
        return card
    return replace(card, consistency=entry) if isinstance(card, ExportCard) else {**card, "consistency": entry}
