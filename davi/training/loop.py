"""One training loop on Accelerate, for any recipe (the diffusion prior, DAVI, ...).

The loop knows no job: the caller looks the job up (``davi.training.recipes.RECIPES``) and hands its
builder to :func:`train`. A recipe (``davi.training.recipe``) names its networks and yields the updates
of one iteration; the loop owns the rest: devices, DDP, mixed precision, gradient accumulation
and clipping, warm-up, skipping non-finite losses, the EMA (diffusers ``EMAModel``), atomic
``checkpoint-N`` folders (``davi.training.checkpoints``), resume, TensorBoard scalars and images, a
progress bar and a wall-clock budget.

Determinism: batches are a pure function of (seed, step) (``StepBatchSampler``), and
``save_state`` stores every process's RNG states, so a resumed run repeats an uninterrupted one
exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from davi.config import Config, TrainConfig
from davi.io.atomic import write_text
from davi.training.checkpoints import (
    CheckpointManager,
    TrainingError,
    list_checkpoints,
    read_state,
    resolve_resume,
)
from davi.training.recipe import Recipe, Update

__all__ = ["train", "TrainingError", "list_checkpoints", "weights_digest", "TensorImages", "run_iteration",
           "ema_weights"]


def weights_digest(model: nn.Module) -> str:
    """sha256 of a model's parameters and buffers (bitwise; equal digests = equal weights)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class TensorImages(torch.utils.data.Dataset):
    """In-memory images (N, C, H, W) as a training set, e.g. samples of an analytic prior."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "index": i, "label": -1}


def _flat_hparams(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_hparams(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


# ---------------------------------------------------------------------------------------------
# Setup


def make_accelerator(tc: TrainConfig, out: Path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import ProjectConfiguration

    # A process may train more than once (tests, benchmarks): forget the previous run's
    # mixed-precision/accumulation settings; the distributed process group is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    if tc.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        accelerator.print("warning: train.mixed_precision=fp16 has no effect on CPU (Accelerate trains in float32 "
                          "there); use bf16 for reduced precision on CPU")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > accelerator.num_processes:
        # e.g. `accelerate launch --cpu --num_processes 2`: each process trains alone
        accelerator.print(f"warning: launched as {launched} processes but training with "
                          f"{accelerator.num_processes}; on CPU use ACCELERATE_USE_CPU=1 with --multi_gpu")
    return accelerator


def prepare_networks(accelerator, recipe: Recipe, tc: TrainConfig) -> tuple[dict[str, nn.Module], dict]:
    """AdamW per network, then Accelerate's wrapping (device, DDP, mixed precision)."""
    keys = list(recipe.networks)
    optimizers = [torch.optim.AdamW(recipe.networks[k].parameters(), lr=recipe.lrs[k],
                                    betas=(tc.adam_beta1, tc.adam_beta2), weight_decay=tc.weight_decay)
                  for k in keys]
    prepared = accelerator.prepare(*[recipe.networks[k] for k in keys], *optimizers)
    return dict(zip(keys, prepared[: len(keys)])), dict(zip(keys, prepared[len(keys):]))


def make_ema(accelerator, model: nn.Module, decay: float):
    from diffusers.training_utils import EMAModel

    ema = EMAModel(model.parameters(), decay=decay, model_cls=type(model), model_config=getattr(model, "config", None))
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)  # resumes with the rest of the state
    return ema


@contextmanager
def ema_weights(ema, model: nn.Module):
    """``model`` holds the EMA weights, in eval mode, inside the block (EMAModel store/copy_to/restore)."""
    params = list(model.parameters())
    trainable = [p.requires_grad for p in params]
    ema.store(params)
    ema.copy_to(params)
    model.eval()
    try:
        yield model
    finally:
        ema.restore(params)
        model.train()
        for p, flag in zip(params, trainable):  # a frozen wrapper (DiffusionPrior) may have switched them off
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# One iteration


def apply_update(accelerator, update: Update, net: nn.Module, opt, max_grad_norm: float,
                 logs: dict[str, float]) -> None:
    """Backward, clip and step for one update; a non-finite loss skips the step on every rank."""
    # Every rank must agree, or DDP would wait forever for a skipped backward.
    finite = accelerator.reduce(torch.isfinite(update.loss.detach()).float().reshape(1), "min").item() > 0
    if not finite:
        # Drop this network's accumulated gradients too (the wrapped optimizer would skip
        # zero_grad in the middle of an accumulation window).
        opt.optimizer.zero_grad(set_to_none=True)
        logs[f"nonfinite/{update.phase}"] = 1.0
        return
    accelerator.backward(update.loss)
    if accelerator.sync_gradients and max_grad_norm > 0:
        logs[f"grad_norm/{update.network}"] = float(accelerator.clip_grad_norm_(net.parameters(), max_grad_norm))
    opt.step()
    opt.zero_grad(set_to_none=True)
    logs[f"loss/{update.phase}"] = float(update.loss.detach())
    logs.update({k: float(v) for k, v in update.logs.items()})


def lr_factor(tc: TrainConfig, step: int) -> float:
    """The learning rate's factor at ``step``: a linear warm-up over ``tc.warmup_steps``, then
    ``tc.lr_schedule``: ``constant``, or a ``cosine`` (Loshchilov & Hutter 2017) or ``linear`` decay
    that would reach 0 at ``tc.max_steps``. A pure function of the step (no scheduler state), so a
    resumed run continues the schedule exactly; changing max_steps on resume changes the decay."""
    warm = min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps else 1.0
    if tc.lr_schedule == "constant":
        return warm
    progress = min(1.0, max(0, step - tc.warmup_steps) / max(1, tc.max_steps - tc.warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if tc.lr_schedule == "cosine" else 1 - progress
    return warm * decay


def run_iteration(accelerator, recipe: Recipe, nets: dict, opts: dict, batches, tc: TrainConfig, step: int,
                  timings: dict[str, float]) -> dict[str, float]:
    """``tc.grad_accum`` micro-batches through the recipe's updates, at the learning rate of
    :func:`lr_factor` (0 for a network the recipe holds frozen at this step)."""
    lr_scale = lr_factor(tc, step)
    for k, opt in opts.items():
        held = step < recipe.frozen_until.get(k, 0)
        for g in opt.param_groups:
            g["lr"] = 0.0 if held else recipe.lrs[k] * lr_scale
    logs: dict[str, float] = {}
    for _ in range(tc.grad_accum):
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items() if torch.is_tensor(v)}
        with accelerator.accumulate(*nets.values()):
            updates = recipe.iteration(nets, batch)
            while True:
                t0 = time.perf_counter()
                update = next(updates, None)  # the recipe's forward passes run here
                if update is None:
                    break
                apply_update(accelerator, update, nets[update.network], opts[update.network], tc.max_grad_norm, logs)
                timings[update.phase] += time.perf_counter() - t0
    return logs


# ---------------------------------------------------------------------------------------------
# Validation and the run's summary


def run_validation(accelerator, recipe: Recipe, ema, nets: dict, step: int, cfg: Config, out: Path) -> None:
    """The recipe's report on the EMA network: scalars to TensorBoard, image grids there and as PNG."""
    from davi.io.images import make_grid, save_grid_png

    if recipe.validate is None or not accelerator.is_main_process:
        return
    with ema_weights(ema, accelerator.unwrap_model(nets[recipe.ema_network])) as model:
        scalars, images = recipe.validate(accelerator, model, step)
    accelerator.log({f"val/{k}": v for k, v in scalars.items()}, step=step)
    tracker = accelerator.get_tracker("tensorboard", unwrap=True)
    for name, imgs in images.items():
        grid = make_grid(imgs, nrow=cfg.log.num_val if name == "grid" else min(len(imgs), 8))
        tracker.add_image(f"val/{name}", grid, step)
        save_grid_png(grid, out / "samples" / f"{name}-{step:07d}.png", upscale=2)


def write_summary(accelerator, run: Run, step: int, elapsed: float, timings: dict[str, float]) -> None:
    """train_summary.json: this process's seconds from ``start_step``, and ``seconds_total`` over every process
    of the run since step ``seconds_counted_from`` (resumes included)."""
    from accelerate.utils import gather_object

    # DDP keeps replicas identical; record each rank's weight digest so that it can be checked.
    digests = gather_object([{k: weights_digest(accelerator.unwrap_model(n)) for k, n in run.nets.items()}])
    if accelerator.is_main_process:
        n = max(1, step - run.start_step)
        summary = {"steps": step, "start_step": run.start_step, "seconds": elapsed, "seconds_per_step": elapsed / n,
                   "seconds_total": run.seconds_before + elapsed, "seconds_counted_from": run.counted_from,
                   "phase_seconds_per_step": {k: v / n for k, v in timings.items()},
                   "nonfinite_total": run.nonfinite_total, "num_processes": accelerator.num_processes,
                   "rank_weight_digests": digests}
        write_text(run.out / "train_summary.json", json.dumps(summary, indent=2))


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class Run:
    """What the loop works with: set up once, then stepped from ``start_step`` to ``max_steps``."""

    cfg: Config
    out: Path
    accelerator: Any
    recipe: Recipe
    nets: dict[str, nn.Module]
    opts: dict[str, Any]
    ema: Any
    ema_net: nn.Module  # the unwrapped network whose EMA is kept
    checkpoints: CheckpointManager
    batches: Iterator
    start_step: int
    nonfinite_total: int
    # Training seconds before this process (carried by the checkpoints), counted from step ``counted_from``
    # (0 unless the run resumed from a checkpoint older than this record): a resumed run reports its whole cost.
    seconds_before: float = 0.0
    counted_from: int = 0
    t_start: float = field(default_factory=time.time)

    def seconds_total(self) -> float:
        return self.seconds_before + time.time() - self.t_start

    def save_checkpoint(self, step: int) -> None:
        def save_ema(folder: Path) -> None:
            with ema_weights(self.ema, self.ema_net):
                self.ema_net.save_pretrained(str(folder), safe_serialization=True)

        state = {"nonfinite_total": self.nonfinite_total, "train_seconds": self.seconds_total(),
                 "seconds_counted_from": self.counted_from}
        self.checkpoints.save(step, state, self.cfg.to_yaml(), save_ema)


def setup_run(cfg: Config, build_recipe: Callable[..., Recipe], resume: str | None,
              train_images: torch.Tensor | None, recipe_kwargs: dict) -> Run:
    from accelerate.utils import set_seed

    from davi.data.datasets import StepBatchSampler, load_split

    tc, out = cfg.train, Path(cfg.train.output_dir)
    accelerator = make_accelerator(tc, out)
    # Networks: identical initial weights on every rank, then per-rank noise for the losses.
    # The recipe is built first so that a bad operator, prior or data setting leaves no run folder.
    set_seed(tc.seed)
    recipe = build_recipe(cfg, accelerator, **recipe_kwargs)
    checkpoints = CheckpointManager(out, tc.checkpoints_total_limit, accelerator)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        checkpoints.recover()
        write_text(out / "config.yaml", cfg.to_yaml())
    accelerator.wait_for_everyone()
    nets, opts = prepare_networks(accelerator, recipe, tc)
    ema_net = accelerator.unwrap_model(nets[recipe.ema_network])
    ema = make_ema(accelerator, ema_net, tc.ema_decay)

    # Data and resume. Creating the batch iterator draws from the global RNG: do it before the
    # RNG is seeded or restored, so that a resumed run and an uninterrupted one draw the same numbers.
    ckpt = resolve_resume(out, resume)
    state = read_state(ckpt) if ckpt is not None else {}
    start_step = int(state.get("step", 0))
    if train_images is not None:
        train_set = TensorImages(train_images)
    else:
        train_set = recipe.train_set if recipe.train_set is not None else load_split(cfg.data, "train")
    sampler = StepBatchSampler(len(train_set), tc.batch_size, tc.seed, start_step * tc.grad_accum,
                               accelerator.process_index, accelerator.num_processes)
    batches = iter(torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.data.num_workers))
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        accelerator.print(f"resumed from {ckpt} at step {start_step}")
    else:
        set_seed(tc.seed + 1 + accelerator.process_index)
    if accelerator.is_main_process:
        accelerator.init_trackers("davi", config=_flat_hparams(cfg.to_dict()))
    return Run(cfg, out, accelerator, recipe, nets, opts, ema, ema_net, checkpoints, batches, start_step,
               int(state.get("nonfinite_total", 0)), float(state.get("train_seconds", 0.0)),
               int(state.get("seconds_counted_from", 0 if "train_seconds" in state else start_step)))


def _stop_nonfinite(run: Run, step: int) -> None:
    """End a run stopped by a streak of non-finite losses: TrainingError naming the last good checkpoint."""
    tc = run.cfg.train
    run.accelerator.end_training()
    last = run.checkpoints.latest()
    raise TrainingError(f"{tc.max_nonfinite} non-finite losses in a row at step {step}"
                        + (f"; last good checkpoint: {last}" if last else "; no checkpoint was written")
                        + " (lower train.lr, raise train.max_grad_norm or try mixed_precision=no)")


def _log_step(run: Run, step: int, logs: dict, bar) -> None:
    """Scalars to TensorBoard (and the progress bar) every log.every steps; image grids every log.image_every."""
    cfg, acc = run.cfg, run.accelerator
    if step % cfg.log.every == 0 or step == cfg.train.max_steps:
        logs["nonfinite/total"] = float(run.nonfinite_total)
        logs.update({f"lr/{k}": opt.param_groups[0]["lr"] for k, opt in run.opts.items()})
        acc.log(logs, step=step)
        bar.set_postfix({k.split("/")[-1]: f"{v:.4f}" for k, v in logs.items() if k.startswith("loss/")})
    if cfg.log.image_every and step % cfg.log.image_every == 0 and step != cfg.train.max_steps:
        run_validation(acc, run.recipe, run.ema, run.nets, step, cfg, run.out)


def _over_time(acc, tc: TrainConfig, t_start: float) -> bool:
    """train.max_minutes reached (on any process: all stop at the same step)."""
    over = tc.max_minutes > 0 and (time.time() - t_start) > tc.max_minutes * 60
    if acc.num_processes > 1:
        over = acc.reduce(torch.tensor([float(over)], device=acc.device), "max").item() > 0
    return over


def train(cfg: Config, build_recipe: Callable[..., Recipe], resume: str | None = None,
          train_images: torch.Tensor | None = None, **recipe_kwargs) -> Path:
    """Run ``cfg`` to ``cfg.train.max_steps`` with the recipe ``build_recipe(cfg, accelerator, **recipe_kwargs)``.

    ``train_images`` replace the configured train split (e.g. samples of an analytic prior);
    ``recipe_kwargs`` go to the recipe (the DAVI recipe takes ``prior`` and ``val_images``).
    Returns the output folder.
    """
    from tqdm.auto import tqdm

    run = setup_run(cfg, build_recipe, resume, train_images, recipe_kwargs)
    tc, acc = cfg.train, run.accelerator
    bar = tqdm(total=tc.max_steps, initial=run.start_step, disable=not (acc.is_main_process and cfg.log.progress),
               desc=f"{cfg.job} training", dynamic_ncols=True)
    t_start, step, nonfinite_run, timings = time.time(), run.start_step, 0, defaultdict(float)
    run.t_start = t_start
    while step < tc.max_steps:
        # One iteration, then the EMA. A streak of iterations with a skipped (non-finite)
        # update stops the run; the last good checkpoint stays.
        logs = run_iteration(acc, run.recipe, run.nets, run.opts, run.batches, tc, step, timings)
        nonfinite = any(k.startswith("nonfinite/") for k in logs)
        nonfinite_run, run.nonfinite_total = (nonfinite_run + 1) * nonfinite, run.nonfinite_total + nonfinite
        if nonfinite_run >= tc.max_nonfinite:
            bar.close()
            _stop_nonfinite(run, step)
        run.ema.step(run.ema_net.parameters())
        step += 1
        bar.update(1)
        _log_step(run, step, logs, bar)

        # Checkpoints (never in the middle of a non-finite streak) and the wall-clock budget.
        over_time = _over_time(acc, tc, t_start)
        if (step % tc.checkpoint_every == 0 or step == tc.max_steps or over_time) and nonfinite_run == 0:
            run.save_checkpoint(step)
        if over_time:
            acc.print(f"stopping at step {step}: train.max_minutes={tc.max_minutes} reached (resume with --resume latest)")
            break
    bar.close()

    # The run's summary, and the product (prior folder, mapper export) from the EMA weights.
    write_summary(acc, run, step, time.time() - t_start, timings)
    run_validation(acc, run.recipe, run.ema, run.nets, step, cfg, run.out)
    if acc.is_main_process and run.recipe.finish is not None:
        with ema_weights(run.ema, run.ema_net) as model:
            run.recipe.finish(model, run.out, step)
    acc.wait_for_everyone()
    acc.end_training()
    return run.out
