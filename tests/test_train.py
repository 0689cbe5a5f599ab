"""The trainer on job: prior with a tiny UNet: exact resume, checkpoint hygiene, two real
processes with identical replicas, the saved prior, and the resolved config on disk."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from davi.config import ConfigError, load_config
from davi.models.prior import DiffusionPrior, sample
from davi.training.recipes import train_job
from davi.training.loop import TrainingError, list_checkpoints

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
    first = json.loads((b / "checkpoint-2" / "trainer_state.json").read_text())["train_seconds"]
    train_job(prior_cfg(b), resume="latest")
    summary = json.loads((b / "train_summary.json").read_text())
    assert summary["start_step"] == 2 and summary["seconds_counted_from"] == 0
    # The whole run's cost survives the resume: the first process's seconds plus this one's.
    assert first > 0 and summary["seconds_total"] == pytest.approx(first + summary["seconds"])
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
def test_two_processes_keep_identical_replicas(tmp_path, launch_two_processes, run_launch):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [*launch_two_processes, str(ROOT / "train.py"), "--config", str(CONFIG), *TINY, "train.max_steps=3",
           f"train.output_dir={out}"]
    proc = run_launch(cmd, timeout=150, env=env, cwd=ROOT)
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


# ---------------------------------------------------------------------------------------------
# The loop's own behaviours, on a toy recipe (one linear layer, 2x2 images): accumulation, warm-up,
# clipping, the wall-clock stop, non-finite losses, mixed precision. Milliseconds per step.

from diffusers import ConfigMixin, ModelMixin  # noqa: E402
from diffusers.configuration_utils import register_to_config  # noqa: E402

from davi.config import Config, TrainConfig  # noqa: E402
from davi.training.recipe import Recipe, Update  # noqa: E402
from davi.training.loop import make_accelerator, prepare_networks, run_iteration, train  # noqa: E402


class Toy(ModelMixin, ConfigMixin):
    """x -> W x on flattened 2x2 images; W starts at zero."""

    @register_to_config
    def __init__(self, dim: int = 4):
        super().__init__()
        self.lin = torch.nn.Linear(dim, dim, bias=False)
        torch.nn.init.zeros_(self.lin.weight)

    def forward(self, x):
        return self.lin(x)


def toy_recipe(cfg, accelerator, seen=None, nan_at=(), sleep=0.0):
    """loss = 0.5 mean_b ||W x_b - x_b||^2: gradient -(I - W) mean_b x_b x_b^T, by hand."""
    import time

    calls = [0]

    def iteration(nets, batch):
        x = batch["image"].flatten(1)
        inner = []  # the dtype the layer computes in (a prepared model's outputs are cast back to fp32)
        handle = accelerator.unwrap_model(nets["net"]).lin.register_forward_hook(lambda m, i, o: inner.append(o.dtype))
        out = nets["net"](x)
        handle.remove()
        loss = 0.5 * ((out.float() - x) ** 2).sum(1).mean()
        if calls[0] in nan_at:
            loss = loss * float("nan")
        if seen is not None:
            seen.append({"x": x.clone(), "dtype": inner[0]})
        calls[0] += 1
        if sleep:
            time.sleep(sleep)
        yield Update("fit", "net", loss)

    return Recipe(networks={"net": Toy()}, lrs={"net": cfg.train.lr}, ema_network="net", iteration=iteration)


TOY_IMAGES = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))


def toy_cfg(out, **train):
    cfg = Config()
    cfg.train = TrainConfig(**{"output_dir": str(out), "batch_size": 2, "max_steps": 4, "checkpoint_every": 2,
                               "checkpoints_total_limit": 0, "lr": 1e-2, "ema_decay": 0.9, **train})
    cfg.log.progress, cfg.log.image_every, cfg.log.every = False, 0, 1
    return cfg


def toy_iteration(tmp_path, batches, step=0, frozen_until=None, **train):
    """One run_iteration on fixed micro-batches; returns (logs, [(lr, grad) at each optimiser step])."""
    tc = toy_cfg(tmp_path, **train).train
    acc = make_accelerator(tc, tmp_path)
    recipe = toy_recipe(Config(train=tc), acc)
    recipe.frozen_until = frozen_until or {}
    nets, opts = prepare_networks(acc, recipe, tc)
    steps = []
    opts["net"].optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: steps.append((opt.param_groups[0]["lr"], nets["net"].lin.weight.grad.clone())))
    logs = run_iteration(acc, recipe, nets, opts, iter({"image": b} for b in batches), tc, step, {"fit": 0.0})
    return logs, steps


def hand_gradient(batch: torch.Tensor) -> torch.Tensor:
    x = batch.flatten(1).double()
    return (-(x.T @ x) / len(x)).float()  # at W = 0


def test_gradient_accumulation_takes_one_step_on_the_mean_gradient(tmp_path):
    micro = [TOY_IMAGES[i: i + 2] for i in (0, 2, 4)]
    logs, steps = toy_iteration(tmp_path, micro, grad_accum=3, max_grad_norm=0.0)
    assert len(steps) == 1  # three micro-batches, one optimiser step
    want = sum(hand_gradient(b) for b in micro) / 3
    torch.testing.assert_close(steps[0][1], want, rtol=1e-5, atol=1e-6)
    assert "grad_norm/net" not in logs  # max_grad_norm = 0: no clipping, nothing to report


def test_gradient_clipping_caps_the_norm_and_logs_the_norm_before(tmp_path):
    batch = TOY_IMAGES[:2]
    logs, steps = toy_iteration(tmp_path, [batch], max_grad_norm=0.05)
    norm = float(hand_gradient(batch).norm())
    assert norm > 0.5 and logs["grad_norm/net"] == pytest.approx(norm, rel=1e-5)
    clipped = steps[0][1]
    assert float(clipped.norm()) == pytest.approx(0.05, rel=1e-3)
    torch.testing.assert_close(clipped / clipped.norm(), hand_gradient(batch) / norm, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("step, scale", [(0, 0.1), (4, 0.5), (9, 1.0), (30, 1.0)])
def test_warm_up_ramps_the_learning_rate_linearly(tmp_path, step, scale):
    _, steps = toy_iteration(tmp_path, [TOY_IMAGES[:2]], step=step, warmup_steps=10, lr=1e-2)
    assert steps[0][0] == pytest.approx(1e-2 * scale)


@pytest.mark.parametrize("schedule, step, scale", [
    ("cosine", 9, 1.0), ("cosine", 10, 1.0), ("cosine", 30, 0.5), ("cosine", 49, 0.5 * (1 + math.cos(math.pi * 39 / 40))),
    ("linear", 10, 1.0), ("linear", 30, 0.5), ("linear", 40, 0.25), ("constant", 49, 1.0)])
def test_learning_rate_schedule_decays_after_the_warm_up(tmp_path, schedule, step, scale):
    # warm-up over 10 steps, then the decay over the 40 left of max_steps = 50
    _, steps = toy_iteration(tmp_path, [TOY_IMAGES[:2]], step=step, warmup_steps=10, lr=1e-2, max_steps=50,
                             lr_schedule=schedule)
    assert steps[0][0] == pytest.approx(1e-2 * scale)


def test_unknown_learning_rate_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="train.lr_schedule: 'step' is not one of constant, cosine, linear"):
        load_config(None, ["train.lr_schedule=step"])


@pytest.mark.parametrize("step, lr", [(0, 0.0), (2, 0.0), (3, 1e-2)])
def test_a_network_the_recipe_holds_frozen_gets_learning_rate_zero(tmp_path, step, lr):
    _, steps = toy_iteration(tmp_path, [TOY_IMAGES[:2]], step=step, frozen_until={"net": 3}, lr=1e-2)
    assert steps[0][0] == lr


def test_accumulated_run_resumes_exactly(tmp_path):
    seen_a, seen_b = [], []
    train(toy_cfg(tmp_path / "a", grad_accum=2), toy_recipe, train_images=TOY_IMAGES, seen=seen_a)
    train(toy_cfg(tmp_path / "b", grad_accum=2, max_steps=2), toy_recipe, train_images=TOY_IMAGES, seen=seen_b)
    train(toy_cfg(tmp_path / "b", grad_accum=2), toy_recipe, resume="latest", train_images=TOY_IMAGES, seen=seen_b)
    assert len(seen_a) == len(seen_b) == 8  # 4 steps x 2 micro-batches: the resumed run repeats the same batches
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(seen_a, seen_b))
    assert same_tensors(tensors(tmp_path / "a" / "checkpoint-4" / "model.safetensors"),
                        tensors(tmp_path / "b" / "checkpoint-4" / "model.safetensors"))


def test_max_minutes_stops_and_checkpoints(tmp_path):
    out = tmp_path / "timed"
    train(toy_cfg(out, max_steps=1000, checkpoint_every=1000, max_minutes=0.001), toy_recipe,
          train_images=TOY_IMAGES, sleep=0.1)  # 0.06 s budget, 0.1 s per step: one step
    assert [s for s, _ in list_checkpoints(out)] == [1]
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 1


def adam_steps(ckpt: Path) -> int:
    return int(torch.load(ckpt / "optimizer.bin", weights_only=False)["state"][0]["step"])


def test_one_non_finite_loss_skips_its_step_and_the_run_recovers(tmp_path):
    out = tmp_path / "nan1"
    train(toy_cfg(out, max_steps=5, checkpoint_every=1, max_nonfinite=2), toy_recipe, train_images=TOY_IMAGES,
          nan_at={2})
    # step 3 came out of the skipped update: no checkpoint there; the run went on to the end
    assert [s for s, _ in list_checkpoints(out)] == [1, 2, 4, 5]
    assert json.loads((out / "checkpoint-5" / "trainer_state.json").read_text())["nonfinite_total"] == 1
    assert json.loads((out / "train_summary.json").read_text())["nonfinite_total"] == 1
    assert adam_steps(out / "checkpoint-5") == 4  # five iterations, one skipped
    assert all(torch.isfinite(t).all() for t in tensors(out / "checkpoint-5" / "model.safetensors").values())


def test_a_non_finite_streak_stops_without_checkpointing_inside_it(tmp_path):
    out = tmp_path / "nan3"
    with pytest.raises(TrainingError, match=r"3 non-finite losses in a row at step 5; last good checkpoint: .*checkpoint-3"):
        train(toy_cfg(out, max_steps=10, checkpoint_every=1, max_nonfinite=3), toy_recipe, train_images=TOY_IMAGES,
              nan_at=set(range(3, 100)))
    assert [s for s, _ in list_checkpoints(out)] == [1, 2, 3]
    assert adam_steps(out / "checkpoint-3") == 3


def test_bf16_mixed_precision_autocasts_the_forward_on_cpu(tmp_path):
    seen = []
    train(toy_cfg(tmp_path / "bf16", max_steps=2, mixed_precision="bf16"), toy_recipe, train_images=TOY_IMAGES,
          seen=seen)
    assert {s["dtype"] for s in seen} == {torch.bfloat16}  # the layer ran in bf16 ...
    weights = tensors(tmp_path / "bf16" / "checkpoint-2" / "model.safetensors")
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() and t.abs().sum() > 0 for t in weights.values())
    seen = []
    train(toy_cfg(tmp_path / "fp32", max_steps=1), toy_recipe, train_images=TOY_IMAGES, seen=seen)
    assert {s["dtype"] for s in seen} == {torch.float32}  # ... and only when asked to


def test_fp16_on_cpu_warns_that_it_trains_in_float32(tmp_path, capsys):
    seen = []
    train(toy_cfg(tmp_path / "fp16", max_steps=1, mixed_precision="fp16"), toy_recipe, train_images=TOY_IMAGES,
          seen=seen)
    assert "mixed_precision=fp16 has no effect on CPU" in capsys.readouterr().out
    assert {s["dtype"] for s in seen} == {torch.float32}


def two_network_iteration(tmp_path, step, **train):
    """One run_iteration of a recipe with a mapper and a score network (base rates 1e-2 and 3e-3);
    returns {network: the learning rate its optimiser stepped with}."""
    tc = toy_cfg(tmp_path, **train).train
    acc = make_accelerator(tc, tmp_path)

    def iteration(nets, batch):
        x = batch["image"].flatten(1)
        for name in ("score", "mapper"):
            yield Update(name, name, 0.5 * ((nets[name](x) - x) ** 2).sum(1).mean())

    recipe = Recipe(networks={"mapper": Toy(), "score": Toy()}, lrs={"mapper": 1e-2, "score": 3e-3},
                    ema_network="mapper", iteration=iteration)
    nets, opts = prepare_networks(acc, recipe, tc)
    seen = {}
    for name, opt in opts.items():
        opt.optimizer.register_step_pre_hook(
            lambda o, args, kwargs, name=name: seen.__setitem__(name, o.param_groups[0]["lr"]))
    run_iteration(acc, recipe, nets, opts, iter([{"image": TOY_IMAGES[:2]}]), tc, step, {"score": 0.0, "mapper": 0.0})
    return seen


@pytest.mark.parametrize("schedule, step, scale", [
    ("cosine", 0, 1.0), ("cosine", 25, 0.5), ("cosine", 49, 0.5 * (1 + math.cos(math.pi * 49 / 50))),
    ("cosine", 80, 0.0), ("linear", 0, 1.0), ("linear", 10, 0.8), ("linear", 40, 0.2), ("constant", 49, 1.0)])
def test_schedule_without_warm_up_decays_from_step_0_for_the_score_network_too(tmp_path, schedule, step, scale):
    """warmup_steps = 0: the full rate at step 0, then the decay over all of max_steps = 50; the score network's
    optimiser follows the same factor of its own base rate."""
    lrs = two_network_iteration(tmp_path, step, warmup_steps=0, max_steps=50, lr_schedule=schedule)
    assert lrs["mapper"] == pytest.approx(1e-2 * scale, abs=1e-12)
    assert lrs["score"] == pytest.approx(3e-3 * scale, abs=1e-12)


def test_schedule_with_warm_up_on_the_score_network(tmp_path):
    lrs = two_network_iteration(tmp_path, 4, warmup_steps=10, max_steps=50, lr_schedule="cosine")
    assert lrs == pytest.approx({"mapper": 1e-2 * 0.5, "score": 3e-3 * 0.5})
    lrs = two_network_iteration(tmp_path, 30, warmup_steps=10, max_steps=50, lr_schedule="linear")
    assert lrs == pytest.approx({"mapper": 1e-2 * 0.5, "score": 3e-3 * 0.5})
