"""The realism sweep's pick rule and the per-checkpoint held-out scoring (benchmarks/sweep.py, convergence.py)."""

from __future__ import annotations

import json

import pytest
import torch
from convergence import combine
from sweep import pick

from davi.eval.checkpoint_scores import score_checkpoint

from davi.config import Config
from davi.models.mapper import Mapper
from davi.models.prior import DiffusionPrior


def test_pick_takes_the_most_realistic_setting_within_the_psnr_slack():
    rows = [{"name": "sharp", "psnr": 19.0, "kid": 0.01},   # most realistic, but 1.5 dB below the best
            {"name": "best_psnr", "psnr": 20.5, "kid": 0.20},
            {"name": "close", "psnr": 20.1, "kid": 0.05}]
    assert pick(rows, psnr_slack=0.5) == "close"
    assert pick(rows, psnr_slack=2.0) == "sharp"
    assert pick(rows, psnr_slack=0.0) == "best_psnr"


def test_score_checkpoint_scores_the_ema_mapper_and_caches(tiny_prior_dir, tmp_path):
    cfg = Config()
    cfg.prior.path = str(tiny_prior_dir)
    prior = DiffusionPrior.from_pretrained(str(tiny_prior_dir))
    torch.manual_seed(0)
    ckpt = tmp_path / "checkpoint-7"
    Mapper.from_prior_unet(prior.unet, h=0.1, tanh=False).save_pretrained(str(ckpt / "ema"))
    (ckpt / "config.yaml").write_text(cfg.to_yaml())
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 7}))

    row = score_checkpoint(ckpt, images=8)
    assert row["step"] == 7
    assert 5 < row["psnr"] < 40 and row["classifier_fd"] > 0 and "kid" in row
    cached = json.loads((ckpt / "heldout_8.json").read_text())
    assert cached == pytest.approx(row)
    (ckpt / "heldout_8.json").write_text(json.dumps({**cached, "psnr": -1.0}))
    assert score_checkpoint(ckpt, images=8)["psnr"] == -1.0  # read back, not recomputed


def test_combine_keeps_other_runs_and_offsets_the_fresh_steps():
    earlier = [{"run": "old", "step": 500, "psnr": 1.0}, {"run": "cont", "step": 125, "psnr": 2.0}]
    fresh = [{"run": "cont", "step": 125, "psnr": 3.0}, {"run": "cont", "step": 250, "psnr": 4.0}]
    rows, kept = combine(earlier, fresh, step_offset=1000)
    assert kept == ["old"]
    assert [(r["run"], r["step"], r["psnr"]) for r in rows] == [("old", 500, 1.0), ("cont", 1125, 3.0),
                                                                 ("cont", 1250, 4.0)]
    assert combine([], fresh) == (fresh, [])
