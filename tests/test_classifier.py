"""The bundled digit classifier and the classifier Fréchet distance (seconds, one thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from davi.models.classifier import (
    ClassifierError,
    DigitClassifier,
    classifier_features,
    classifier_frechet,
    classifier_kid,
    frechet_distance,
    load_classifier,
    random_shift,
    sample_quality,
    train_classifier,
)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def test_digits():
    from davi.config import DataConfig
    from davi.data.datasets import load_split

    # The first 200 of the (shuffled, seeded) test split: every class is present.
    ds = load_split(DataConfig(), "test")
    idx = list(range(200))
    return torch.stack([ds[i]["image"] for i in idx]), ds.labels()[idx]


def test_bundled_classifier_is_accurate(classifier, test_digits):
    x, y = test_digits
    assert (torch.bincount(y, minlength=10) >= 10).all()
    assert not classifier.training
    assert not any(p.requires_grad for p in classifier.parameters())
    q = sample_quality(classifier, x)
    acc = (q["labels"] == y).float().mean().item()
    assert acc >= 0.9
    assert 0.8 < q["confidence"] <= 1.0
    assert classifier(x[:4]).shape == (4, 10)
    assert classifier_features(classifier, x[:4]).shape == (4, 128)


def test_sample_quality_histogram(classifier, test_digits):
    x, _ = test_digits
    q = sample_quality(classifier, x[:37], batch_size=10)  # uneven batches
    assert len(q["histogram"]) == 10
    assert sum(q["histogram"]) == pytest.approx(1.0)
    assert q["labels"].shape == (37,)
    counts = np.bincount(q["labels"].numpy(), minlength=10) / 37
    assert np.allclose(q["histogram"], counts)


def test_frechet_self_zero_and_symmetric():
    g = np.random.default_rng(0)
    a = g.normal(size=(300, 8))
    b = g.normal(size=(300, 8)) * 1.5 + 0.3
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    d_ab, d_ba = frechet_distance(a, b), frechet_distance(b, a)
    assert d_ab > 0.5
    assert d_ab == pytest.approx(d_ba, rel=1e-6)
    # torch tensors in float32 give the same answer
    assert frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(d_ab, rel=1e-4)


def test_frechet_closed_form():
    # Gaussians with diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2.
    g = np.random.default_rng(1)
    z_a, z_b = g.normal(size=(4000, 3)), g.normal(size=(4000, 3))
    # Whiten so the sample moments are exactly (0, I) and the closed form is exact.
    z_a = (z_a - z_a.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z_a, rowvar=False))).T
    z_b = (z_b - z_b.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z_b, rowvar=False))).T
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)
    assert frechet_distance(mu_a + z_a * sd_a, mu_b + z_b * sd_b) == pytest.approx(expected, rel=1e-8)
    # 1-D: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2, also from (N,) inputs
    d1 = frechet_distance(2.0 + 3.0 * z_a[:, 0], -1.0 + 0.5 * z_b[:, 0])
    assert d1 == pytest.approx(9.0 + 6.25, rel=1e-8)


def test_frechet_singular_covariance():
    # Fewer samples than dimensions and a constant feature: singular covariances, finite answer.
    g = np.random.default_rng(2)
    a, b = g.normal(size=(20, 64)), g.normal(size=(20, 64))
    a[:, 0] = b[:, 0] = 0.0
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)


def test_classifier_frechet_grows_with_noise(classifier, test_digits):
    x, _ = test_digits
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    assert classifier_frechet(classifier, x, x, batch_size=64) == pytest.approx(0.0, abs=1e-3)
    d_small = classifier_frechet(classifier, x, x + 0.2 * noise)
    d_large = classifier_frechet(classifier, x, x + 0.6 * noise)
    assert 0 < d_small < d_large


def test_classifier_kid_separates_noisy_digits_and_repeats(classifier, test_digits):
    x, _ = test_digits
    a, b = x[:100], x[100:]  # two disjoint halves of held-out digits: the same distribution
    noisy = (a + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    same_mean, same_std = classifier_kid(classifier, a, b, subsets=20, subset_size=50)
    noisy_mean, _ = classifier_kid(classifier, noisy, b, subsets=20, subset_size=50)
    assert abs(same_mean) < 2 * same_std + 1e-3  # unbiased: about 0 between sets of one distribution
    assert noisy_mean > same_mean + 3 * same_std
    assert classifier_kid(classifier, a, b, subsets=20, subset_size=50) == (same_mean, same_std)  # seeded subsets
    with pytest.raises(ValueError, match="at least 2"):
        classifier_kid(classifier, a[:1], b)


def test_realism_against_the_measured_digits_rewards_fidelity(classifier):
    """benchmarks/realism_floor.py's point: a set scored against itself beats an equally real set."""
    from realism_floor import score

    from davi.config import DataConfig
    from davi.data.datasets import load_split

    x = load_split(DataConfig(), "test").tensor(limit=300)
    measured, other, independent = x[:100], x[100:200], x[200:300]
    itself = score(classifier, measured, measured, independent)
    real = score(classifier, other, measured, independent)
    assert itself["fd_measured"] < 1e-6 < real["fd_measured"]
    assert itself["kid_measured"] < real["kid_measured"] - itself["kid_std_measured"]
    # against the independent reference both are just real digits: no advantage left
    assert abs(itself["fd_independent"] - real["fd_independent"]) < 0.5 * real["fd_measured"]


def test_missing_or_corrupt_weights(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ClassifierError, match="nope.safetensors"):
        load_classifier(missing)
    assert issubclass(ClassifierError, ValueError)
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ClassifierError, match="bad.safetensors"):
        load_classifier(corrupt)
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"w": torch.zeros(3)}, str(wrong))
    with pytest.raises(ClassifierError, match="wrong.safetensors"):
        load_classifier(wrong)


def test_train_classifier_deterministic():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 32, 32, generator=g) * 2 - 1
    y = torch.arange(48) % 10
    state = torch.get_rng_state()
    m1 = train_classifier(x, y, steps=3, seed=5, batch_size=16)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    m2 = train_classifier(x, y, steps=3, seed=5, batch_size=16)
    m3 = train_classifier(x, y, steps=3, seed=6, batch_size=16)
    assert isinstance(m1, DigitClassifier) and not m1.training
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_random_shift_moves_content_and_fills_background():
    x = torch.full((64, 1, 32, 32), -1.0)
    x[:, :, 10:20, 10:20] = 1.0
    g = torch.Generator().manual_seed(0)
    out = random_shift(x, 2, g)
    assert out.shape == x.shape
    assert torch.all((out == 1.0).sum(dim=(1, 2, 3)) == 100)  # the square stays whole
    assert not torch.equal(out, x)
    assert torch.equal(random_shift(x, 0, g), x)


def test_frechet_distance_equals_the_general_sqrtm_formula():
    # the symmetric-root form tr((S_b^1/2 S_a S_b^1/2)^1/2) has the trace of sqrtm(S_a S_b)
    from scipy import linalg

    g = np.random.default_rng(3)
    a, b = g.normal(size=(200, 16)) @ g.normal(size=(16, 16)), g.normal(size=(150, 16)) * 1.3 + 0.2
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    general = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a) + np.trace(s_b)
               - 2 * np.trace(linalg.sqrtm(s_a @ s_b)).real)
    assert frechet_distance(a, b) == pytest.approx(general, rel=1e-9)
