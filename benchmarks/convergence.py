"""Has a DAVI run converged? Held-out PSNR and realism of every checkpoint's EMA mapper.

For each ``checkpoint-N`` of a run (its ``ema/`` mapper and its config), restore the same
``--images`` held-out test digits (measurement noise seed 0, one sample per image, seed 0) and
score PSNR, SSIM, the classifier Fréchet distance and the kernel distance (KID) against them.
A run has converged when these curves are flat. Each checkpoint's scores are cached beside it
(``checkpoint-N/heldout_<images>.json``), so re-running after more training scores only the new
checkpoints. Writes ``benchmarks/results/convergence_<task>.json`` (+ ``.md``) and the curves
``docs/convergence_<task>.png``.

    python benchmarks/convergence.py --task sr4 --run runs/long/sr4 --images 200
    python benchmarks/convergence.py --task sr4 --run runs/long/sr4 --run runs/long/sr4_decay   # + a continuation

With several ``--run``s (e.g. continuations resumed from one run's checkpoint with other settings)
each is a line of the plot and its rows carry its folder name. A run warm-started from an export
(``davi.init_mapper``) counts its steps from 0: ``--step-offset`` adds the export's steps. With
``--keep-earlier`` the rows of runs already in the results file and not named by ``--run`` stay
(``runs/`` is not committed, so an earlier session's folders may be gone):

    python benchmarks/convergence.py --task box --run runs/long/box_cont --step-offset 1000 --keep-earlier
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from common import table
from davi.cli.common import run_cli
from davi.eval.checkpoint_scores import score_checkpoint
from davi.eval.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]


def combine(earlier: list[dict], fresh: list[dict], step_offset: int = 0) -> tuple[list[dict], list[str]]:
    """(rows, names of the runs kept): ``earlier`` rows of runs not in ``fresh``, then ``fresh`` with
    ``step_offset`` added to their steps."""
    names = {r["run"] for r in fresh}
    kept = [r for r in earlier if r["run"] not in names]
    return kept + [{**r, "step": r["step"] + step_offset} for r in fresh], list(dict.fromkeys(r["run"] for r in kept))


def plot(rows: list[dict], task: str, path: Path) -> None:
    """PSNR and the two realism figures against the training step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from davi.io.atomic import write_file

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    for ax, (key, label) in zip(axes, (("psnr", "PSNR (dB), higher is better"),
                                       ("classifier_fd", "classifier FD, lower is better"),
                                       ("kid", "KID (+- std over subsets), lower is better"))):
        for run in runs:
            mine = [r for r in rows if r["run"] == run]
            steps = [r["step"] for r in mine]
            ax.plot(steps, [r[key] for r in mine], marker="o", label=run)
            if key == "kid":
                ax.fill_between(steps, [r["kid"] - r["kid_std"] for r in mine],
                                [r["kid"] + r["kid_std"] for r in mine], alpha=0.2)
        ax.set_title(f"{task}: {label}", fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    write_file(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help="name used in the output files, e.g. sr4")
    p.add_argument("--run", action="append", required=True,
                   help="a DAVI training run folder holding checkpoint-N folders (repeatable)")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--step-offset", type=int, default=0, help="added to the steps of the --run folders")
    p.add_argument("--keep-earlier", action="store_true",
                   help="keep the rows of other runs from the existing results file")
    args = p.parse_args()

    from davi.training.checkpoints import list_checkpoints
    from common import command_line, publish

    results = ROOT / "benchmarks" / "results" / f"convergence_{args.task}.json"
    earlier = json.loads(results.read_text())["rows"] if args.keep_earlier and results.is_file() else []
    fresh = []
    for run in args.run:
        checkpoints = list_checkpoints(Path(run))
        if not checkpoints:
            raise SystemExit(f"error: {run}: no checkpoint-N folders")
        fresh += [{"run": Path(run).name, **score_checkpoint(folder, args.images)} for _, folder in checkpoints]
    rows, kept = combine(earlier, fresh, args.step_offset)
    plot(rows, args.task, ROOT / "docs" / f"convergence_{args.task}.png")
    head = (f"Held-out scores of every checkpoint's EMA mapper of {', '.join(f'`{r}`' for r in args.run)} ({args.task}), "
            f"{args.images} test digits, one sample per image (seed 0)"
            + (f"; steps counted from {args.step_offset}, the export it was warm-started from" if args.step_offset else "")
            + (f". Rows of {', '.join(f'`{r}`' for r in kept)} kept from the previous results file, measured the same way "
               f"(their folders are not in this checkout)." if kept else "."))
    publish(results, {"command": command_line("convergence.py"), "head": head, "rows": rows}, render_convergence)


# ----------------------------------------------------------------------------------------------
# the tables: convergence_<task>.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
CONVERGENCE_COLUMNS = [("run", "run", "{}"), ("step", "step", "{}"), ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                       ("classifier_fd", "classifier FD", "{:.2f}"), ("kid", "KID", "{:.3f}"),
                       ("kid_std", "KID std", "{:.3f}")]


def render_convergence(data: dict) -> str:
    """benchmarks/convergence.py: held-out scores of every checkpoint of one or more runs."""
    return markdown_table(data["rows"], CONVERGENCE_COLUMNS)


def render_convergence_summary(data: dict) -> str:
    """First and last checkpoint of the first run, then the last of each continuation, for a sentence."""
    rows = data["rows"]
    runs = list(dict.fromkeys(r.get("run", "") for r in rows))
    first = [r for r in rows if r.get("run", "") == runs[0]]
    fig = "{psnr:.2f} dB, classifier FD {classifier_fd:.2f}, KID {kid:.3f}"
    out = f"{fig.format(**first[0])} at step {first[0]['step']}"
    if len(first) > 1:
        out = f"from {out} to {fig.format(**first[-1])} at step {first[-1]['step']}"
    for run in runs[1:]:
        last = [r for r in rows if r.get("run", "") == run][-1]
        out += f"; continued as `{run}`: {fig.format(**last)} at step {last['step']}"
    return out


# one convergence study per paired task
for _task in ("sr4", "deblur", "box"):
    table(f"convergence_{_task}", f"convergence_{_task}.json")(render_convergence)
    table(f"convergence_{_task}_summary", f"convergence_{_task}.json", inline=True)(render_convergence_summary)


if __name__ == "__main__":
    sys.exit(run_cli(main))
