"""Tune the paired objective for realism at near-equal PSNR: short runs of several settings, side by side.

Every setting continues the shipped paired mapper of the task (``davi.init_mapper``, so the
short budget measures the direction a setting pulls in, not training from the prior) for
``--steps`` steps at batch 16 with the task's config plus the setting's overrides, then its EMA
mapper restores the same ``--images`` held-out test digits (benchmarks/convergence.py's scoring:
PSNR, SSIM, classifier FD, KID). The pick: the lowest KID among the settings whose PSNR is within
``--psnr-slack`` dB of the best one. Each setting's run and scores are cached under
``--runs``/<task>/<name>/ (a killed sweep resumes); ``benchmarks/results/sweep_<task>.json`` is
rewritten after each setting.

    python benchmarks/sweep.py --task sr4 --steps 250
    python benchmarks/sweep.py --task sr4 --setting reg0.1:davi.lambda_reg=0.1 --setting ikl400:davi.t_ikl=400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from common import table
from davi.cli.common import run_cli
from davi.eval.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]
# name -> overrides. The baseline is the task config itself; lambda_reg pulls samples towards the
# posterior mean (blur), t_ikl sets how coarse the prior's noise levels in the IKL are.
DEFAULT_SETTINGS = {
    "baseline": [],
    "reg0.3": ["davi.lambda_reg=0.3"],
    "reg0.1": ["davi.lambda_reg=0.1"],
    "ikl400": ["davi.t_ikl=400"],
    "noppb": ["davi.ppb=false"],  # at 250 steps from the prior, IKL without PPB beat full DAVI (tasks.json)
}


def pick(rows: list[dict], psnr_slack: float) -> str:
    """The lowest-KID setting among those within ``psnr_slack`` dB of the best PSNR."""
    best_psnr = max(r["psnr"] for r in rows)
    eligible = [r for r in rows if r["psnr"] >= best_psnr - psnr_slack]
    return min(eligible, key=lambda r: r["kid"])["name"]


def run_setting(task: str, name: str, overrides: list[str], args) -> dict:
    """Train one setting (resuming a killed run) and score its last checkpoint."""
    from davi.eval.checkpoint_scores import score_checkpoint
    from davi.training.checkpoints import list_checkpoints
    from davi.config import load_config
    from davi.training.recipes import train_job

    out = Path(args.runs) / task / name
    cfg = load_config(ROOT / "configs" / f"{task}_mnist.yaml", [
        f"davi.init_mapper={ROOT / 'davi' / 'assets' / 'mappers' / task}", f"train.max_steps={args.steps}",
        f"train.output_dir={out}", f"train.checkpoint_every={args.steps}", "log.image_every=0",
        "log.progress=false", *overrides])

    def finished():
        return [c for s, c in list_checkpoints(out) if s >= args.steps]

    if not finished():
        train_job(cfg, resume="latest" if list_checkpoints(out) else None)
    return {"name": name, "overrides": " ".join(overrides) or "(task config)",
            **score_checkpoint(finished()[-1], args.images)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=("sr4", "deblur", "box"))
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--psnr-slack", type=float, default=0.5)
    p.add_argument("--setting", action="append", default=None, metavar="NAME:key=value,key=value",
                   help="a setting to try (repeatable); default: baseline, reg0.3, reg0.1, ikl400, noppb")
    p.add_argument("--runs", default=str(ROOT / "runs" / "sweep"))
    args = p.parse_args()

    from common import command_line, publish

    settings = DEFAULT_SETTINGS
    if args.setting:
        settings = {}
        for spec in args.setting:
            name, _, rest = spec.partition(":")
            if not name or any("=" not in kv for kv in rest.split(",") if kv):
                raise SystemExit(f"error: --setting {spec!r}: expected NAME:key=value,key=value")
            settings[name] = [kv for kv in rest.split(",") if kv]
    rows = []
    for name, overrides in settings.items():
        rows.append(run_setting(args.task, name, overrides, args))
        head = (f"{args.task}: each setting continues the shipped paired mapper for {args.steps} steps (batch 16), "
                f"then restores {args.images} held-out test digits (one sample each, seed 0). Picked: the lowest "
                f"KID among settings within {args.psnr_slack} dB of the best PSNR.")
        publish(ROOT / "benchmarks" / "results" / f"sweep_{args.task}.json",
                {"command": command_line("sweep.py"), "head": head, "steps": args.steps,
                 "picked": pick(rows, args.psnr_slack), "rows": rows}, render_sweep)


# ----------------------------------------------------------------------------------------------
# the tables: sweep_<task>.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
SWEEP_COLUMNS = [("name", "setting", "{}"), ("overrides", "overrides", "{}"), ("psnr", "PSNR (dB)", "{:.2f}"),
                 ("ssim", "SSIM", "{:.3f}"), ("classifier_fd", "classifier FD", "{:.2f}"), ("kid", "KID", "{:.3f}"),
                 ("kid_std", "KID std", "{:.3f}"), ("picked", "picked", "{}")]


def render_sweep(data: dict) -> str:
    """benchmarks/sweep.py: one row per setting of the paired objective, the picked one marked."""
    return markdown_table([{**r, "picked": "yes" if r["name"] == data["picked"] else ""} for r in data["rows"]],
                          SWEEP_COLUMNS)


def render_sweep_summary(data: dict) -> str:
    """The sweep's pick and how the most realistic setting did, for a sentence."""
    rows = {r["name"]: r for r in data["rows"]}
    picked, realist = rows[data["picked"]], min(data["rows"], key=lambda r: r["kid"])
    best = max(r["psnr"] for r in data["rows"])
    out = (f"`{picked['name']}` ({picked['overrides']}: {picked['psnr']:.2f} dB, KID {picked['kid']:.3f}) of "
           f"{len(rows)} settings")
    if realist is not picked:
        out += (f"; the most realistic, `{realist['name']}` (KID {realist['kid']:.3f}, classifier FD "
                f"{realist['classifier_fd']:.2f}), is {best - realist['psnr']:.2f} dB below the best PSNR")
    return out


# one sweep per paired task
for _task in ("sr4", "deblur", "box"):
    table(f"sweep_{_task}", f"sweep_{_task}.json")(render_sweep)
    table(f"sweep_{_task}_summary", f"sweep_{_task}.json", inline=True)(render_sweep_summary)


if __name__ == "__main__":
    sys.exit(run_cli(main))
