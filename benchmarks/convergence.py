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
from davi.cli.common import run_cli

ROOT = Path(__file__).resolve().parents[1]


def score_checkpoint(checkpoint: Path, images: int) -> dict:
    """Scores of one checkpoint's EMA mapper on the first ``images`` test digits (cached beside it)."""
    from davi.io.atomic import write_json
    from davi.config import load_config
    from davi.eval.evaluate import held_out_scores
    from davi.solvers.methods import DaviMethod
    from davi.models.mapper import Mapper
    from davi.operators import build_operator

    cache = checkpoint / f"heldout_{images}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    cfg = load_config(checkpoint / "config.yaml")
    operator = build_operator(cfg.operator, cfg.data.resolution, cfg.data.channels)
    mapper = Mapper.from_pretrained(str(checkpoint / "ema"), use_safetensors=True).eval()
    step = int(json.loads((checkpoint / "trainer_state.json").read_text())["step"])
    row = {"step": step, **held_out_scores(DaviMethod(mapper, operator), operator, cfg.data, images)}
    write_json(cache, row)
    return row


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
    from readme_tables import command_line, publish, render_convergence

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


if __name__ == "__main__":
    sys.exit(run_cli(main))
