"""``checkpoint-N`` folders of a training run: list, resolve, save atomically, prune, recover.

A checkpoint holds Accelerate's state (every network, optimiser and RNG state, the EMA, for an
exact resume), ``trainer_state.json`` (step, non-finite count), the run's ``config.yaml`` and the
EMA network as a diffusers folder ``ema/`` (config + safetensors), so exporting a checkpoint
reads no pickle. It is written into ``.checkpoint-N.tmp`` and renamed into place: a kill leaves
the previous set of checkpoints or the new one.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

from davi.io.atomic import recover_folder, replace_folder, write_text

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE = "trainer_state.json"


class TrainingError(RuntimeError):
    """A run that cannot continue (the message says why; the last checkpoint is intact)."""


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as (step, folder)."""
    root, out = Path(output_dir), []
    if root.is_dir():
        for p in root.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and p.is_dir() and (p / STATE).is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """``None``, ``"latest"`` (None when there is no checkpoint yet) or a checkpoint folder."""
    if not resume:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1][1] if ckpts else None
    path = Path(resume)
    if not (path / STATE).is_file():
        raise TrainingError(f"{path}: not a checkpoint folder (no {STATE})")
    return path


def read_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE).read_text())


class CheckpointManager:
    """The checkpoints of one run's output folder, as seen by every process of the run."""

    def __init__(self, output_dir: str | Path, total_limit: int, accelerator):
        self.root, self.total_limit, self.accelerator = Path(output_dir), total_limit, accelerator

    def recover(self) -> None:
        """Undo what a kill in the middle of a save left behind (main process)."""
        for stale in self.root.glob(".checkpoint-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        for final in self.root.glob("checkpoint-*.old"):
            recover_folder(final.with_name(final.name[: -len(".old")]))

    def latest(self) -> Path | None:
        found = list_checkpoints(self.root)
        return found[-1][1] if found else None

    def save(self, step: int, state: dict, config_yaml: str, save_ema: Callable[[Path], None]) -> Path:
        """Every process writes its share of Accelerate's state; the main process adds the rest."""
        acc, tmp, final = self.accelerator, self.root / f".checkpoint-{step}.tmp", self.root / f"checkpoint-{step}"
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_ema(tmp / "ema")
            write_text(tmp / STATE, json.dumps({"step": step, **state}))
            write_text(tmp / "config.yaml", config_yaml)
            replace_folder(tmp, final)
            self.prune()
        acc.wait_for_everyone()
        return final

    def prune(self) -> None:
        if self.total_limit > 0:  # 0 keeps every checkpoint
            for _, old in list_checkpoints(self.root)[: -self.total_limit]:
                shutil.rmtree(old, ignore_errors=True)
