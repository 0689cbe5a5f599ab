"""Are the samplers' uncertainties calibrated? Coverage of central per-pixel credible intervals.

For each measurement, K samples give every pixel a central 50/80/90/95% interval (empirical
quantiles); coverage is how often the truth falls inside. Perfect calibration is the diagonal
(coverage = nominal level); a point estimate covers almost nothing.

* ``gauss`` / ``gmm`` (8x8 analytic priors, benchmarks/posterior.py): the truth is an exact posterior
  draw (32 per y), so the diagonal is exactly what a correct sampler gives; K = 256 samples per y.
  Read from ``benchmarks/results/posterior.json`` (run that first).
* ``digits`` (the embedded default, 32x32 held-out test digits, sigma_y = 0.05): the truth is the test
  image. Methods: ``sampler`` (davi/assets/mappers/<task>_sampler), ``paired`` (davi/assets/mappers/<task>),
  ``red_diff`` (K seeds of RED-Diff-100 at compare.py's tuned lr / lambda; ~1 s per image and seed here,
  hence few images). Over all pixels (``digits/<task>/<method>``) and, for box inpainting, over the
  hidden box only (``digits/box_hidden/<method>``), where the measurement says nothing.

Results: ``benchmarks/results/calibration.json`` ({"<setting>/<task>/<method>": {"cov50", "cov80",
"cov90", "cov95"}}), the plot ``docs/calibration.png`` (nominal vs observed, one line per method) and
the README figure ``docs/box_sampler_grid.png`` (box inpainting: measurement, 8 samples, mean, std, truth).
Each (task, method) on digits is cached in ``--work-dir`` so an interrupted run resumes; the cache is keyed
by the weights (or RED-Diff's lr / lambda), so re-shipped mappers are measured again.

    python benchmarks/calibration.py                         # 16 images, K = 32
    python benchmarks/calibration.py --red-diff-images 8 --red-diff-tasks box   # what ran here (CPU)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import RESULTS, ROOT, command_line, publish

from davi.analytic import COVERAGE_LEVELS
from davi.eval.coverage import digit_coverage as coverage_of
from davi.eval.coverage import mapper_draws as draws_of_mapper
from davi.eval.coverage import red_diff_draws as draws_of_red_diff
from davi.eval.evaluate import markdown_table
from davi.eval.tasks import MAPPERS, DigitTask


DIGIT_TASKS = ("box", "sr4", "deblur")
METHODS = ("sampler", "paired", "red_diff")


def analytic_rows(posterior_json: Path) -> dict:
    """gauss/gmm coverage of the sampler and paired rows of benchmarks/posterior.py."""
    data = json.loads(posterior_json.read_text())
    out = {}
    for key, entry in data.items():
        if not isinstance(entry, dict) or "coverage" not in entry or "/" not in key:
            continue
        name, _, variant = key.partition(":")
        method = {"": "sampler", "paired": "paired", "exact": "exact", "red-diff-1000": "red_diff"}.get(variant)
        if method is None:
            continue
        prior, task = name.split("/")
        out[f"{prior}/{task}/{method}"] = {f"cov{k}": round(v, 4) for k, v in entry["coverage"].items()}
    return out


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------
def test_problem(task: str, images: int):
    """(x0 (N, 1, 32, 32), y, operator) for the first ``images`` test digits, measured with a fixed seed."""
    digits = DigitTask.load(task, images, variant="sampler")
    x0 = digits.test_blocks(1)[0]
    return x0, digits.measure(x0, seed=2024), digits.operator


def mapper_draws(export: Path, y: torch.Tensor, op, k: int) -> torch.Tensor:
    """(K, N, 1, H, W) one-step samples of the mapper in ``export`` (davi.eval.coverage.mapper_draws)."""
    from davi.io.export import load_export

    return draws_of_mapper(load_export(export)[0], op, y, k)


def red_diff_draws(task: str, y: torch.Tensor, op, k: int, steps: int) -> torch.Tensor:
    """(K, N, ...) RED-Diff estimates from K seeds per image, at compare.py's tuned lr / lambda."""
    tuning = json.loads((RESULTS / "compare.json").read_text())["tuning"][task]
    prior = DigitTask.load(task, 0, variant="sampler").prior
    return draws_of_red_diff(prior, op, y, k, steps, tuning["lr"], tuning["lam"])


def mapper_export(task: str, method: str) -> Path:
    return MAPPERS / (f"{task}_sampler" if method == "sampler" else task)


def cache_key(task: str, method: str, n: int, args) -> dict:
    """What a cached coverage depends on: re-shipped weights or a re-tuned RED-Diff recompute it."""
    import hashlib

    key = {"task": task, "method": method, "images": n, "samples": args.samples}
    if method == "red_diff":
        tuning = json.loads((RESULTS / "compare.json").read_text())["tuning"][task]
        return {**key, "steps": args.red_diff_steps, "lr": tuning["lr"], "lam": tuning["lam"]}
    weights = hashlib.sha256()
    for f in sorted(mapper_export(task, method).glob("*.safetensors")):
        weights.update(f.read_bytes())
    return {**key, "weights": weights.hexdigest()[:16]}


def digit_coverage(task: str, method: str, args, work: Path) -> dict:
    """Coverage of ``method``'s draws on ``task`` (davi.eval.coverage), cached in ``work`` by ``cache_key``."""
    from davi.io.atomic import write_text

    n = args.red_diff_images if method == "red_diff" else args.images
    cache, key = work / f"{task}_{method}.json", cache_key(task, method, n, args)
    if cache.is_file() and (cached := json.loads(cache.read_text())).get("key") == key:
        return cached
    x0, y, op = test_problem(task, n)
    if method == "red_diff":
        draws = red_diff_draws(task, y, op, args.samples, args.red_diff_steps)
    else:
        draws = mapper_draws(mapper_export(task, method), y, op, args.samples)
    hidden = op.lift(torch.ones_like(y[:1]))[0] == 0 if task == "box" else None  # pixels the measurement misses
    cov = coverage_of(draws, x0, hidden)
    out = {"all": cov["all"], "images": n, "key": key, **({"hidden": cov["hidden"]} if "hidden" in cov else {})}
    write_text(cache, json.dumps(out))
    return out


@torch.no_grad()
def box_grid(path: Path, images: int = 8, samples: int = 8) -> None:
    """README figure: per test digit (one row each) the measurement, ``samples`` sampler samples, their mean, their
    per-pixel std (scaled to the figure's max) and the truth, for box inpainting."""
    from davi.io.images import display_measurement, make_grid, save_grid_png

    x0, y, op = test_problem("box", images)
    draws = mapper_draws(MAPPERS / "box_sampler", y, op, samples)  # (K, N, 1, H, W)
    std = draws.std(0)
    rows = []
    for i in range(images):
        rows += [display_measurement(y[i:i + 1], x0[i:i + 1])[0], *draws[:, i], draws[:, i].mean(0),
                 std[i] / std.amax().clamp_min(1e-8) * 2 - 1, x0[i]]
    save_grid_png(make_grid(torch.stack(rows), nrow=samples + 4), path, upscale=3)


# ----------------------------------------------------------------------------------------------
# plot and table
# ----------------------------------------------------------------------------------------------
def plot(results: dict, path: Path) -> None:
    """Nominal vs observed coverage: one panel per setting (analytic ones averaged over tasks), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("gauss", "Gaussian prior (8x8, exact truth)"), ("gmm", "mixture prior (8x8, exact truth)"),
              ("digits", "digits 32x32, all pixels"), ("digits_hidden", "digits, box inpainting: hidden box")]
    levels = [round(100 * v) for v in COVERAGE_LEVELS]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), sharey=True)
    for ax, (setting, title) in zip(axes, panels):
        ax.plot([0, 100], [0, 100], color="0.6", ls="--", lw=1, label="calibrated")
        for method, color in (("sampler", "tab:blue"), ("paired", "tab:orange"), ("red_diff", "tab:green"),
                              ("exact", "0.3")):
            if setting == "digits_hidden":
                keys = [f"digits/box_hidden/{method}"]
            else:
                keys = [k for k in results if k.startswith(f"{setting}/") and k.endswith(f"/{method}")
                        and "/box_hidden/" not in k]
            keys = [k for k in keys if k in results]
            if not keys:
                continue
            obs = [100 * sum(results[k][f"cov{lv}"] for k in keys) / len(keys) for lv in levels]
            ax.plot(levels, obs, marker="o", color=color, label=method.replace("_", "-"))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("nominal coverage (%)")
        ax.set_xlim(0, 100), ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("observed coverage (%)")
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    axes[0].legend(handles.values(), handles.keys(), loc="upper left", fontsize=8)
    fig.tight_layout()
    from davi.io.atomic import write_file

    write_file(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


COLUMNS = [("key", "setting / task / method", "{}"), ("cov50", "50%", "{:.3f}"), ("cov80", "80%", "{:.3f}"),
           ("cov90", "90%", "{:.3f}"), ("cov95", "95%", "{:.3f}")]


def render_calibration(data: dict) -> str:
    rows = [{"key": k, **v} for k, v in data.items() if isinstance(v, dict) and "cov90" in v]
    return markdown_table(rows, COLUMNS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="*", default=list(DIGIT_TASKS), choices=DIGIT_TASKS)
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--images", type=int, default=16, help="held-out digits per task (mappers)")
    p.add_argument("--red-diff-images", type=int, default=16, help="held-out digits per task (RED-Diff)")
    p.add_argument("--samples", type=int, default=32, help="K: samples (seeds for RED-Diff) per image")
    p.add_argument("--red-diff-steps", type=int, default=100)
    p.add_argument("--red-diff-tasks", nargs="*", default=list(DIGIT_TASKS), choices=DIGIT_TASKS,
                   help="digit tasks that get RED-Diff rows (the slow part)")
    p.add_argument("--posterior-json", default=str(RESULTS / "posterior.json"))
    p.add_argument("--work-dir", default="runs/calibration")
    p.add_argument("--out", default=str(RESULTS / "calibration.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "calibration.png"))
    p.add_argument("--grid", default=str(ROOT / "docs" / "box_sampler_grid.png"),
                   help="box inpainting figure of the shipped box sampler ('' = none)")
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    results = analytic_rows(Path(args.posterior_json)) if Path(args.posterior_json).is_file() else {}
    for task in args.tasks:
        for method in args.methods:
            if method == "red_diff" and task not in args.red_diff_tasks:
                continue
            c = digit_coverage(task, method, args, work)
            results[f"digits/{task}/{method}"] = c["all"]
            if "hidden" in c:
                results[f"digits/box_hidden/{method}"] = c["hidden"]
            print(f"digits/{task}/{method} ({c['images']} images): {c['all']}", flush=True)
    head = (f"Central per-pixel credible intervals from K = {args.samples} samples per measurement (RED-Diff: "
            f"K seeds of RED-Diff-{args.red_diff_steps}). gauss / gmm: 8x8 analytic priors of benchmarks/posterior.py, "
            f"truth = exact posterior draws, K = 256. digits: {args.images} held-out test digits per task "
            f"(RED-Diff: {args.red_diff_images} on {', '.join(args.red_diff_tasks)} only, ~1 s per image and seed here), "
            "truth = the test image; "
            "box_hidden = the box inpainting task's hidden box only. Perfect calibration: coverage = the level.")
    data = {"command": command_line("calibration.py"), "head": head, **results}
    publish(Path(args.out), data, render_calibration)
    plot(results, Path(args.plot))
    print(f"wrote {args.plot}")
    if args.grid and (MAPPERS / "box_sampler").is_dir():
        box_grid(Path(args.grid))
        print(f"wrote {args.grid}")


if __name__ == "__main__":
    main()
