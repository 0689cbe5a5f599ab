"""davi.eval.coverage: a sampler drawing from the truth's distribution covers at the nominal levels."""

from __future__ import annotations

import pytest
import torch

from davi.eval.coverage import digit_coverage, mapper_draws


def test_draws_from_the_truths_distribution_are_calibrated_and_a_point_estimate_is_not():
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(64, 1, 8, 8, generator=g)
    draws = torch.randn(200, 64, 1, 8, 8, generator=g)
    hidden = torch.zeros(1, 8, 8, dtype=torch.bool)
    hidden[:, :4] = True
    cov = digit_coverage(draws, truth, hidden)
    assert set(cov) == {"all", "hidden"} and set(cov["all"]) == {"cov50", "cov80", "cov90", "cov95"}
    for level in (50, 80, 90, 95):
        assert cov["all"][f"cov{level}"] == pytest.approx(level / 100, abs=0.03)
        assert cov["hidden"][f"cov{level}"] == pytest.approx(level / 100, abs=0.04)
    point = digit_coverage(torch.zeros(200, 64, 1, 8, 8), truth)
    assert "hidden" not in point and point["all"]["cov95"] < 0.01


def test_mapper_draws_are_k_clamped_seeded_samples_of_the_lifted_measurement():
    class Op:
        def lift(self, y):
            return y * 2

    class Mapper:
        def restore(self, lifted, generator):
            return lifted + 3 * torch.randn(lifted.shape, generator=generator)

    y = torch.zeros(5, 1, 4, 4)
    a, b = mapper_draws(Mapper(), Op(), y, k=6), mapper_draws(Mapper(), Op(), y, k=6)
    assert a.shape == (6, 5, 1, 4, 4) and torch.equal(a, b)
    assert float(a.abs().max()) == 1.0 and not torch.equal(a[0], a[1])
