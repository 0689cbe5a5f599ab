"""The three-task table with ablations on the embedded default (issue: DAVI trainer).

For deblur, SR x4 and box inpainting, train the mapper three ways for the same number of
steps — full DAVI (IKL + PPB), regression only (no IKL: lambda_ikl = 0) and IKL without PPB
(a = T - 1 only) — then restore the same held-out test digits with the same measurement
noise, and report PSNR, SSIM and the classifier Fréchet distance (realism; not FID) against
lift(y). Prints the table and writes benchmarks/results/tasks.json (the numbers; the README's
table is rendered from it by benchmarks/readme_tables.py) and tasks.md beside it.

    python benchmarks/tasks.py --steps 400 --images 200           # train + measure (slow)
    python benchmarks/tasks.py --measure-only --images 200        # re-measure the shipped mappers
    python benchmarks/tasks.py --ship                             # also copy the full-DAVI exports
                                                                  # into davi/assets/mappers/<task>
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from common import span, table
from davi.cli.common import run_cli
from davi.eval.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]

TASKS = {"deblur": "deblur_mnist.yaml", "sr4": "sr4_mnist.yaml", "box": "box_mnist.yaml"}
VARIANTS = {
    "davi": [],
    "regression only (no IKL)": ["davi.lambda_ikl=0"],
    "IKL without PPB": ["davi.ppb=false"],
}
SHIPPED = ROOT / "davi" / "assets" / "mappers"


def ship(export_dir: Path, task: str) -> None:
    """Copy an export into the package as float16 weights (half the size; evaluated as shipped)."""
    from davi.io.export import export_float16

    export_float16(export_dir, SHIPPED / task)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--measure-only", action="store_true", help="no training: measure the shipped mappers")
    p.add_argument("--reuse", action="store_true", help="measure existing exports in --runs instead of retraining")
    p.add_argument("--ship", action="store_true", help="copy the full-DAVI exports into davi/assets/mappers")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tasks.json"),
                   help="results JSON (the .md is written beside it)")
    args = p.parse_args()

    import torch

    from davi.config import load_config
    from davi.data.datasets import load_split
    from davi.eval.evaluate import run_method
    from davi.eval.metrics import score_restorations
    from common import command_line, publish
    from davi.io.export import load_export
    from davi.solvers.methods import DaviMethod, LiftMethod
    from davi.training.recipes import train_job

    rows = []
    for task in args.tasks:
        base = ["train.batch_size=%d" % args.batch_size, f"train.max_steps={args.steps}",
                "train.checkpoint_every=100000", "log.image_every=0"]
        cfg = load_config(ROOT / "configs" / TASKS[task], base)
        x0 = load_split(cfg.data, "test").tensor(limit=args.images)
        exports = {}
        if args.measure_only:
            exports["davi (shipped)"] = SHIPPED / task
        else:
            for variant in args.variants:
                out = Path(args.runs) / f"{task}-{variant.split()[0].replace('(', '')}"
                if args.reuse and (out / "export" / "card.json").is_file():
                    summary = json.loads((out / "train_summary.json").read_text())
                    exports[variant] = (out / "export", summary["seconds_per_step"])
                    if variant == "davi" and (SHIPPED / task / "card.json").is_file():
                        exports["davi (shipped, fp16)"] = (SHIPPED / task, summary["seconds_per_step"])
                    continue
                shutil.rmtree(out, ignore_errors=True)
                vcfg = load_config(ROOT / "configs" / TASKS[task], [*base, f"train.output_dir={out}", *VARIANTS[variant]])
                t0 = time.time()
                train_job(vcfg)
                summary = json.loads((out / "train_summary.json").read_text())
                print(f"{task} / {variant}: {args.steps} steps in {time.time() - t0:.0f} s")
                exports[variant] = (out / "export", summary["seconds_per_step"])
                if args.ship and variant == "davi":
                    ship(out / "export", task)
                    exports["davi (shipped, fp16)"] = (SHIPPED / task, summary["seconds_per_step"])
        first = next(iter(exports.values()))
        _, _, operator = load_export(first[0] if isinstance(first, tuple) else first)
        y = operator.measure(x0, generator=torch.Generator().manual_seed(0))
        restored, _ = run_method(LiftMethod(operator), y, 100)
        rows.append({"task": task, "method": "lift(y)", **score_restorations(restored, x0, explain_absent=False)})
        for name, value in exports.items():
            folder, sps = value if isinstance(value, tuple) else (value, None)
            mapper, card, op = load_export(folder)
            restored, _ = run_method(DaviMethod(mapper, op), y, 100)
            rows.append({"task": task, "method": name, "steps": card["steps"],
                         **score_restorations(restored, x0, explain_absent=False),
                         **({"s_per_step": sps} if sps else {})})
            print(rows[-1])
    head = (f"Embedded default (32x32 digits, sigma_y = 0.05), {args.images} held-out test images, one sample "
            f"per image, same measurement noise for every method. classifier FD = Frechet distance in the digit "
            f"classifier's feature space (not FID; lower is more realistic).")
    publish(Path(args.out).with_suffix(".json"), {"command": command_line("tasks.py"), "head": head, "rows": rows},
            render_tasks)


# ----------------------------------------------------------------------------------------------
# the tables: tasks.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
TASK_COLUMNS = [("task", "task", "{}"), ("method", "method", "{}"), ("steps", "train steps", "{}"),
                ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                ("classifier_fd", "classifier FD", "{:.2f}"), ("s_per_step", "s / train step (CPU)", "{:.2f}")]


@table("tasks", "tasks.json")
def render_tasks(data: dict) -> str:
    return markdown_table(data["rows"], TASK_COLUMNS)


def _task_gains(data: dict) -> list[tuple[float, float]]:
    """(PSNR gain over lift in dB, lift's classifier FD / the method's) for every trained row."""
    lift = {r["task"]: r for r in data["rows"] if r["method"] == "lift(y)"}
    return [(r["psnr"] - lift[r["task"]]["psnr"], lift[r["task"]]["classifier_fd"] / r["classifier_fd"])
            for r in data["rows"] if r["method"] != "lift(y)"]


@table("tasks_psnr_gain", "tasks.json", inline=True)
def render_tasks_psnr_gain(data: dict) -> str:
    gains = [g for g, _ in _task_gains(data)]
    return f"{min(gains):+.1f} to {max(gains):+.1f} dB"


@table("tasks_fd_drop", "tasks.json", inline=True)
def render_tasks_fd_drop(data: dict) -> str:
    drops = [d for _, d in _task_gains(data)]
    return f"{min(drops):.1f}x to {max(drops):.0f}x"


@table("tasks_ikl_vs_regression", "tasks.json", inline=True)
def render_tasks_ikl_vs_regression(data: dict) -> str:
    """Classifier FD of full DAVI vs regression only, per task (the realism the IKL term buys)."""
    fd = {(r["task"], r["method"]): r["classifier_fd"] for r in data["rows"]}
    names = {"sr4": "SR x4", "box": "box", "deblur": "deblur"}
    return ", ".join(f"{fd[t, 'davi']:.3g} vs {fd[t, 'regression only (no IKL)']:.3g} for {names.get(t, t)}"
                     for t in names if (t, "davi") in fd)


@table("tasks_davi_seconds_per_step", "tasks.json", inline=True)
def render_tasks_davi_seconds_per_step(data: dict) -> str:
    return span([r["s_per_step"] for r in data["rows"] if r["method"] == "davi"], "{:.1f}") + " s"


if __name__ == "__main__":
    sys.exit(run_cli(main))
