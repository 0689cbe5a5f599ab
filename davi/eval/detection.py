"""Saying that an input is unlike the training data, or an answer wrong: per-image statistics, scored.

* ``MeasurementDensity``: how typical a measurement is of train measurements, by the negative
  log-likelihood of a probabilistic PCA (Tipping & Bishop 1999) and by the distance to the k-th
  nearest train measurement;
* ``low_dimensional_residuals``: the data-consistency residual ``A x_hat - y`` tested on fewer
  degrees of freedom (its mean; its 2x2 block means) than the full residual statistic;
* ``quantile_flagger``: flags above a quantile of a statistic on calibration images (two-sided: a
  typicality test, Nalisnick et al. 2019, "Detecting out-of-distribution inputs to deep generative
  models using typicality": an input can be atypical by being *too* likely);
* ``auroc``: how well a statistic separates shifted images from reference ones at any threshold
  (the Mann-Whitney form: P(shifted > reference), ties counting half; Hanley & McNeil 1982).
"""

from __future__ import annotations

from typing import Callable

import torch


class MeasurementDensity:
    """Probabilistic PCA (Tipping & Bishop 1999) and k-NN distance of measurements, fitted on train ones.

    ``ppca(y)``: the negative log-likelihood up to constants, ``k`` principal directions with their
    own variances and one isotropic variance for the rest; ``knn(y)``: the distance to the
    ``k``-th nearest train measurement. Larger: less typical."""

    def __init__(self, y_train: torch.Tensor, k: int = 16):
        y = y_train.flatten(1).double()
        if y.shape[0] <= k:
            raise ValueError(f"MeasurementDensity: {y.shape[0]} train measurements, need more than k = {k}")
        self.train, self.mean = y, y.mean(0)
        _, s, vh = torch.linalg.svd(y - self.mean, full_matrices=False)
        var = s ** 2 / (y.shape[0] - 1)
        self.basis, self.var = vh[:k], var[:k]
        self.noise = var[k:].mean()  # the isotropic variance of the discarded directions

    def ppca(self, y: torch.Tensor) -> torch.Tensor:
        """(N,) negative PPCA log-likelihood of ``y`` (N, ...), up to constants."""
        z = y.flatten(1).double() - self.mean
        proj = z @ self.basis.T
        rest = z - proj @ self.basis
        return (proj ** 2 / self.var).sum(1) + rest.pow(2).sum(1) / self.noise

    def knn(self, y: torch.Tensor, k: int = 5) -> torch.Tensor:
        """(N,) distance from each of ``y`` to its ``k``-th nearest train measurement."""
        return torch.cdist(y.flatten(1).double(), self.train).topk(k, largest=False).values[:, -1]


def auroc(shifted: torch.Tensor, reference: torch.Tensor) -> float:
    """P(statistic of a shifted image > that of a reference image), ties counting half (AUROC).

    1: every shifted image scores above every reference one; 0.5: indistinguishable; below 0.5:
    the shift makes the statistic *smaller* (more typical)."""
    shifted, reference = torch.as_tensor(shifted).flatten(), torch.as_tensor(reference).flatten()
    diff = shifted[:, None] - reference[None]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def quantile_flagger(reference: torch.Tensor, alpha: float, two_sided: bool = False
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
    """values -> flags with false-alarm rate ``alpha`` on ``reference`` (calibration images' values):
    above its 1 - alpha quantile, or (``two_sided``) outside its alpha/2 .. 1 - alpha/2 quantiles."""
    if not 0 < alpha < 1:
        raise ValueError(f"quantile_flagger: alpha must be in (0, 1), got {alpha}")
    reference = torch.as_tensor(reference)
    if two_sided:
        low, high = reference.quantile(alpha / 2), reference.quantile(1 - alpha / 2)
        return lambda values: (values < low) | (values > high)
    high = reference.quantile(1 - alpha)
    return lambda values: values > high


def low_dimensional_residuals(op, x_hat: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The residual A x_hat - y (measured entries) tested on fewer degrees of freedom: its mean
    (``"mean residual"``, |N(0, 1)| under pure noise), and its 2x2 block means (``"pooled residual"``,
    ~1 per degree of freedom under pure noise)."""
    from davi.solvers.consistency import measured_residual

    res, m = measured_residual(op, x_hat, y)
    pooled = torch.nn.functional.avg_pool2d(res, 2) * 2  # a block mean of 4 noises, times 2: variance sigma^2
    return {"mean residual": res.flatten(1).sum(1).abs() / (op.sigma_y * m.sqrt()),
            "pooled residual": pooled.flatten(1).pow(2).sum(1) / (m / 4 * op.sigma_y ** 2)}
