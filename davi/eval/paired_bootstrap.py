"""Paired-bootstrap intervals of the difference between two restoration methods on the same images.

Built on davi.eval.bootstrap (Efron & Tibshirani 1993, ch. 13: the images are resampled with
replacement, the same indices for every method). Two kinds of figures:

* ``psnr_differences``: the mean PSNR of a base method minus each other method's;
* ``realism_differences``: the Fréchet distance (FD, Heusel et al. 2017) and the kernel distance
  (KID, Bińkowski et al. 2018) in a feature space, each method's restorations against a reference
  set, base minus each other method. The reference's rows are resampled with the images' indices,
  so its own sampling noise is in the interval too (a reference set is a sample, not the
  distribution). Restorations of several seeds per image (features (N, S, D)) give the seed mean
  of the set statistic on every resample.

Negative FD / KID differences: the base method's restorations are closer to the reference.

    feats = {"davi": restoration_features(davi_outs), "red_diff": restoration_features(rd_outs)}
    fd, kid = realism_differences(feats["davi"], {"red_diff": feats["red_diff"]}, reference_features)
    fd["red_diff"].low, fd["red_diff"].high
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from davi.eval.bootstrap import Interval, bootstrap_differences


def kid(feats, reference) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel (KID, Bińkowski et al. 2018) of two whole
    feature sets (N, D) and (M, D)."""
    import torch
    from torchmetrics.image.kid import poly_mmd

    return float(poly_mmd(torch.as_tensor(reference, dtype=torch.float64), torch.as_tensor(feats, dtype=torch.float64)))


def frechet(feats, reference) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017)."""
    from davi.models.classifier import frechet_distance

    return frechet_distance(feats, reference)


def seed_mean(metric: Callable[..., float]) -> Callable[..., float]:
    """A set statistic averaged over seeds: its items are (N, S, D) features of S seeds and (N, D) references."""
    return lambda feats, ref: sum(metric(feats[:, s], ref) for s in range(feats.shape[1])) / feats.shape[1]


def restoration_features(outs: list, classifier=None) -> np.ndarray:
    """(N, S, D) digit-classifier features of S seeds' restorations ``outs`` (each (N, C, H, W))."""
    import torch

    from davi.models.classifier import classifier_features, load_classifier

    classifier = classifier if classifier is not None else load_classifier()
    return torch.stack([classifier_features(classifier, o) for o in outs], 1).numpy()


def psnr_differences(base, others: Mapping[str, np.ndarray], resamples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> dict[str, Interval]:
    """``{name: Interval of mean(base) - mean(others[name])}`` of per-image PSNRs (N,) on the same images."""
    return bootstrap_differences(lambda p: float(np.mean(p)), [base], {k: [v] for k, v in others.items()},
                                 resamples=resamples, level=level, seed=seed)


def realism_differences(base, others: Mapping[str, np.ndarray], reference, resamples: int = 1000,
                        level: float = 0.95, seed: int = 0) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """(FD intervals, KID intervals) of base minus each of ``others``, all against ``reference``.

    ``base`` and ``others[name]``: (N, S, D) features of S seeds' restorations of the same N images
    (S may differ between methods); ``reference``: (N, D) features, resampled with the images."""
    reference = np.asarray(reference)
    out = []
    for metric in (frechet, kid):
        out.append(bootstrap_differences(seed_mean(metric), [base, reference],
                                         {k: [v, reference] for k, v in others.items()},
                                         resamples=resamples, level=level, seed=seed))
    return out[0], out[1]
