"""The main job on the embedded default: train a DAVI mapper, export it, and compare it on
held-out digits with the lifted measurement and with the shipped, fully trained mapper.

    make demo                                  # SR x4, ~12 minutes of training on 2 CPU cores
    make demo ARGS="--task box --minutes 60"   # another task, longer

Writes <out>/run_<task> (checkpoints, TensorBoard logs, export), <out>/grid_<task>.png,
<out>/metrics_<task>.md and <out>/results_<task>.json (the figures: steps, seconds, metrics;
benchmarks/results/demo_sr4.json is such a file from a fresh clone, rendered into the README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before anything imports it)
from davi.cli.common import run_cli

TASKS = ("box", "deblur", "random_inpaint", "sr4")  # configs/<task>_mnist.yaml
SHIPPED = Path(davi.__file__).resolve().parent / "assets" / "mappers"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, default="sr4")
    p.add_argument("--minutes", type=float, default=12.0, help="training wall-clock budget")
    p.add_argument("--steps", type=int, default=2000,
                   help="training steps; the --minutes budget usually ends first (keeps the progress bar honest)")
    p.add_argument("--images", type=int, default=200, help="held-out test images to restore")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--fresh", action="store_true", help="start training from scratch instead of resuming")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.batch_size=8")
    args = p.parse_args(argv)
    args.command = " ".join(["python", "demo.py", *(sys.argv[1:] if argv is None else argv)])  # for the results file
    return run_cli(lambda: demo(args))


def demo(args) -> None:
    import json
    import shutil
    import time

    import torch

    from davi.io.atomic import write_text
    from davi.config import load_config
    from davi.data.datasets import load_split
    from davi.eval.evaluate import markdown_table, run_method
    from davi.io.export import load_export
    from davi.io.images import display_measurement, make_grid, save_grid_png
    from davi.solvers.methods import DaviMethod, LiftMethod
    from davi.eval.metrics import score_restorations
    from davi.training.recipes import davi_recipe
    from davi.training.loop import train

    out = Path(args.out)
    run_dir = out / f"run_{args.task}"
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = load_config(Path(__file__).resolve().parent / "configs" / f"{args.task}_mnist.yaml",
                      [f"train.output_dir={run_dir}", f"train.max_steps={args.steps}",
                       f"train.max_minutes={args.minutes}", *args.overrides])
    print(f"[1/3] training a {args.task} mapper for up to {args.minutes:g} min (TensorBoard: {run_dir / 'logs'})")
    t0 = time.time()
    train(cfg, davi_recipe, resume="latest")
    t_train = time.time() - t0

    print(f"[2/3] restoring {args.images} held-out test digits")
    x0 = load_split(cfg.data, "test").tensor(limit=args.images)
    mapper, card, operator = load_export(run_dir / "export")
    y = operator.measure(x0, generator=torch.Generator().manual_seed(0))
    methods = {"lift(y)": LiftMethod(operator), f"DAVI, this run ({card['steps']} steps)": DaviMethod(mapper, operator)}
    shipped = SHIPPED / args.task
    if (shipped / "card.json").is_file():
        s_mapper, s_card, s_operator = load_export(shipped)
        if s_operator.params() == operator.params():
            methods[f"DAVI, shipped ({s_card['steps']} steps)"] = DaviMethod(s_mapper, s_operator)
        else:
            print(f"note: {shipped} was trained for another operator setting; skipped")
    rows, restored = [], {}
    for name, method in methods.items():
        restored[name], spi = run_method(method, y, batch_size=50, desc=name)
        rows.append({"method": name, **score_restorations(restored[name], x0, explain_absent=False), "ms": spi * 1000,
                     "nfe": method.nfe_per_sample})

    print("[3/3] writing the grid and the table")
    cols = [("method", "method", "{}"), ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
            ("classifier_fd", "classifier FD (lower = more realistic)", "{:.2f}"), ("kid", "KID", "{:.3f}"),
            ("nfe", "network evals / image", "{}"), ("ms", "ms / image (CPU)", "{:.2f}")]
    table = markdown_table(rows, cols)
    header = (f"# DAVI demo: {args.task} on {args.images} held-out 32x32 digits (sigma_y = {operator.sigma_y})\n\n"
              "classifier FD: Frechet distance in the project's digit-classifier feature space (not FID); KID: the "
              "kernel distance in the same features (unbiased; lower = more realistic).\n\n")
    write_text(out / f"metrics_{args.task}.md", header + table + "\n")
    summary = json.loads((run_dir / "train_summary.json").read_text())
    results = {"command": args.command, "task": args.task, "images": args.images,
               "steps": summary["steps"], "steps_this_process": summary["steps"] - summary["start_step"],
               "train_seconds": t_train, "seconds": time.time() - t0, "rows": rows}
    write_text(out / f"results_{args.task}.json", json.dumps(results, indent=2) + "\n")
    n = 12
    rows_img = [display_measurement(y[:n], x0[:n]), *[restored[k][:n] for k in methods], x0[:n]]
    save_grid_png(make_grid(torch.cat(rows_img), nrow=n), out / f"grid_{args.task}.png", upscale=3)
    print(table)
    print(f"grid rows: measurement, {', '.join(methods)}, ground truth -> {out / f'grid_{args.task}.png'}")


if __name__ == "__main__":
    sys.exit(main())
