"""Measurement-only training against paired DAVI and RED-Diff on the embedded default (issue 13).

For SR x4, deblur and box inpainting:

* ``paired``: the paired DAVI mapper (default: the shipped one, davi/assets/mappers/<task>, 250
  steps at batch 16 on the bundled train digits; ``--paired train`` retrains it on the same
  ``--train`` digits the measurement-only runs see);
* ``unpaired``: job ``unpaired`` on measurements of the first ``--train`` train digits (noise
  seed 0, the digits dropped), no anchors, so the bridge is off;
* ``unpaired_anchors``: the same with RED-Diff-100 anchors of those measurements (PPB on);
* ``red_diff_100``: RED-Diff-100 on the test measurements (per-image optimisation).

Every method restores the same ``--images`` held-out test digits (measurement noise seed 0).
Columns: PSNR, SSIM, classifier FD, the mapper's training CPU minutes and the anchors' precompute
CPU minutes (process CPU time, so sharing the machine changes them little). Each (task, variant)
is cached in ``--runs``/<task>-<variant>/result.json and a killed run resumes there (trainings
from their last checkpoint, RED-Diff from its last shard); the table is written after each.

    python benchmarks/unpaired.py --steps 250 --train 256 --images 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from common import table
from davi.cli.common import run_cli
from davi.eval.evaluate import markdown_table
from davi.eval.tasks import DIGIT_TASKS as TASKS
from davi.eval.tasks import MAPPERS as SHIPPED

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("paired", "unpaired", "unpaired_anchors", "red_diff_100")


def unpaired_task(task: str, args, extra: list[str]):
    """The task (davi.eval.tasks.DigitTask) from configs/<task>_mnist_unpaired.yaml with this run's settings."""
    from davi.eval.tasks import DigitTask

    return DigitTask.load(task, args.images, variant="unpaired", overrides=[
        f"unpaired.limit={args.train}", f"unpaired.anchors={ROOT / 'runs' / 'anchors' / f'{task}_mnist_{args.train}'}",
        f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", "train.checkpoint_every=50",
        "log.image_every=0", "log.progress=false", *extra])


def unpaired_config(task: str, args, extra: list[str]):
    return unpaired_task(task, args, extra).config


def train_mapper(cfg, recipe_kwargs=None) -> tuple[Path, float]:
    """Train (resuming a killed run) and return (export folder, CPU minutes for the full run).

    A resumed run measures only its last segment: its CPU time per step is scaled to every step."""
    from davi.training.checkpoints import list_checkpoints
    from davi.training.recipes import get_recipe
    from davi.training.loop import train

    out = Path(cfg.train.output_dir)
    done = (out / "export" / "card.json").is_file()
    if not done:
        resume = "latest" if out.is_dir() and list_checkpoints(out) else None
        start = max((int(p.name.split("-")[1]) for p in list_checkpoints(out)), default=0) if resume else 0
        t0 = time.process_time()
        train(cfg, get_recipe(cfg.job), resume=resume, **(recipe_kwargs or {}))
        per_step = (time.process_time() - t0) / max(1, cfg.train.max_steps - start)
        (out / "cpu.json").write_text(json.dumps({"cpu_seconds_per_step": per_step}))
    per_step = json.loads((out / "cpu.json").read_text())["cpu_seconds_per_step"]
    return out / "export", per_step * cfg.train.max_steps / 60


def restore_with_mapper(export: Path, y):
    from davi.eval.evaluate import run_method
    from davi.io.export import load_export
    from davi.solvers.methods import DaviMethod

    mapper, _, operator = load_export(export)
    return run_method(DaviMethod(mapper, operator), y, 100)[0]


def run_variant(task: str, variant: str, args, y, x0) -> dict:
    from davi.data.anchors import anchor_cpu_seconds, compute_anchors
    from davi.config import load_config
    from davi.data.measurements import MeasurementDataset

    runs = Path(args.runs)
    if variant == "paired" and args.paired == "shipped":
        card = json.loads((SHIPPED / task / "card.json").read_text())
        return {"restored": restore_with_mapper(SHIPPED / task, y), "train_steps": card["steps"],
                "train_batch": card["config"]["train"]["batch_size"], "train_images": "4,000 (all)",
                "train_cpu_minutes": None}
    if variant == "paired":
        from davi.data.datasets import load_split

        cfg = load_config(ROOT / "configs" / f"{task}_mnist.yaml", [
            *(shipped_objective(task) if args.paired == "recipe" else []),
            f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", "train.checkpoint_every=50",
            "log.image_every=0", "log.progress=false", f"train.output_dir={runs / f'{task}-paired'}"])
        images = load_split(cfg.data, "train").tensor(limit=args.train)
        export, cpu = train_mapper(cfg, {"train_images": images, "val_images": images[:4]})
        return {"restored": restore_with_mapper(export, y), "train_steps": args.steps, "train_batch": args.batch_size,
                "train_images": args.train, "train_cpu_minutes": cpu}
    if variant == "red_diff_100":
        cfg = unpaired_config(task, args, [])
        data = MeasurementDataset(y, cfg_operator_params(cfg), f"{cfg.data.source}:test[:{len(y)}] measured (seed 0)")
        folder = compute_anchors(cfg, runs / "red_diff_test" / f"{task}-{len(y)}", data=data, progress=False)
        from davi.data.anchors import load_anchors

        return {"restored": load_anchors(folder, data).clamp(-1, 1), "nfe": cfg.red_diff.num_steps,
                "cpu_minutes": anchor_cpu_seconds(folder) / 60,
                "red_diff": f"lr={cfg.red_diff.lr}, lam={cfg.red_diff.lam}"}
    anchored = variant == "unpaired_anchors"
    cfg = unpaired_config(task, args, [f"train.output_dir={runs / f'{task}-{variant}'}"]
                          + ([] if anchored else ["unpaired.anchors="]))
    anchor_minutes = None
    if anchored:
        compute_anchors(cfg, device="cpu", progress=False)  # resumes (or checks) the anchor shards
        anchor_minutes = anchor_cpu_seconds(cfg.unpaired.anchors) / 60
    export, cpu = train_mapper(cfg)
    return {"restored": restore_with_mapper(export, y), "train_steps": args.steps, "train_batch": args.batch_size,
            "train_images": args.train, "train_cpu_minutes": cpu, "anchor_cpu_minutes": anchor_minutes}


def shipped_objective(task: str) -> list[str]:
    """Overrides that give the paired config the shipped mapper's objective (issue 12's tuned winner)."""
    objective = json.loads((SHIPPED / task / "card.json").read_text())["config"]["davi"]
    return [f"davi.{key}={objective[key]}" for key in ("t_ikl", "lambda_con", "lambda_reg", "ppb", "score_steps")]


def cfg_operator_params(cfg) -> dict:
    from davi.builders import operator_from_config

    return operator_from_config(cfg).params()


def collect(args) -> dict:
    """{task: {variant: metrics}} from every cached result; with ``--keep-earlier`` the tasks of the
    published JSON that have no cached result here are kept as they were (with their protocol)."""
    out: dict = {}
    for task in TASKS:
        for variant in VARIANTS:
            f = Path(args.runs) / f"{task}-{variant}" / "result.json"
            if f.is_file():
                out.setdefault(task, {})[variant] = json.loads(f.read_text())
    if args.keep_earlier and Path(args.out).is_file():
        earlier = json.loads(Path(args.out).read_text())
        for task in TASKS:
            if task in earlier and task not in out:
                out[task] = earlier[task]
                out.setdefault("protocols", {})[task] = earlier.get("protocols", {}).get(task, earlier["head"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train", type=int, default=256, help="training measurements (first N train digits)")
    p.add_argument("--images", type=int, default=200, help="held-out test digits")
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--paired", choices=("shipped", "train", "recipe"), default="shipped",
                   help="shipped: the shipped mapper; train: configs/<task>_mnist.yaml (the paper's defaults) on the "
                        "same --train digits and --steps; recipe: the same with the shipped mapper's objective")
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench_unpaired"))
    p.add_argument("--keep-earlier", action="store_true",
                   help="keep the published rows of tasks not measured in --runs (their protocol is kept with them)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "unpaired.json"))
    args = p.parse_args()

    from davi.eval.metrics import score_restorations
    from davi.io.atomic import write_json

    for task in args.tasks:
        digits = unpaired_task(task, args, [])
        cfg, x0 = digits.config, digits.test_blocks(1)[0]
        y = digits.measure(x0)  # noise seed 0
        for variant in args.variants:
            cache = Path(args.runs) / f"{task}-{variant}" / "result.json"
            if cache.is_file():
                continue
            result = run_variant(task, variant, args, y, x0)
            metrics = score_restorations(result.pop("restored"), x0, explain_absent=False)
            write_json(cache, {**metrics, **result, "images": len(x0)})
            print(task, variant, json.dumps({**metrics, **result}))
            publish_all(args, cfg)
    publish_all(args, cfg)  # also when every (task, variant) was cached: the table of what is there


def publish_all(args, cfg) -> None:
    from common import command_line, publish

    head = (f"Embedded default (32x32 digits, sigma_y = 0.05), {args.images} held-out test digits (noise seed "
            f"0), one sample per image. Measurement-only runs: {args.train} measurements of the first "
            f"{args.train} bundled train digits (seed 0, digits dropped), {args.steps} mapper steps at batch "
            f"{args.batch_size}; anchors = RED-Diff-{cfg.red_diff.num_steps} of those measurements. paired = "
            + {"shipped": "the shipped mappers (their own step budgets, all 4,000 train digits).",
               "train": f"paired DAVI (the paper's per-task defaults) on the same {args.train} digits and steps.",
               "recipe": f"paired DAVI with the shipped mappers' objectives (issue 12's tuned winners) on the same "
                         f"{args.train} clean digits and steps."}[args.paired]
            + " CPU minutes = process CPU time, one thread. classifier FD = Frechet distance in the digit "
              "classifier's features (not FID; lower is more realistic).")
    data = collect(args)
    for task, protocol in data.get("protocols", {}).items():
        head += f" The {task} rows are kept from an earlier run: {protocol}"
    publish(Path(args.out), {"command": command_line("unpaired.py"), "head": head, **data}, render_unpaired)


# ----------------------------------------------------------------------------------------------
# the tables: unpaired.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
UNPAIRED_VARIANTS = {"paired": "paired DAVI", "unpaired": "measurement-only, no anchors (PPB off)",
                     "unpaired_anchors": "measurement-only + RED-Diff anchors", "red_diff_100": "RED-Diff-100"}
UNPAIRED_COLUMNS = [("task", "task", "{}"), ("variant", "method", "{}"), ("psnr", "PSNR (dB)", "{:.2f}"),
                    ("ssim", "SSIM", "{:.3f}"), ("classifier_fd", "classifier FD", "{:.2f}"),
                    ("train_steps", "mapper steps", "{}"), ("train_set", "train digits measured", "{}"),
                    ("clean_images", "clean images used", "{}"), ("train_cpu_minutes", "training CPU min", "{:.1f}"),
                    ("precompute_cpu_minutes", "RED-Diff CPU min", "{:.1f}")]


@table("unpaired", "unpaired.json")
def render_unpaired(data: dict) -> str:
    """benchmarks/unpaired.py: {task: {variant: metrics}}; RED-Diff minutes are anchors or test-time solves."""
    rows = []
    for task in ("sr4", "deblur", "box"):
        for key, name in UNPAIRED_VARIANTS.items():
            r = data.get(task, {}).get(key)
            if r is not None:
                minutes = r.get("anchor_cpu_minutes") if key != "red_diff_100" else r.get("cpu_minutes")
                row = {**r, "task": task, "variant": name, "precompute_cpu_minutes": minutes,
                       "train_set": r.get("train_images"), "clean_images": r.get("train_images")}
                if key.startswith("unpaired"):
                    row["clean_images"] = 0  # measurements only
                rows.append({k: "" if v is None else v for k, v in row.items()})
    return markdown_table(rows, UNPAIRED_COLUMNS)


@table("unpaired_goals", "unpaired.json", inline=True)
def render_unpaired_goals(data: dict) -> str:
    """Issue 13's goal per task: measurement-only + anchors within 1 dB PSNR of paired DAVI and a lower
    classifier FD than RED-Diff-100 (a task missing a row is named, not counted)."""
    parts, met, measured = [], 0, 0
    for task in ("sr4", "deblur", "box"):
        r = data.get(task, {})
        if not all(k in r for k in ("paired", "unpaired_anchors", "red_diff_100")):
            parts.append(f"{task}: not measured")
            continue
        gap = r["unpaired_anchors"]["psnr"] - r["paired"]["psnr"]
        fd, fd_rd = r["unpaired_anchors"]["classifier_fd"], r["red_diff_100"]["classifier_fd"]
        ok = gap >= -1 and fd < fd_rd
        measured, met = measured + 1, met + ok
        parts.append(f"{task}: {gap:+.2f} dB vs paired, classifier FD {fd:.3g} vs RED-Diff-100's {fd_rd:.3g}"
                     f" ({'met' if ok else 'not met'})")
    return f"goal met on {met} of {measured} measured tasks (needed: 2 of 3); " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(run_cli(main))
