"""DAVI against RED-Diff and lift(y), side by side on the same images, measurements and seeds.

For deblur, SR x4 and box inpainting on the embedded default: the shipped DAVI mapper (one
network evaluation), RED-Diff at 1000 and 100 steps with the shipped prior, and lift(y).
RED-Diff's lr and lambda are first tuned per task on TRAIN images (grid search at 100 steps,
best PSNR), so the baseline is not handicapped. Reports PSNR, SSIM, the classifier Fréchet
distance (realism; not FID), network evaluations and seconds per image, and each method's
time as a ratio to DAVI's, all measured in one run. Prints the table and writes
benchmarks/results/compare.json (rows, and the tuning grid with its choice per task; the README's
table is rendered from compare_{deblur,sr4,box}.json by benchmarks/readme_tables.py) and the .md
beside it.

    python benchmarks/compare.py --images 200
    python benchmarks/compare.py --images 50 --tasks sr4 --no-tune     # quick look
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]

TASKS = {"deblur": "deblur_mnist.yaml", "sr4": "sr4_mnist.yaml", "box": "box_mnist.yaml"}
LRS = (0.05, 0.1, 0.25)
LAMS = (0.05, 0.25, 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--tune-images", type=int, default=32)
    p.add_argument("--no-tune", action="store_true", help="use the config's red_diff lr/lambda")
    p.add_argument("--steps", nargs="*", type=int, default=[1000, 100], help="RED-Diff step counts")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compare.json"),
                   help="results JSON (the .md is written beside it)")
    args = p.parse_args()

    import torch

    from davi.config import RedDiffConfig, load_config
    from davi.data import load_split
    from davi.evaluation import run_method
    from readme_tables import command_line, publish, render_compare
    from davi.export import load_export
    from davi.inference import DaviMethod, LiftMethod, RedDiffMethod
    from davi.metrics import psnr, score_restorations
    from davi.prior import load_prior

    rows, tuning = [], {}
    for task in args.tasks:
        cfg = load_config(ROOT / "configs" / TASKS[task])
        prior = load_prior(cfg.prior)
        mapper, card, operator = load_export(ROOT / "davi" / "assets" / "mappers" / task)
        if prior.digest and card["prior"]["digest"] and prior.digest != card["prior"]["digest"]:
            print(f"warning: the {task} mapper was trained against another prior ({card['prior']['digest']})")

        rd = cfg.red_diff
        if not args.no_tune:
            xt = load_split(cfg.data, "train").tensor(limit=args.tune_images)
            yt = operator.measure(xt, generator=torch.Generator().manual_seed(1))
            scores = {}
            for lr, lam in itertools.product(LRS, LAMS):
                trial = RedDiffConfig(**{**rd.__dict__, "num_steps": 100, "lr": lr, "lam": lam})
                out, _ = run_method(RedDiffMethod(prior, operator, trial), yt, args.batch_size,
                                    desc=f"tune {task} lr={lr} lam={lam}")
                scores[(lr, lam)] = float(psnr(out, xt).mean())
            (lr, lam), best = max(scores.items(), key=lambda kv: kv[1])
            rd = RedDiffConfig(**{**rd.__dict__, "lr": lr, "lam": lam})
            tuning[task] = {"lr": lr, "lam": lam, "train_psnr": best,
                            "grid": {f"lr={k[0]},lam={k[1]}": v for k, v in scores.items()}}
            print(f"{task}: RED-Diff tuned on {args.tune_images} train images: lr={lr}, lam={lam} ({best:.2f} dB)")

        x0 = load_split(cfg.data, "test").tensor(limit=args.images)
        y = operator.measure(x0, generator=torch.Generator().manual_seed(0))
        methods = [("lift(y)", LiftMethod(operator)), ("DAVI (shipped mapper)", DaviMethod(mapper, operator))]
        for n in args.steps:
            methods.append((f"RED-Diff-{n} (lr={rd.lr}, lam={rd.lam})",
                            RedDiffMethod(prior, operator, RedDiffConfig(**{**rd.__dict__, "num_steps": n}))))
        task_rows = []
        for name, method in methods:
            restored, spi = run_method(method, y, args.batch_size, desc=f"{task}: {name}")
            task_rows.append({"task": task, "method": name, **score_restorations(restored, x0, explain_absent=False),
                              "nfe": method.nfe_per_sample, "s_per_image": spi})
            print(task_rows[-1])
        davi_time = next(r["s_per_image"] for r in task_rows if r["method"].startswith("DAVI"))
        for r in task_rows:
            r["time_vs_davi"] = r["s_per_image"] / davi_time
        rows += task_rows

    head = (f"Embedded default (32x32 digits, sigma_y = 0.05), {args.images} held-out test images, one sample "
            f"per image, the same measurements and seeds for every method, batch {args.batch_size}, "
            f"{torch.get_num_threads()} CPU threads, one run. classifier FD = Frechet distance in the digit "
            f"classifier's feature space (not FID; lower is more realistic).")
    # the tuning travels in the same file as the table it produced: a run can't leave a stale one beside it
    publish(Path(args.out).with_suffix(".json"),
            {"command": command_line("compare.py"), "head": head, "tuning": tuning or None, "rows": rows},
            render_compare)


if __name__ == "__main__":
    sys.exit(run_cli(main))
