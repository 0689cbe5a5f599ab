"""davi.eval.detection: AUROC, quantile flags and the measurement density."""

from __future__ import annotations

import pytest
import torch

from davi.eval.detection import MeasurementDensity, auroc, quantile_flagger


def test_auroc_of_separated_scores_is_one_of_identical_ones_one_half_and_of_reversed_ones_zero():
    low, high = torch.arange(10.0), torch.arange(10.0) + 100
    assert auroc(high, low) == 1.0
    assert auroc(low, high) == 0.0
    assert auroc(low, low) == pytest.approx(0.5)
    assert auroc(torch.full((5,), 3.0), torch.full((7,), 3.0)) == 0.5  # ties count half


def test_quantile_flagger_has_its_false_alarm_rate_on_the_reference():
    ref = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    one, two = quantile_flagger(ref, 0.05), quantile_flagger(ref, 0.05, two_sided=True)
    assert float(one(ref).float().mean()) == pytest.approx(0.05, abs=0.005)
    assert float(two(ref).float().mean()) == pytest.approx(0.05, abs=0.005)
    assert bool(two(torch.tensor([-10.0])).all()) and not bool(one(torch.tensor([-10.0])).any())  # the low tail
    with pytest.raises(ValueError, match="alpha"):
        quantile_flagger(ref, 1.5)


def test_measurement_density_needs_more_measurements_than_components():
    with pytest.raises(ValueError, match="need more than k = 16"):
        MeasurementDensity(torch.randn(10, 64))
