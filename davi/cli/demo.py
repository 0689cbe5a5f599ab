"""``davi demo``: the main job on the embedded default: train a DAVI mapper, export it, and compare it on
held-out digits with the lifted measurement and with the shipped, fully trained mapper.

    davi demo                                  # SR x4, ~12 minutes of training on 2 CPU cores (also: make demo)
    davi demo --task box --minutes 60          # another task, longer

Writes <out>/run_<task> (checkpoints, TensorBoard logs, export), <out>/grid_<task>.png,
<out>/metrics_<task>.md and <out>/results_<task>.json (the figures: steps, seconds, metrics;
benchmarks/results/demo_sr4.json is such a file from a fresh clone, rendered into the README).
The task's config is configs/<task>_mnist.yaml, looked up under the working directory, then in the
repository the package was installed from (an editable install).
"""

from __future__ import annotations

import sys
from pathlib import Path

import davi

HELP = "the main job: train a mapper on the embedded default, export it, restore and score held-out digits"
TASKS = ("box", "deblur", "random_inpaint", "sr4")  # configs/<task>_mnist.yaml
SHIPPED = Path(davi.__file__).resolve().parent / "assets" / "mappers"
SOURCE_ROOT = Path(davi.__file__).resolve().parent.parent  # the repository, for an editable install
TABLE_COLUMNS = [("method", "method", "{}"), ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                 ("classifier_fd", "classifier FD (lower = more realistic)", "{:.2f}"), ("kid", "KID", "{:.3f}"),
                 ("nfe", "network evals / image", "{}"), ("ms", "ms / image (CPU)", "{:.2f}")]


def add_arguments(p) -> None:
    """The ``demo`` subcommand's flags."""
    p.add_argument("--task", choices=TASKS, default="sr4")
    p.add_argument("--minutes", type=float, default=12.0, help="training wall-clock budget")
    p.add_argument("--steps", type=int, default=2000,
                   help="training steps; the --minutes budget usually ends first (keeps the progress bar honest)")
    p.add_argument("--images", type=int, default=200, help="held-out test images to restore")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--fresh", action="store_true", help="start training from scratch instead of resuming")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.batch_size=8")


def config_path(task: str) -> Path:
    """configs/<task>_mnist.yaml under the working directory or the source repository."""
    from davi.config import ConfigError

    name = Path("configs") / f"{task}_mnist.yaml"
    for root in (Path.cwd(), SOURCE_ROOT):
        if (root / name).is_file():
            return root / name
    raise ConfigError(f"{name}: not found under {Path.cwd()} or {SOURCE_ROOT}; run the demo from the "
                      "repository (the configs are not part of an installed wheel)")


def train_mapper(args, run_dir: Path):
    """Train (resuming unless --fresh) for --minutes / --steps; (config, seconds spent)."""
    import shutil
    import time

    from davi.config import load_config
    from davi.training.loop import train
    from davi.training.recipes import davi_recipe

    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = load_config(config_path(args.task),
                      [f"train.output_dir={run_dir}", f"train.max_steps={args.steps}",
                       f"train.max_minutes={args.minutes}", *args.overrides])
    print(f"[1/3] training a {args.task} mapper for up to {args.minutes:g} min (TensorBoard: {run_dir / 'logs'})")
    t0 = time.time()
    train(cfg, davi_recipe, resume="latest")
    return cfg, time.time() - t0


def methods_to_compare(task: str, export_dir: Path):
    """({name: method} for lift(y), this run's export and the shipped mapper when it fits), operator."""
    from davi.restorer import Restorer
    from davi.solvers.methods import LiftMethod

    this_run = Restorer.from_pretrained(export_dir)
    operator = this_run.operator
    methods = {"lift(y)": LiftMethod(operator),
               f"DAVI, this run ({this_run.card.steps} steps)": this_run.one_step_method()}
    shipped = SHIPPED / task
    if (shipped / "card.json").is_file():
        restorer = Restorer.from_pretrained(shipped)
        if restorer.operator.params() == operator.params():
            methods[f"DAVI, shipped ({restorer.card.steps} steps)"] = restorer.one_step_method()
        else:
            print(f"note: {shipped} was trained for another operator setting; skipped")
    return methods, operator


def restore_and_score(methods: dict, y, x0):
    """(table rows, {name: restorations}) of every method on the measurements y of x0."""
    from davi.eval.evaluate import run_method
    from davi.eval.metrics import score_restorations

    rows, restored = [], {}
    for name, method in methods.items():
        restored[name], spi = run_method(method, y, batch_size=50, desc=name)
        rows.append({"method": name, **score_restorations(restored[name], x0, explain_absent=False), "ms": spi * 1000,
                     "nfe": method.nfe_per_sample})
    return rows, restored


def write_outputs(args, out: Path, run_dir: Path, figures: dict) -> None:
    """metrics_<task>.md, results_<task>.json and grid_<task>.png from the rows, restorations and timings."""
    import json
    import time

    import torch

    from davi.eval.evaluate import markdown_table
    from davi.io.atomic import write_text
    from davi.io.images import display_measurement, make_grid, save_grid_png

    rows, restored, y, x0, sigma_y = (figures[k] for k in ("rows", "restored", "y", "x0", "sigma_y"))
    table = markdown_table(rows, TABLE_COLUMNS)
    header = (f"# DAVI demo: {args.task} on {args.images} held-out 32x32 digits (sigma_y = {sigma_y})\n\n"
              "classifier FD: Frechet distance in the project's digit-classifier feature space (not FID); KID: the "
              "kernel distance in the same features (unbiased; lower = more realistic).\n\n")
    write_text(out / f"metrics_{args.task}.md", header + table + "\n")
    summary = json.loads((run_dir / "train_summary.json").read_text())
    results = {"command": args.invocation, "task": args.task, "images": args.images,
               "steps": summary["steps"], "steps_this_process": summary["steps"] - summary["start_step"],
               "train_seconds": figures["train_seconds"], "seconds": time.time() - figures["t0"], "rows": rows}
    write_text(out / f"results_{args.task}.json", json.dumps(results, indent=2) + "\n")
    n = 12
    rows_img = [display_measurement(y[:n], x0[:n]), *[restored[k][:n] for k in restored], x0[:n]]
    save_grid_png(make_grid(torch.cat(rows_img), nrow=n), out / f"grid_{args.task}.png", upscale=3)
    print(table)
    print(f"grid rows: measurement, {', '.join(restored)}, ground truth -> {out / f'grid_{args.task}.png'}")


def run(args) -> None:
    import time

    import torch

    from davi.data.datasets import load_split

    if not getattr(args, "invocation", None):  # called without davi.cli.main: record what it would be
        args.invocation = " ".join(["davi", "demo", *sys.argv[1:]])
    out = Path(args.out)
    run_dir = out / f"run_{args.task}"
    t0 = time.time()
    cfg, train_seconds = train_mapper(args, run_dir)
    print(f"[2/3] restoring {args.images} held-out test digits")
    x0 = load_split(cfg.data, "test").tensor(limit=args.images)
    methods, operator = methods_to_compare(args.task, run_dir / "export")
    y = operator.measure(x0, generator=torch.Generator().manual_seed(0))
    rows, restored = restore_and_score(methods, y, x0)
    print("[3/3] writing the grid and the table")
    write_outputs(args, out, run_dir, {"rows": rows, "restored": restored, "y": y, "x0": x0,
                                       "sigma_y": operator.sigma_y, "train_seconds": train_seconds, "t0": t0})
