"""The trainer on job: prior with a tiny UNet: exact resume, checkpoint hygiene, two real
processes with identical replicas, the saved prior, and the resolved config on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from davi.config import load_config
from davi.prior import DiffusionPrior, sample
from davi.recipes import train_job
from davi.trainer import TrainingError, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "prior_mnist.yaml"
# prior_mnist.yaml keeps its warm-up (200 steps) and EMA decay, so both are part of what must resume exactly.
TINY = ["prior.block_out_channels=[8,16]", "prior.attention_levels=[]", "prior.attention_head_dim=8",
        "data.resolution=16", "train.batch_size=4", "train.max_steps=4", "train.checkpoint_every=2",
        "log.image_every=0", "log.progress=false", "log.num_val=2"]


def prior_cfg(out, *overrides):
    return load_config(CONFIG, [*TINY, f"train.output_dir={out}", *overrides])


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def ema_params(ckpt: Path) -> list[torch.Tensor]:
    state = torch.load(ckpt / "custom_checkpoint_0.pkl", weights_only=False)
    return list(state["shadow_params"])


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """Four uninterrupted steps, a checkpoint every two."""
    out = tmp_path_factory.mktemp("train") / "a"
    assert train_job(prior_cfg(out)) == out
    return out


def test_a_run_writes_checkpoints_a_prior_and_a_summary(run_a):
    assert [s for s, _ in list_checkpoints(run_a)] == [2, 4]
    for step in (2, 4):
        ckpt = run_a / f"checkpoint-{step}"
        for f in ("model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl"):
            assert (ckpt / f).is_file(), f
        assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == step
    summary = json.loads((run_a / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["start_step"] == 0 and summary["num_processes"] == 1
    assert summary["nonfinite_total"] == 0 and len(summary["rank_weight_digests"]) == 1
    # Training changed the weights between the two checkpoints.
    assert not same_tensors(tensors(run_a / "checkpoint-2" / "model.safetensors"),
                            tensors(run_a / "checkpoint-4" / "model.safetensors"))
    assert not list(run_a.glob(".checkpoint-*.tmp"))


def test_kill_and_resume_equals_an_uninterrupted_run(run_a, tmp_path):
    b = tmp_path / "b"
    train_job(prior_cfg(b, "train.max_steps=2"))
    assert [s for s, _ in list_checkpoints(b)] == [2]
    # Step 2 already matches; then resume (the config says max_steps=4 again).
    assert same_tensors(tensors(b / "checkpoint-2" / "model.safetensors"),
                        tensors(run_a / "checkpoint-2" / "model.safetensors"))
    train_job(prior_cfg(b), resume="latest")
    assert json.loads((b / "train_summary.json").read_text())["start_step"] == 2
    assert same_tensors(tensors(b / "checkpoint-4" / "model.safetensors"),
                        tensors(run_a / "checkpoint-4" / "model.safetensors"))
    ea, eb = ema_params(run_a / "checkpoint-4"), ema_params(b / "checkpoint-4")
    assert len(ea) == len(eb) > 0 and all(torch.equal(x, y) for x, y in zip(ea, eb))
    assert same_tensors(tensors(b / "prior" / "unet" / "diffusion_pytorch_model.safetensors"),
                        tensors(run_a / "prior" / "unet" / "diffusion_pytorch_model.safetensors"))
    # The optimizer moments too.
    oa = torch.load(run_a / "checkpoint-4" / "optimizer.bin", weights_only=False)["state"]
    ob = torch.load(b / "checkpoint-4" / "optimizer.bin", weights_only=False)["state"]
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k]["exp_avg_sq"], ob[k]["exp_avg_sq"]) for k in oa)


def test_resume_depends_on_the_saved_rng_state(run_a, tmp_path):
    """The resume test can fail: with another torch RNG state in the checkpoint, the noise of
    steps 3-4 changes and so do the weights."""
    c = tmp_path / "c"
    train_job(prior_cfg(c, "train.max_steps=2"))
    rng_file = c / "checkpoint-2" / "random_states_0.pkl"
    states = torch.load(rng_file, weights_only=False)
    states["torch_manual_seed"] = torch.Generator().manual_seed(12345).get_state()
    torch.save(states, rng_file)
    train_job(prior_cfg(c), resume="latest")
    assert not same_tensors(tensors(c / "checkpoint-4" / "model.safetensors"),
                            tensors(run_a / "checkpoint-4" / "model.safetensors"))


def test_resume_from_an_explicit_checkpoint_and_from_nothing(run_a, tmp_path):
    d = tmp_path / "d"
    train_job(prior_cfg(d, "train.max_steps=2"))
    train_job(prior_cfg(d), resume=str(d / "checkpoint-2"))
    assert same_tensors(tensors(d / "checkpoint-4" / "model.safetensors"),
                        tensors(run_a / "checkpoint-4" / "model.safetensors"))
    with pytest.raises(TrainingError, match="not a checkpoint folder"):
        train_job(prior_cfg(tmp_path / "e"), resume=str(tmp_path / "nowhere"))


def test_checkpoints_total_limit(tmp_path):
    out = tmp_path / "limit"
    train_job(prior_cfg(out, "train.max_steps=5", "train.checkpoint_every=1", "train.checkpoints_total_limit=2"))
    assert [s for s, _ in list_checkpoints(out)] == [4, 5]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]


def test_stale_temp_checkpoint_is_ignored_and_cleaned_up(run_a, tmp_path):
    out = tmp_path / "stale"
    train_job(prior_cfg(out, "train.max_steps=2"))
    # A kill during the save of step 9 left its temp folder, complete-looking but never renamed;
    # and a checkpoint folder without trainer_state.json is not a checkpoint either.
    stale = out / ".checkpoint-9.tmp"
    stale.mkdir()
    (stale / "trainer_state.json").write_text(json.dumps({"step": 9, "nonfinite_total": 0}))
    (stale / "model.safetensors").write_bytes(b"partial")
    half = out / "checkpoint-7"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    assert [s for s, _ in list_checkpoints(out)] == [2]
    train_job(prior_cfg(out), resume="latest")
    assert json.loads((out / "train_summary.json").read_text())["start_step"] == 2
    assert not stale.exists()
    assert same_tensors(tensors(out / "checkpoint-4" / "model.safetensors"),
                        tensors(run_a / "checkpoint-4" / "model.safetensors"))


def test_final_prior_loads_and_samples(run_a):
    prior = DiffusionPrior.from_pretrained(str(run_a / "prior"))
    assert prior.channels == 1 and prior.resolution == 16 and prior.num_timesteps == 1000
    assert not any(p.requires_grad for p in prior.parameters())
    x = sample(prior, 3, num_steps=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 16, 16) and torch.isfinite(x).all()
    # Only safetensors weights in the product.
    weights = [f for f in (run_a / "prior").rglob("*") if f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".pkl")]
    assert weights and all(f.suffix == ".safetensors" for f in weights)
    # The saved prior is the EMA of the last checkpoint, not the raw weights.
    ema = ema_params(run_a / "checkpoint-4")
    saved = list(prior.unet.parameters())
    assert len(ema) == len(saved) and all(torch.equal(e.float(), s) for e, s in zip(ema, saved))
    raw = tensors(run_a / "checkpoint-4" / "model.safetensors")
    assert not same_tensors(raw, {k: v for k, v in prior.unet.state_dict().items() if k in raw})


def test_resolved_config_is_written(run_a):
    cfg = prior_cfg(run_a)
    assert load_config(run_a / "config.yaml") == cfg
    for step in (2, 4):
        assert load_config(run_a / f"checkpoint-{step}" / "config.yaml") == cfg
    assert load_config(run_a / "config.yaml").prior.block_out_channels == [8, 16]
    training = json.loads((run_a / "prior" / "training.json").read_text())
    assert training["steps"] == 4 and training["config"]["prior"]["block_out_channels"] == [8, 16]


@pytest.mark.slow
def test_two_processes_keep_identical_replicas(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "train.py"), "--config", str(CONFIG), *TINY, "train.max_steps=3",
           f"train.output_dir={out}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == 3
    d0, d1 = summary["rank_weight_digests"]
    assert set(d0) == {"unet"} and d0 == d1
    ckpt = out / "checkpoint-3"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
    assert [s for s, _ in list_checkpoints(out)] == [2, 3]
    prior = DiffusionPrior.from_pretrained(str(out / "prior"))
    assert torch.isfinite(sample(prior, 1, num_steps=2)).all()
