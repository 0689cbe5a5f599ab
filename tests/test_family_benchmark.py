"""The family benchmark's digit sections (benchmarks/family_digits.py): the held-out settings are members
of the shipped family and none of them is a shipped task's setting; the dedicated mappers are trained with
the shipped recipe for exactly that setting; the table shows what ran and marks what did not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import family_digits as fd


def _family():
    from davi.config import load_config
    from davi.operators import family_from_config

    return family_from_config(load_config(ROOT / "configs/family_mnist.yaml", []).operator, 32, 1)


@pytest.mark.parametrize("name", list(fd.HELDOUT))
def test_heldout_settings_are_members_but_not_shipped_tasks(name):
    from davi.eval.tasks import DigitTask

    op = fd.heldout_task(name, 2).operator
    _family().check(op)  # inside the family's ranges: raises otherwise
    for task in fd.SHIPPED:  # ... and never a shipped task's own setting
        shipped = DigitTask.load(task, 2).operator
        assert (op.params(), op.sigma_y) != (shipped.params(), shipped.sigma_y)


def test_a_setting_outside_the_family_is_refused():
    from davi.operators import OperatorError, operator_from_params

    with pytest.raises(OperatorError):
        _family().check(operator_from_params({"name": "sr", "scale": 4, "sigma_y": 0.5, "resolution": 32,
                                              "channels": 1}))


def test_train_dedicated_runs_the_shipped_recipe_for_that_setting(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(fd.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    (tmp_path / "heldout/sr4_sigma0.15/paired/export").mkdir(parents=True)  # the paired stage is done
    fd.train_dedicated("sr4_sigma0.15", tmp_path)
    assert len(calls) == 1  # only the sampler stage runs
    cmd, kw = calls[0]
    assert cmd[cmd.index("--config") + 1].endswith("configs/sr4_mnist_sampler.yaml")
    assert "operator.sigma_y=0.15" in cmd and "operator.scale=4" in cmd
    assert f"davi.init_mapper={tmp_path / 'heldout/sr4_sigma0.15/paired/export'}" in cmd
    assert kw["env"]["OMP_NUM_THREADS"] == "1" and "--resume" not in cmd

    calls.clear()
    (tmp_path / "heldout/deblur_std1.7_sigma0.08/paired/checkpoint-250").mkdir(parents=True)
    fd.train_dedicated("deblur_std1.7_sigma0.08", tmp_path)
    first = calls[0][0]  # the paired stage resumes its checkpoint; then the sampler stage
    assert first[first.index("--config") + 1].endswith("configs/deblur_mnist.yaml")
    assert {"operator.kernel_std=1.7", "operator.sigma_y=0.08", "operator.kernel_size=9"} <= set(first)
    assert first[-2:] == ["--resume", "latest"] and len(calls) == 2


def _boot(v):
    return {"estimate": v, "low": v - 1, "high": v + 1}


def test_render_digits_shows_what_ran_and_marks_what_did_not():
    assert fd.render_digits({}) == ""
    row = {"psnr": 20.0, "ssim": 0.9, "fd_independent": 5.0, "kid_independent": 0.01, "s_per_image": 0.006}
    data = {"sr4": {"family": row, "dedicated": {**row, "psnr": 20.5},
                    "bootstrap": {"dedicated": {"psnr": _boot(-0.5), "fd_independent": _boot(0.1),
                                                "kid_independent": _boot(0.0)}}},
            "heldout/sr4_sigma0.03": {"family": 20.1, "dedicated": None, "red_diff_100": 19.0,
                                      "speedup_red_diff_100": 97.0},
            "false_alarms/0.05": 0.01}
    text = fd.render_digits(data)
    assert "| sr4 | dedicated sampler | 20.50 |" in text and "-0.50 [-1.50, +0.50]" in text
    assert "| sr4_sigma0.03 | 20.10 |" in text and "| - |" in text and "97x" in text
    assert "sigma_y 0.05: 1.0%" in text
