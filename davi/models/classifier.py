"""A small digit classifier: judges prior samples and gives the features of a realism metric.

Two uses:

* ``sample_quality``: mean max-softmax confidence and the predicted-class histogram of a batch
  of generated digits (a prior that draws clean, varied digits scores high confidence and a flat
  histogram, about 0.1 per class).
* ``classifier_frechet``: the Fréchet distance between Gaussians fitted to the classifier's
  128-d penultimate features of two image sets. This is a *classifier Fréchet distance* on a
  small MNIST CNN, not FID (no Inception network): only compare numbers computed with the same
  bundled weights.
* ``classifier_kid``: the kernel distance (KID: the unbiased squared MMD with a cubic polynomial
  kernel, Binkowski et al. 2018, torchmetrics' implementation) in the same features, mean and
  standard deviation over random subsets. Unlike the Fréchet distance it has no bias that
  depends on the number of images, so a few hundred images give a usable figure.

The weights ship as ``davi/assets/digit_classifier.safetensors`` (written by
``scripts/train_classifier.py``); inputs are (B, 1, 32, 32) tensors in [-1, 1].
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "digit_classifier.safetensors"
NUM_CLASSES = 10
FEATURE_DIM = 128


class ClassifierError(ValueError):
    """Classifier weights that cannot be used (the file is named in the message)."""


class DigitClassifier(nn.Module):
    """conv 32 -> pool -> conv 64 -> pool -> conv 64 -> pool -> 128-d features -> 10 logits."""

    def __init__(self, feature_dim: int = FEATURE_DIM, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, feature_dim, bias=False)
        # Normalising before the ReLU keeps every feature unit alive (with positive inputs a plain
        # Linear + ReLU leaves about a third of them dead from initialisation, a singular covariance).
        self.fc_norm = nn.BatchNorm1d(feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)
        self.dropout = nn.Dropout(0.3)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 32, 32):
            raise ValueError(f"DigitClassifier expects (B, 1, 32, 32) images in [-1, 1], got {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 128) penultimate activations (after ReLU)."""
        self._check(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 16x16
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 8x8
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)  # 4x4
        return F.relu(self.fc_norm(self.fc(x.flatten(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def load_classifier(path: str | Path | None = None) -> DigitClassifier:
    """The bundled (or given) classifier weights, in eval mode, frozen, float32 on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise ClassifierError(f"{path}: classifier weights not found (run scripts/train_classifier.py)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ClassifierError(f"{path}: not a readable safetensors file ({e.__class__.__name__})") from None
    model = DigitClassifier()
    try:
        # clone: own, aligned float32 storage (safetensors may hand back unaligned views)
        model.load_state_dict({k: (v.float() if v.is_floating_point() else v).clone() for k, v in state.items()})
    except RuntimeError as e:
        raise ClassifierError(f"{path}: weights do not fit DigitClassifier "
                              f"({str(e).splitlines()[0][:200]})") from None
    model.eval()
    model.requires_grad_(False)
    return model


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by an integer offset in [-max_shift, max_shift]^2, filling with -1 (background)."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])  # (B, H)
    cols = (dx[:, None] + torch.arange(w)[None])  # (B, W)
    rows = rows[:, None, :, None].expand(b, c, h, padded.shape[-1])
    out = padded.gather(2, rows)  # (B, C, H, W + 2s)
    cols = cols[:, None, None, :].expand(b, c, h, w)
    return out.gather(3, cols)


def train_classifier(train_images: torch.Tensor, train_labels: torch.Tensor, steps: int, seed: int,
                     batch_size: int = 64, lr: float = 2e-3, max_shift: int = 2,
                     log_every: int = 0) -> DigitClassifier:
    """Train a DigitClassifier with Adam (cosine-decayed lr) and random ±``max_shift`` px shifts.

    Deterministic given ``seed`` (initialisation, batches, shifts and dropout all come from it);
    the global RNG state is left untouched. Returns the model in eval mode.
    """
    if train_images.ndim != 4 or train_images.shape[0] != train_labels.shape[0]:
        raise ValueError(f"train_images (N,1,32,32) and train_labels (N,) disagree: "
                         f"{tuple(train_images.shape)} vs {tuple(train_labels.shape)}")
    n = train_images.shape[0]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, steps) / max(steps, 1))))
        model.train()
        perm, pos = torch.randperm(n, generator=g), 0
        for step in range(steps):
            if pos + batch_size > n:
                perm, pos = torch.randperm(n, generator=g), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            x = random_shift(train_images[idx], max_shift, g)
            loss = F.cross_entropy(model(x), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if log_every and (step + 1) % log_every == 0:
                print(f"step {step + 1}/{steps}  loss {loss.item():.4f}", flush=True)
    model.eval()
    return model


@torch.no_grad()
def _batched(classifier: DigitClassifier, fn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``fn`` over ``images`` in batches, in eval mode (BatchNorm running statistics, no dropout)."""
    was_training = classifier.training
    classifier.eval()
    try:
        return torch.cat([fn(images[i:i + batch_size].float()) for i in range(0, images.shape[0], batch_size)])
    finally:
        classifier.train(was_training)


def sample_quality(classifier: DigitClassifier, images: torch.Tensor, batch_size: int = 500) -> dict:
    """``{"confidence": mean max-softmax probability, "histogram": [10 fractions summing to 1],
    "labels": (N,) predicted labels}`` for a batch of (N, 1, 32, 32) images in [-1, 1]."""
    if images.shape[0] == 0:
        raise ValueError("sample_quality needs at least one image")
    probs = _batched(classifier, classifier, images, batch_size).softmax(dim=1)
    conf, labels = probs.max(dim=1)
    hist = torch.bincount(labels, minlength=NUM_CLASSES).double() / labels.numel()
    return {"confidence": float(conf.mean()), "histogram": hist.tolist(), "labels": labels}


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (the FID formula,
    Heusel et al. 2017): ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` in float64, i.e. the
    squared 2-Wasserstein distance of the fits (davi.analytic.distances.gaussian_w2_squared: symmetric
    square roots, finite for singular covariances, fast enough for a bootstrap)."""
    from davi.analytic.distances import gaussian_w2_squared

    a = np.asarray(feats_a.detach().cpu() if isinstance(feats_a, torch.Tensor) else feats_a, dtype=np.float64)
    b = np.asarray(feats_b.detach().cpu() if isinstance(feats_b, torch.Tensor) else feats_b, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if b.ndim == 1:
        b = b[:, None]
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs two (N, D) arrays with the same D, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("frechet_distance needs at least 2 samples per set")
    cov = lambda x: np.atleast_2d(np.cov(x, rowvar=False))  # noqa: E731
    return gaussian_w2_squared(a.mean(0), cov(a), b.mean(0), cov(b))


@torch.no_grad()
def classifier_features(classifier: DigitClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, 128) penultimate features of (N, 1, 32, 32) images in [-1, 1]."""
    return _batched(classifier, classifier.features, images, batch_size)


def classifier_frechet(classifier: DigitClassifier, images_a: torch.Tensor, images_b: torch.Tensor,
                       batch_size: int = 500) -> float:
    """Classifier Fréchet distance (not FID) between two image sets, in the classifier's feature space.

    The distance is dominated by the class mix: compare sets with the same mix of digits. The
    bundled splits are sorted by class, so take a stride (``train[::4]``: 100 per class), not the
    first N. Reference values for the bundled weights: balanced train[::4] vs the 1000 test digits
    about 0.9; test vs test + N(0, 0.2^2) noise about 14; train[:1000] (digits 0-2 only) vs test
    about 65.
    """
    return frechet_distance(classifier_features(classifier, images_a, batch_size),
                            classifier_features(classifier, images_b, batch_size))


class _Features(nn.Module):
    """The classifier's penultimate features as a module: what torchmetrics' KID takes as ``feature``."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())


def classifier_kid(classifier: DigitClassifier, images: torch.Tensor, reference: torch.Tensor,
                   subsets: int = 100, subset_size: int = 100, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the kernel distance between ``images`` and ``reference`` over ``subsets``
    random subsets of ``min(subset_size, N)`` images of each (torchmetrics KernelInceptionDistance
    on the classifier's features; the subsets are drawn from ``seed``, so the figure repeats)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(images), len(reference))
    if size < 2:
        raise ValueError(f"classifier_kid needs at least 2 images per set, got {len(images)} and {len(reference)}")
    with warnings.catch_warnings():  # "will save all extracted features": a few hundred 128-d rows here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Features(classifier), subsets=subsets, subset_size=size)
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(reference), 500):
                metric.update(reference[i:i + 500], real=True)
            for i in range(0, len(images), 500):
                metric.update(images[i:i + 500], real=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                mean, std = metric.compute()
    finally:
        classifier.train(was_training)
    return float(mean), float(std)


def classifier_realism(classifier: DigitClassifier, images: torch.Tensor, reference: torch.Tensor,
                       suffix: str = "") -> dict:
    """The realism measures of ``images`` against ``reference``: classifier Fréchet distance and kernel
    distance (mean and std over subsets; only with at least 2 images per set), under the keys
    ``classifier_fd``, ``kid``, ``kid_std`` or, with a ``suffix``, ``fd_<suffix>``, ``kid_<suffix>``,
    ``kid_std_<suffix>`` (one row can then carry several references)."""
    names = ("classifier_fd", "kid", "kid_std") if not suffix else (f"fd_{suffix}", f"kid_{suffix}", f"kid_std_{suffix}")
    out = {names[0]: float(classifier_frechet(classifier, images, reference))}
    if min(len(images), len(reference)) >= 2:
        out[names[1]], out[names[2]] = classifier_kid(classifier, images, reference)
    return out
