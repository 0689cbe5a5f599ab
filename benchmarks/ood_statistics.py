"""Which per-image statistic can say that a one-step answer is wrong? Candidates side by side.

The shipped SR x4, deblur and box mappers restore held-out test digits 0..N-1 under the shifts
of davi/eval/shifts.py (as benchmarks/ood.py does, same measurements and seeds). Each candidate's
threshold is a quantile of its values on test digits 500-999, unshifted (the card's calibration
images). Candidates, with their network evaluations per image:

* ``residual`` (1): r = ||A x_hat - y||^2 / (M sigma_y^2) of one DAVI sample, the shipped flag;
* ``mean residual`` (1): |sum(A x_hat - y)| / (sigma_y sqrt(M)), the same residual's projection on the
  constant image, a test with 1 degree of freedom instead of M: an answer that adds or removes ink
  everywhere (thick strokes drawn for thin ones) shifts it, while the noise spreads over all M;
* ``pooled residual`` (1): r of the residual averaged over 2x2 blocks (M / 4 degrees of freedom):
  a smooth misfit keeps its size, the noise shrinks;
* ``spread`` (2): mean squared difference of two DAVI samples of y (the mapper's own doubt);
* ``ppca16`` (0): the measurement's atypicality, the negative log-likelihood (up to constants) of
  y under a probabilistic PCA of ``--train`` train measurements, 16 components;
* ``knn5`` (0): the distance from y to its 5th nearest train measurement;
* ``ppca16 two-sided`` (0): ppca16 flagged in either tail, a typicality test (Nalisnick et al.
  2019): a measurement can be atypical by being *too* likely, as faint thin strokes are.

The density candidates ask whether the *input* is unlike the training data; the residual and the
spread whether the *answer* is. Per task:

* false alarms on the unshifted test digits 0..N-1, and on test digits 0-499;
* detection of the images where DAVI is below lift(y) (benchmarks/ood.py's goal), and of those
  where it is below by more than in distribution (lift(y) - DAVI above its 98th percentile on the
  calibration digits: for box inpainting a posterior sample is often below the empty box on
  unshifted digits too);
* per shift, the AUROC of each statistic against the unshifted calibration digits (0.5: the shift
  cannot be told apart at any threshold).

A statistic alone is flagged above its 0.99 quantile (two-sided: outside 0.005-0.995); an OR of k
statistics splits the 1% among them.

    OMP_NUM_THREADS=1 python benchmarks/ood_statistics.py --images 100
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import RESULTS, batched, command_line, publish, shift_protocol_arguments

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.cli.common import run_cli
from davi.eval.detection import MeasurementDensity, auroc, low_dimensional_residuals, quantile_flagger
from davi.eval.evaluate import markdown_table
from davi.eval.tasks import load_shipped, uncalibrated_test_digits

CANDIDATES = ("residual", "mean residual", "pooled residual", "spread", "ppca16", "knn5")
TWO_SIDED = " two-sided"
COMBINATIONS = (("residual",), ("mean residual",), ("pooled residual",), ("spread",), ("ppca16",),
                ("ppca16" + TWO_SIDED,), ("knn5",), ("residual", "mean residual"), ("residual", "pooled residual"),
                ("residual", "spread"), ("residual", "ppca16"), ("residual", "ppca16" + TWO_SIDED),
                ("residual", "knn5"))
NFE = {"residual": 1, "mean residual": 1, "pooled residual": 1, "spread": 2}  # DAVI samples per image
PPCA_COMPONENTS = 16


def statistics(task_objects, density, x: torch.Tensor, seed: int, batch: int) -> dict[str, torch.Tensor]:
    """Every candidate on the measurements of ``x`` (noise ``seed``), plus lift(y) - DAVI in dB."""
    from davi.solvers.consistency import residual_statistic
    from davi.solvers.methods import DaviMethod
    from davi.eval.metrics import psnr

    mapper, op = task_objects.mapper, task_objects.operator
    y = op.measure(x, generator=torch.Generator().manual_seed(seed))
    method = DaviMethod(mapper, op)
    seeds = [seed * 100003 + i for i in range(x.shape[0])]  # benchmarks/ood.py's seeds
    first = batched(lambda yb, sb: method(yb, sb, 1)[0], y, seeds, batch)
    second = batched(lambda yb, sb: method(yb, sb, 1)[0], y, [s + 55555 for s in seeds], batch)
    return {"residual": residual_statistic(op, first, y), **low_dimensional_residuals(op, first, y),
            "spread": (first - second).pow(2).flatten(1).mean(1).double(),
            "ppca16": density.ppca(y), "knn5": density.knn(y),
            "gap_db": (psnr(op.lift(y), x) - psnr(first, x)).double()}


def flagger(candidate: str, calibration: dict[str, torch.Tensor], alpha: float):
    """A function {name: values} -> flags for ``candidate`` (a statistic's name, " two-sided" appended for a
    typicality test) with false-alarm rate ``alpha`` on the calibration images (davi.eval.detection)."""
    name = candidate.removesuffix(TWO_SIDED)
    flags = quantile_flagger(calibration[name], alpha, two_sided=candidate.endswith(TWO_SIDED))
    return lambda cell: flags(cell[name])


def evaluate_task(task: str, args) -> dict:
    from davi.eval.shifts import apply_shift, shift_names
    from davi.eval.tasks import digits
    from davi.solvers.consistency import calibration_images

    objects = load_shipped(task)
    op, card = objects.operator, objects.card
    train = digits("train", args.train)
    density = MeasurementDensity(op.measure(train, generator=torch.Generator().manual_seed(args.seed + 1)),
                                 k=PPCA_COMPONENTS)
    calibration, source = calibration_images(card)
    cal = statistics(objects, density, calibration, args.seed + 2, args.batch_size)
    x0 = uncalibrated_test_digits(args.images)
    cells = {shift: statistics(objects, density, apply_shift(x0, shift), args.seed, args.batch_size)
             for shift in ["none", *shift_names()]}
    # false alarms on 5x the images
    unshifted = statistics(objects, density, uncalibrated_test_digits(500), args.seed, args.batch_size)
    margin = float(cal["gap_db"].quantile(0.98))

    rows = []
    for combo in COMBINATIONS:
        flaggers = [flagger(c, cal, 0.01 / len(combo)) for c in combo]
        flag = {s: torch.stack([f(v) for f in flaggers]).any(0) for s, v in cells.items()}
        shifted = [s for s in cells if s != "none"]
        below = {s: cells[s]["gap_db"] > 0 for s in shifted}
        beyond = {s: cells[s]["gap_db"] > margin for s in shifted}
        rows.append({
            "task": task, "statistic": " or ".join(combo),
            "nfe": max(NFE.get(c, 0) for c in combo),
            "false_alarm_rate": float(flag["none"].double().mean()),
            "false_alarm_rate_500": float(torch.stack([f(unshifted) for f in flaggers]).any(0).double().mean()),
            "below_lift": sum(int(below[s].sum()) for s in shifted),
            "below_lift_flagged": sum(int((below[s] & flag[s]).sum()) for s in shifted),
            "beyond_in_distribution": sum(int(beyond[s].sum()) for s in shifted),
            "beyond_in_distribution_flagged": sum(int((beyond[s] & flag[s]).sum()) for s in shifted),
        })
    aurocs = {shift: {c: auroc(v[c], cal[c]) for c in CANDIDATES} for shift, v in cells.items()}
    return {"rows": rows, "auroc": aurocs, "calibration": source, "in_distribution_gap_q98_db": margin,
            "calibration_below_lift": float((cal["gap_db"] > 0).double().mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shift_protocol_arguments(p)  # the same digits, noise and seeds as benchmarks/ood.py
    p.add_argument("--train", type=int, default=4000, help="train measurements the density candidates fit (all 4,000 bundled)")
    p.add_argument("--out", default=str(RESULTS / "ood_statistics.json"))
    args = p.parse_args()
    torch.set_grad_enabled(False)

    tasks = {task: evaluate_task(task, args) for task in args.tasks}
    head = (f"Shipped mappers; held-out test digits 0-{args.images - 1} per shift (measurement noise seed {args.seed}, "
            f"benchmarks/ood.py's seeds); thresholds: quantiles of each statistic on unshifted test digits 500-999 "
            f"(0.99 alone, 1 - 0.01/k for an OR of k); density candidates fitted on {args.train} train measurements. "
            f"'beyond in distribution': lift(y) - DAVI above its 98th percentile on the calibration digits "
            + ", ".join(f"({t}: {v['in_distribution_gap_q98_db']:+.2f} dB; {v['calibration_below_lift']:.0%} "
                        f"of them below lift(y))" for t, v in tasks.items()) + ".")
    publish(args.out, {"command": command_line("ood_statistics.py"), "head": head, "tasks": tasks},
            render_ood_statistics)


# ----------------------------------------------------------------------------------------------
# the tables: ood_statistics.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
def render_ood_statistics(data: dict) -> str:
    """benchmarks/ood_statistics.py's results .md: detection per candidate statistic, then AUROC per shift."""
    rows = []
    for r in (r for t in data["tasks"].values() for r in t["rows"]):
        share = lambda k: f"{r[k + '_flagged'] / r[k]:.0%} ({r[k + '_flagged']} / {r[k]})" if r[k] else "-"  # noqa: E731
        rows.append({**r, "below": share("below_lift"), "beyond": share("beyond_in_distribution")})
    detection = markdown_table(rows, [
        ("task", "task", "{}"), ("statistic", "statistic", "{}"), ("nfe", "NFE", "{}"),
        ("false_alarm_rate", "false alarms (the unshifted digits)", "{:.0%}"),
        ("false_alarm_rate_500", "false alarms (unshifted digits 0-499)", "{:.1%}"), ("below", "DAVI < lift(y): flagged", "{}"),
        ("beyond", "DAVI < lift(y) beyond in distribution: flagged", "{}")])
    candidates = list(next(iter(next(iter(data["tasks"].values()))["auroc"].values())))
    auc_rows = [{"cell": f"{task}/{shift}", **{c: v[c] for c in candidates}}
                for task, t in data["tasks"].items() for shift, v in t["auroc"].items()]
    auc = markdown_table(auc_rows, [("cell", "task / shift", "{}"), *((c, f"AUROC {c}", "{:.2f}") for c in candidates)])
    return detection + "\n\nAUROC of each statistic, shifted digits against unshifted calibration digits " \
                       "(0.5: indistinguishable; below 0.5: the shift makes it *more* typical):\n\n" + auc


if __name__ == "__main__":
    sys.exit(run_cli(main))
