"""davi.eval.tasks: the digit tasks every benchmark shares."""

from __future__ import annotations

import pytest
import torch

from davi.eval.tasks import DIGIT_TASKS, MAPPERS, DigitTask, config_path, uncalibrated_test_digits


def test_a_task_cuts_the_test_split_into_disjoint_blocks_and_measures_them_reproducibly():
    task = DigitTask.load("sr4", images=4)
    x0, reference, floor = task.test_blocks(3)
    assert x0.shape == reference.shape == floor.shape == (4, 1, 32, 32)
    assert not torch.equal(x0, reference) and not torch.equal(reference, floor)
    assert torch.equal(task.test_blocks(1)[0], x0)
    y = task.measure(x0)
    assert y.shape == (4, 1, 8, 8) and torch.equal(y, task.measure(x0, seed=0))
    assert not torch.equal(y, task.measure(x0, seed=1))
    assert task.mapper_folder() == MAPPERS / "sr4" and task.mapper_folder({"sr4": "x"}).name == "x"


def test_task_variants_and_overrides_come_from_the_configs():
    assert config_path("box", "sampler").name == "box_mnist_sampler.yaml"
    assert DigitTask.load("deblur", 2, overrides=["operator.sigma_y=0.1"]).operator.sigma_y == pytest.approx(0.1)
    assert set(DIGIT_TASKS) == {"sr4", "deblur", "box"}
    with pytest.raises(ValueError, match="unknown digit task 'sr8'"):
        config_path("sr8")


def test_too_many_blocks_or_calibration_digits_are_one_line_errors():
    with pytest.raises(SystemExit, match="at most 500"):
        uncalibrated_test_digits(501)
    with pytest.raises(SystemExit, match="needs 3 x"):
        DigitTask.load("sr4", images=100000).test_blocks(3)
