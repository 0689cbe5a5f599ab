"""The DAVI trainer end to end on tiny networks: it learns, resumes exactly, survives NaNs,
runs on two processes with identical replicas, and exports what infer.py loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from davi.config import load_config
from davi.training.recipes import train_job
from davi.training.loop import TrainingError, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def davi_cfg(prior_dir, out, *overrides):
    return load_config(ROOT / "configs" / "sr4_mnist.yaml", [
        f"train.output_dir={out}", f"prior.path={prior_dir}", "train.batch_size=8", "train.max_steps=4",
        "train.checkpoint_every=2", "log.image_every=0", "log.progress=false", "log.num_val=4",
        "log.num_samples=2", *overrides])


@pytest.fixture(scope="module")
def trained_run(tiny_prior_dir, tmp_path_factory):
    """60 steps of full DAVI (IKL + PPB + consistency + regression) on SR x4."""
    out = tmp_path_factory.mktemp("davi") / "run"
    cfg = davi_cfg(tiny_prior_dir, out, "train.max_steps=60", "train.batch_size=16", "train.lr=2e-3",
                   "davi.score_lr=2e-3", "train.ema_decay=0.99", "train.checkpoint_every=30", "log.image_every=30")
    train_job(cfg)
    return out


@pytest.mark.slow  # the 60-step trained_run fixture: ~30 s
def test_trained_mapper_beats_the_lifted_measurement(trained_run):
    from davi.data.datasets import load_split
    from davi.eval.evaluate import run_method
    from davi.io.export import load_export
    from davi.solvers.methods import DaviMethod, LiftMethod
    from davi.eval.metrics import psnr

    mapper, card, op = load_export(trained_run / "export")
    assert card["task"] == "sr" and card["steps"] == 60 and card["prior"]["digest"]
    x0 = load_split(load_config(ROOT / "configs" / "sr4_mnist.yaml").data, "test").tensor(limit=64)
    y = op.measure(x0, generator=torch.Generator().manual_seed(0))
    lift = psnr(run_method(LiftMethod(op), y, 64)[0], x0).mean()
    restored = psnr(run_method(DaviMethod(mapper, op), y, 64)[0], x0).mean()
    assert restored > lift + 1.5, (float(lift), float(restored))


@pytest.mark.slow  # the 60-step trained_run fixture: ~30 s
def test_training_logs_curves_grids_and_phase_timings(trained_run):
    summary = json.loads((trained_run / "train_summary.json").read_text())
    assert set(summary["phase_seconds_per_step"]) == {"score", "mapper"}
    assert set(summary["rank_weight_digests"][0]) == {"mapper", "score"}
    assert list((trained_run / "samples").glob("grid-*.png"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((trained_run / "logs").rglob("events.out.tfevents*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("loss/score", "loss/mapper", "loss/ikl", "loss/consistency", "loss/regression",
                "grad_norm/mapper", "grad_norm/score", "lr/mapper", "val/psnr/sample", "val/psnr/lift"):
        assert tag in tags, tag
    assert "val/grid" in events.Tags()["images"]


@pytest.mark.slow  # the 60-step trained_run fixture: ~30 s
def test_export_of_a_checkpoint_equals_the_final_export(trained_run, tmp_path):
    from davi.io.export import export_checkpoint

    export_checkpoint(trained_run / "checkpoint-60", tmp_path / "exp")
    a = load_file(str(trained_run / "export" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "exp" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_equals_an_uninterrupted_run(tiny_prior_dir, tmp_path):
    train_job(davi_cfg(tiny_prior_dir, tmp_path / "a"))
    train_job(davi_cfg(tiny_prior_dir, tmp_path / "b", "train.max_steps=2"))
    train_job(davi_cfg(tiny_prior_dir, tmp_path / "b"), resume="latest")
    for f in ("model.safetensors", "model_1.safetensors"):  # mapper, score network
        a, b = load_file(str(tmp_path / "a" / "checkpoint-4" / f)), load_file(str(tmp_path / "b" / "checkpoint-4" / f))
        assert all(torch.equal(a[k], b[k]) for k in a), f
    ea = torch.load(tmp_path / "a" / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=True)
    eb = torch.load(tmp_path / "b" / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=True)
    assert all(torch.equal(x, y) for x, y in zip(ea["shadow_params"], eb["shadow_params"]))


def test_non_finite_losses_stop_the_run_and_keep_the_last_checkpoint(tiny_prior_dir, tmp_path):
    out = tmp_path / "run"
    train_job(davi_cfg(tiny_prior_dir, out, "train.max_steps=2"))
    before = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    cfg = davi_cfg(tiny_prior_dir, out, "train.max_steps=10", "davi.lambda_con=.nan", "train.max_nonfinite=3")
    with pytest.raises(TrainingError, match=r"3 non-finite losses in a row .*checkpoint-2"):
        train_job(cfg, resume="latest")
    after = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    # steps 3-5 were the streak: checkpoint-4 (checkpoint_every=2) must not have been written inside it
    assert [s for s, _ in list_checkpoints(out)] == [2]


def test_regression_ablation_trains_no_score_network(tiny_prior_dir, tmp_path):
    train_job(davi_cfg(tiny_prior_dir, tmp_path / "r", "davi.lambda_ikl=0", "train.max_steps=2"))
    summary = json.loads((tmp_path / "r" / "train_summary.json").read_text())
    assert set(summary["phase_seconds_per_step"]) == {"mapper"}
    assert not (tmp_path / "r" / "checkpoint-2" / "model_1.safetensors").exists()


def _one_iteration(cfg, out, x0):
    """The updates one iteration of the DAVI recipe yields, and the bridge times a the mapper was run at."""
    from davi.training.recipes import davi_recipe
    from davi.training.loop import make_accelerator

    recipe = davi_recipe(cfg, make_accelerator(cfg.train, out))
    times = []
    recipe.networks["mapper"].register_forward_pre_hook(lambda m, args: times.append(args[1].clone()))
    phases = [u.phase for u in recipe.iteration(recipe.networks, {"image": x0})]
    return phases, torch.cat(times)


def test_score_steps_and_ppb_switch(tiny_prior_dir, tmp_path):
    x0 = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    phases, a = _one_iteration(davi_cfg(tiny_prior_dir, tmp_path, "davi.score_steps=3"), tmp_path, x0)
    assert phases == ["score", "score", "score", "mapper"]  # score_steps DSM steps, then one mapper step
    assert a.unique().numel() > 10 and a.min() < 900  # PPB: bridge states away from the measurement end
    phases, a = _one_iteration(davi_cfg(tiny_prior_dir, tmp_path, "davi.ppb=false"), tmp_path, x0)
    assert phases == ["score", "mapper"] and (a == 999).all()  # no PPB: only the inference input a = T - 1
    phases, _ = _one_iteration(davi_cfg(tiny_prior_dir, tmp_path, "davi.lambda_ikl=0", "davi.score_steps=3"), tmp_path, x0)
    assert phases == ["mapper"]


def test_prior_and_data_of_different_sizes_is_a_one_line_error(tiny_prior_dir, tmp_path):
    from davi.models.prior import PriorError

    with pytest.raises(PriorError) as e:
        train_job(davi_cfg(tiny_prior_dir, tmp_path / "m", "data.resolution=16"))
    msg = str(e.value)
    assert "\n" not in msg and "1x32x32" in msg and "data.resolution=16" in msg
    assert not list((tmp_path / "m").glob("checkpoint-*"))


def test_the_ikl_term_alone_moves_the_mapper_to_the_prior(tmp_path):
    """IKL only (no consistency, no regression): the mapper's optimum is the prior itself, whatever its
    input. Against a closed-form Gaussian prior N(0.5, 0.01 I) and inputs near -0.5, 30 steps must bring
    the mean of the restorations most of the way to 0.5; a sign error in the IKL term drives them away
    (measured: 4.7 -> 1.0 here, -> 15 with the sign flipped)."""
    from davi.analytic import GaussianPrior
    from davi.io.export import load_export
    from davi.models.mapper import Mapper
    from davi.operators import build_operator
    from davi.models.prior import build_unet
    from davi.training.recipes import davi_recipe
    from davi.training.loop import train

    res = 4
    m = torch.full((1, res, res), 0.5, dtype=torch.float64)
    prior = GaussianPrior(m, cov=0.01 * torch.eye(res * res, dtype=torch.float64), shape=(1, res, res))
    images = (-0.5 + 0.1 * torch.randn(512, 1, res, res, generator=torch.Generator().manual_seed(0))).float()
    cfg = load_config(None, [
        "job=davi", f"train.output_dir={tmp_path / 'ikl'}", f"data.resolution={res}", "data.channels=1",
        "prior.block_out_channels=[8,16]", "prior.attention_levels=[]", "prior.norm_num_groups=8",
        "prior.attention_head_dim=8", "operator.name=denoise", "operator.sigma_y=0.05", "train.init_from_prior=false",
        "davi.lambda_ikl=1", "davi.lambda_con=0", "davi.lambda_reg=0", "davi.t_ikl=1000", "train.max_steps=30",
        "train.batch_size=32", "train.lr=2e-3", "davi.score_lr=2e-3", "train.ema_decay=0.9", "train.seed=0",
        "train.checkpoint_every=30", "log.image_every=0", "log.progress=false", "log.num_val=4", "log.num_samples=2"])
    op = build_operator(cfg.operator, res, 1)
    lifted = op.lift(op.measure(images[:256], generator=torch.Generator().manual_seed(1)))

    def distance_to_prior_mean(mapper) -> float:
        with torch.no_grad():
            x = mapper.restore(lifted, generator=torch.Generator().manual_seed(2))
        return float((x.mean(0) - m.float()).norm())

    torch.manual_seed(0)
    untrained = Mapper.from_prior_unet(build_unet(cfg.prior, cfg.data), cfg.mapper.h, False, 1000).eval()
    out = train(cfg, davi_recipe, prior=prior, train_images=images, val_images=images[:4])
    trained, _, _ = load_export(out / "export")
    before, after = distance_to_prior_mean(untrained), distance_to_prior_mean(trained)
    assert after < 0.35 * before, (before, after)


@pytest.mark.slow
@pytest.mark.parametrize("preset, extra", [
    ("sr4_mnist.yaml", []),
    # the sampler: a conditioned s_psi, and the mapper called twice before one backward (mean matching)
    ("sr4_mnist_sampler.yaml", ["davi.init_mapper=", "davi.score_warmup=1"]),
])
def test_two_processes_keep_identical_replicas(tiny_prior_dir, tmp_path, launch_two_processes, run_launch,
                                               preset, extra):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [*launch_two_processes, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / preset),
           f"train.output_dir={out}", f"prior.path={tiny_prior_dir}", "train.batch_size=4", "train.max_steps=3",
           "train.checkpoint_every=3", "log.image_every=0", "log.progress=false", "log.num_val=2", *extra]
    proc = run_launch(cmd, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_processes"] == 2
    d0, d1 = summary["rank_weight_digests"]
    assert d0 == d1 and set(d0) == {"mapper", "score"}
    assert (out / "export" / "card.json").is_file()
