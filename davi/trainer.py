"""One training loop on Accelerate, for the diffusion prior and for DAVI.

What differs between jobs lives in a *recipe*: its trainable networks, the ordered phases
of one iteration (each phase is one optimiser step on one network, the others frozen),
the network whose EMA is kept, a validation hook and a final save. The loop owns the rest:
devices, DDP, mixed precision, gradient accumulation and clipping, warm-up, skipping
non-finite losses, EMA, ``checkpoint-N`` folders written atomically (temp + rename) with a
total limit, resume from the latest, TensorBoard scalars and images, a progress bar.

Determinism: batches are a pure function of (seed, step) (:class:`StepBatchSampler`), and
``save_state`` stores every process's RNG states, so a resumed run repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from davi.atomic import recover_folder, replace_folder
from davi.config import Config

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class TrainingError(RuntimeError):
    """A run that cannot continue (the message says why; the last checkpoint is intact)."""


@dataclass
class Phase:
    """One optimiser step of an iteration: ``loss_fn(batch) -> (loss, logs)`` trains ``network``."""

    name: str
    network: str
    loss_fn: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Recipe:
    networks: dict[str, nn.Module]
    phases: list[Phase]
    ema_network: str
    lrs: dict[str, float]
    # validate(accelerator, ema_model, step) -> (scalars, images as (N, C, H, W) in [-1, 1]).
    validate: Callable[..., tuple[dict[str, float], dict[str, torch.Tensor]]] | None = None
    # finish(ema_model, output_dir, step): write the job's product (prior folder, mapper export).
    finish: Callable[..., None] | None = None
    # Networks the recipe must see unwrapped and on-device (frozen teacher etc.) are its own business.
    extra: dict[str, Any] = field(default_factory=dict)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    out = []
    root = Path(output_dir)
    if root.is_dir():
        for p in root.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and p.is_dir() and (p / "trainer_state.json").is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    if not resume:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1][1] if ckpts else None
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise TrainingError(f"{path}: not a checkpoint folder (no trainer_state.json)")
    return path


def weights_digest(model: nn.Module) -> str:
    """sha256 of a model's parameters and buffers (bitwise; equal digests = equal weights)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _flat_hparams(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_hparams(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def make_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (C, H', W') in [0, 1], padded with 1-px white lines."""
    n, c, h, w = images.shape
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + 1) + 1, nrow * (w + 1) + 1)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = images[i].float().cpu()
    return ((grid.clamp(-1, 1) + 1) / 2)


def save_grid_png(grid: torch.Tensor, path: str | Path, upscale: int = 1) -> None:
    """Write a (C, H, W) [0, 1] grid as PNG, atomically."""
    from PIL import Image

    arr = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def build_recipe(cfg: Config, accelerator, prior=None, val_images=None) -> Recipe:
    if cfg.job == "prior":
        from davi.prior_training import prior_recipe

        return prior_recipe(cfg, accelerator)
    from davi.davi_training import davi_recipe

    return davi_recipe(cfg, accelerator, prior=prior, val_images=val_images)


class TensorImages(torch.utils.data.Dataset):
    """In-memory images (N, C, H, W) as a training set, e.g. samples of an analytic prior."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "index": i, "label": -1}


def train(cfg: Config, resume: str | None = None, prior=None, train_images: torch.Tensor | None = None,
          val_images: torch.Tensor | None = None) -> Path:
    """Run ``cfg`` to ``cfg.train.max_steps``; returns the output folder.

    ``prior``, ``train_images`` and ``val_images`` replace what the config would load (the
    prior, the train split, the first test images): the analytic-posterior benchmark trains
    against closed-form priors on their own samples this way.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from davi.data import StepBatchSampler, load_split

    tc = cfg.train
    out = Path(tc.output_dir)
    # A process may train more than once (tests, benchmarks): forget the previous run's
    # mixed-precision/accumulation settings; the distributed process group is kept.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    main = accelerator.is_main_process
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > accelerator.num_processes:
        # e.g. `accelerate launch --cpu --num_processes 2`: each process trains alone
        accelerator.print(f"warning: launched as {launched} processes but training with "
                          f"{accelerator.num_processes}; on CPU use ACCELERATE_USE_CPU=1 with --multi_gpu")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".checkpoint-*.tmp"):  # saves that a kill interrupted
            shutil.rmtree(stale, ignore_errors=True)
        for final in out.glob("checkpoint-*.old"):
            recover_folder(final.with_name(final.name[: -len(".old")]))
        tmp = out / "config.yaml.tmp"
        tmp.write_text(cfg.to_yaml())
        os.replace(tmp, out / "config.yaml")
    accelerator.wait_for_everyone()

    # Identical initial weights on every rank, then per-rank noise for the losses.
    set_seed(tc.seed)
    recipe = build_recipe(cfg, accelerator, prior=prior, val_images=val_images)
    keys = list(recipe.networks)
    optimizers = {
        k: torch.optim.AdamW(recipe.networks[k].parameters(), lr=recipe.lrs[k],
                             betas=(tc.adam_beta1, tc.adam_beta2), weight_decay=tc.weight_decay)
        for k in keys
    }
    prepared = accelerator.prepare(*[recipe.networks[k] for k in keys], *[optimizers[k] for k in keys])
    nets = dict(zip(keys, prepared[: len(keys)]))
    opts = dict(zip(keys, prepared[len(keys):]))
    recipe.extra["nets"] = nets  # loss functions reach the prepared (DDP-wrapped) networks here

    ema_source = accelerator.unwrap_model(nets[recipe.ema_network])
    ema = EMAModel(ema_source.parameters(), decay=tc.ema_decay, model_cls=type(ema_source),
                   model_config=getattr(ema_source, "config", None))
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)

    start_step, nonfinite_total = 0, 0
    ckpt = resolve_resume(out, resume)
    if ckpt is not None:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        start_step, nonfinite_total = int(state["step"]), int(state.get("nonfinite_total", 0))

    train_set = TensorImages(train_images) if train_images is not None else load_split(cfg.data, "train")
    sampler = StepBatchSampler(len(train_set), tc.batch_size, tc.seed, start_step * tc.grad_accum,
                               accelerator.process_index, accelerator.num_processes)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.data.num_workers)
    # Creating the iterator draws from the global RNG: do it before the RNG is seeded or
    # restored, so that a resumed run and an uninterrupted one draw the same numbers.
    batches = iter(loader)
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        accelerator.print(f"resumed from {ckpt} at step {start_step}")
    else:
        set_seed(tc.seed + 1 + accelerator.process_index)

    if main:
        accelerator.init_trackers("davi", config=_flat_hparams(cfg.to_dict()))
    tracker = accelerator.get_tracker("tensorboard", unwrap=True) if main else None

    def ema_model() -> nn.Module:
        model = copy.deepcopy(accelerator.unwrap_model(nets[recipe.ema_network]))
        ema.copy_to(model.parameters())
        return model.eval()

    def save_checkpoint(step: int) -> None:
        tmp = out / f".checkpoint-{step}.tmp"
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if main:
            (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "nonfinite_total": nonfinite_total}))
            (tmp / "config.yaml").write_text(cfg.to_yaml())
            replace_folder(tmp, out / f"checkpoint-{step}")  # a kill leaves the old set or the new one
            if tc.checkpoints_total_limit > 0:  # 0 keeps every checkpoint
                for _, old in list_checkpoints(out)[: -tc.checkpoints_total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def run_validation(step: int) -> None:
        if recipe.validate is None or not main:
            return
        scalars, images = recipe.validate(accelerator, ema_model(), step)
        accelerator.log({f"val/{k}": v for k, v in scalars.items()}, step=step)
        for name, imgs in images.items():
            grid = make_grid(imgs, nrow=cfg.log.num_val if name == "grid" else min(len(imgs), 8))
            if tracker is not None:
                tracker.add_image(f"val/{name}", grid, step)
            save_grid_png(grid, out / "samples" / f"{name}-{step:07d}.png", upscale=2)

    bar = tqdm(total=tc.max_steps, initial=start_step, disable=not (main and cfg.log.progress),
               desc=f"{cfg.job} training", dynamic_ncols=True)
    t_start = time.time()
    nonfinite_run = 0
    step = start_step
    timings: dict[str, float] = {}
    while step < tc.max_steps:
        logs: dict[str, float] = {}
        for _ in range(tc.grad_accum):
            batch = next(batches)
            batch = {"image": batch["image"].to(accelerator.device, non_blocking=True)}
            with accelerator.accumulate(*nets.values()):
                for phase in recipe.phases:
                    t0 = time.perf_counter()
                    lr_scale = min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps else 1.0
                    for g in opts[phase.network].param_groups:
                        g["lr"] = recipe.lrs[phase.network] * lr_scale
                    loss, phase_logs = phase.loss_fn(batch)
                    # Every rank must agree, or DDP would wait forever for a skipped backward.
                    finite = accelerator.reduce(torch.isfinite(loss.detach()).float().reshape(1), "min").item() > 0
                    if not finite:
                        # Drop this network's accumulated gradients too (the wrapped optimizer
                        # would skip zero_grad in the middle of an accumulation window).
                        opts[phase.network].optimizer.zero_grad(set_to_none=True)
                        logs[f"nonfinite/{phase.name}"] = 1.0
                        continue
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and tc.max_grad_norm > 0:
                        gn = accelerator.clip_grad_norm_(nets[phase.network].parameters(), tc.max_grad_norm)
                        logs[f"grad_norm/{phase.network}"] = float(gn)
                    opts[phase.network].step()
                    opts[phase.network].zero_grad(set_to_none=True)
                    logs[f"loss/{phase.name}"] = float(loss.detach())
                    for k, v in phase_logs.items():
                        logs[k] = float(v)
                    timings[phase.name] = timings.get(phase.name, 0.0) + time.perf_counter() - t0
        if any(k.startswith("nonfinite/") for k in logs):
            nonfinite_run += 1
            nonfinite_total += 1
            if nonfinite_run >= tc.max_nonfinite:
                last = list_checkpoints(out)
                where = f"; last good checkpoint: {last[-1][1]}" if last else "; no checkpoint was written"
                bar.close()
                accelerator.end_training()
                raise TrainingError(f"{tc.max_nonfinite} non-finite losses in a row at step {step}{where} "
                                    f"(lower train.lr, raise train.max_grad_norm or try mixed_precision=no)")
        else:
            nonfinite_run = 0
        ema.step(accelerator.unwrap_model(nets[recipe.ema_network]).parameters())
        step += 1
        bar.update(1)
        if step % cfg.log.every == 0 or step == tc.max_steps:
            logs["nonfinite/total"] = float(nonfinite_total)
            for k in keys:
                logs[f"lr/{k}"] = opts[k].param_groups[0]["lr"]
            accelerator.log(logs, step=step)
            bar.set_postfix({k.split("/")[-1]: f"{v:.4f}" for k, v in logs.items() if k.startswith("loss/")})
        if cfg.log.image_every and step % cfg.log.image_every == 0 and step != tc.max_steps:
            run_validation(step)
        over_time = tc.max_minutes > 0 and (time.time() - t_start) > tc.max_minutes * 60
        if accelerator.num_processes > 1:
            over_time = accelerator.reduce(torch.tensor([float(over_time)], device=accelerator.device), "max").item() > 0
        # Never checkpoint in the middle of a streak of non-finite losses: the last good one stays.
        if (step % tc.checkpoint_every == 0 or step == tc.max_steps or over_time) and nonfinite_run == 0:
            save_checkpoint(step)
        if over_time:
            accelerator.print(f"stopping at step {step}: train.max_minutes={tc.max_minutes} reached "
                              f"(resume with --resume latest)")
            break
    bar.close()
    elapsed = time.time() - t_start
    # DDP keeps replicas identical; record each rank's weight digest so that it can be checked.
    from accelerate.utils import gather_object

    digests = gather_object([{k: weights_digest(accelerator.unwrap_model(n)) for k, n in nets.items()}])
    run_validation(step)
    if main and recipe.finish is not None:
        recipe.finish(ema_model(), out, step)
    if main:
        summary = {"steps": step, "start_step": start_step, "seconds": elapsed,
                   "seconds_per_step": elapsed / max(1, step - start_step),
                   "phase_seconds_per_step": {k: v / max(1, step - start_step) for k, v in timings.items()},
                   "nonfinite_total": nonfinite_total, "num_processes": accelerator.num_processes,
                   "rank_weight_digests": digests}
        tmp = out / "train_summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, out / "train_summary.json")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out
