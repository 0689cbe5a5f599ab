"""Out of distribution: when the one-step answer is wrong, does the consistency flag say so, and does
refinement fix it?

Held-out test digits 0-499 of the bundled data (the shipped mappers' thresholds were calibrated on
test digits 500-999, so none of these images set the threshold) under the controlled shifts of
davi/eval/shifts.py (each at two strengths), measured by the shipped SR x4, deblur and box mappers'
operators. Per task and shift: PSNR/SSIM of lift(y), DAVI (one sample), DAVI + refine auto
(refined only where flagged), DAVI + refine forced (every image), RED-Diff-100 (on a fixed subset:
it costs ~1 s/image on this CPU); the flag rate (consistency statistic above the card's
threshold) and the share of images where DAVI is below lift(y) that are flagged. ``<task>/none``
(unshifted digits) gives the in-distribution false-alarm rate.

Refine auto equals refine forced on the flagged images and DAVI elsewhere: RED-Diff's images are
independent of their batch (tests/test_red_diff.py), so it is computed that way, not twice.
Results are cached per (task, shift) in --cache-dir as they come, so a killed run resumes.

    OMP_NUM_THREADS=1 python benchmarks/ood.py --images 100 --red-diff-images 32 --figure docs/ood.png
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from common import RESULTS, batched, command_line, publish, shift_protocol_arguments, table

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.eval.evaluate import markdown_table
from davi.eval.tasks import load_shipped, uncalibrated_test_digits

# RED-Diff lr / lambda per task, as tuned by an earlier benchmarks/compare.py run on 16 train images (grid
# lr x lambda at 100 steps, best PSNR), kept so that ood.json's rows stay reproducible; today's wider grid
# and its choices are in benchmarks/results/compare.json ("tuning").
RED_DIFF_TUNED = {"deblur": (0.1, 0.05), "sr4": (0.05, 0.05), "box": (0.05, 0.05)}


def restore_cell(task, shift, loaded, x0, args) -> tuple[dict, dict]:
    """(the row of one task/shift, its tensors) -- every method on the same measurements and seeds."""
    from davi.solvers.consistency import residual_statistic
    from davi.solvers.methods import REFINE_STEPS, DaviMethod, RedDiffMethod, Refiner
    from davi.eval.metrics import psnr, ssim
    from davi.eval.shifts import apply_shift

    mapper, op, prior, threshold = loaded.mapper, loaded.operator, loaded.prior, loaded.threshold
    x = apply_shift(x0, shift)
    y = op.measure(x, generator=torch.Generator().manual_seed(args.seed))
    seeds = [args.seed * 100003 + i for i in range(x.shape[0])]
    lift = op.lift(y)
    davi_method, refiner = DaviMethod(mapper, op), Refiner(prior, op)
    davi_x = batched(lambda yb, sb: davi_method(yb, sb, 1)[0], y, seeds, args.batch_size)
    stat = residual_statistic(op, davi_x, y)
    flag = stat > threshold
    forced = batched(lambda yb, sb: refiner(davi_method(yb, sb, 1), yb, sb)[0], y, seeds, args.batch_size)
    auto = torch.where(flag[:, None, None, None], forced, davi_x)
    n = args.red_diff_images
    lr, lam = RED_DIFF_TUNED[task]
    rd_method = RedDiffMethod(prior, op, steps=100, lr=lr, lam=lam)
    red_diff = batched(lambda yb, sb: rd_method(yb, sb, 1)[0], y[:n], seeds[:n], args.batch_size)

    outs = {"lift": lift, "davi": davi_x, "davi_refine": auto, "davi_refine_forced": forced}
    row = {}
    for name, out in outs.items():
        row[name] = float(psnr(out, x).mean())
        row[f"{name}_ssim"] = float(ssim(out, x).mean())
        row[f"{name}_subset"] = float(psnr(out[:n], x[:n]).mean())  # on RED-Diff's images
    row["red_diff_100"] = float(psnr(red_diff, x[:n]).mean())
    row["red_diff_100_ssim"] = float(ssim(red_diff, x[:n]).mean())
    below = psnr(davi_x, x) < psnr(lift, x)
    row.update({
        "flag_rate": float(flag.float().mean()), "flagged": int(flag.sum()),
        "davi_below_lift": int(below.sum()), "davi_below_lift_flagged": int((below & flag).sum()),
        "statistic_median": float(stat.median()),
        "statistic_refined_median": float(residual_statistic(op, auto, y).median()),
        "nfe_davi_refine": 1 + REFINE_STEPS * float(flag.float().mean()),
        "nfe_davi_refine_forced": 1 + REFINE_STEPS, "nfe_red_diff_100": 100,
        "images": x.shape[0], "red_diff_images": n, "threshold": threshold,
        "red_diff_lr": lr, "red_diff_lam": lam,
    })
    return row, {"x": x, "y": y, "flag": flag, **outs}


def _cache_key(task: str, shift: str, threshold: float, args) -> str:
    from davi.solvers.methods import REFINE, REFINE_STEPS

    blob = json.dumps([task, shift, threshold, args.images, args.red_diff_images, args.seed, REFINE, REFINE_STEPS,
                       RED_DIFF_TUNED[task]])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def run(args) -> dict:
    from davi.io.atomic import write_json
    from davi.eval.shifts import shift_names

    x0 = uncalibrated_test_digits(args.images)
    cache = Path(args.cache_dir)
    results = {}
    for task in args.tasks:
        loaded = load_shipped(task)
        shifts = ["none", *shift_names()]
        for shift in reversed(shifts) if args.reverse else shifts:
            f = cache / f"{task}__{shift}__{_cache_key(task, shift, loaded.threshold, args)}.json"
            if f.is_file():
                results[f"{task}/{shift}"] = json.loads(f.read_text())
                continue  # measured already (this run or one that shares the cache)
            row, _ = restore_cell(task, shift, loaded, x0, args)
            write_json(f, row)
            results[f"{task}/{shift}"] = row
            print(f"{task}/{shift}: lift {row['lift']:.2f} davi {row['davi']:.2f} refine {row['davi_refine']:.2f} "
                  f"forced {row['davi_refine_forced']:.2f} rd100 {row['red_diff_100']:.2f} "
                  f"flagged {row['flag_rate']:.2f}", flush=True)
    return results


def summarise(results: dict) -> dict:
    """Per task: false alarms, pooled detection, and the refinement goal per shift."""
    out = {}
    for task in sorted({k.split("/")[0] for k in results}):
        rows = {k.split("/", 1)[1]: v for k, v in results.items() if k.startswith(task + "/")}
        shifted = [v for s, v in rows.items() if s != "none"]
        below = sum(v["davi_below_lift"] for v in shifted)
        caught = sum(v["davi_below_lift_flagged"] for v in shifted)
        met = [s for s, v in rows.items() if v["davi_refine"] >= max(v["lift"], v["davi"]) - 1e-9]
        out[task] = {"false_alarm_rate": rows["none"]["flag_rate"] if "none" in rows else None,
                     "davi_below_lift": below, "detected": caught, "detection_rate": caught / below if below else None,
                     "refine_goal_met": len(met), "shifts": len(rows),
                     "refine_goal_missed": sorted(set(rows) - set(met))}
    return out


def figure(args, out_path: str) -> None:
    """Flagged inputs: measurement, DAVI, DAVI + refine, truth, for the worst-hit shift of each task."""
    from davi.io.images import display_measurement, make_grid, save_grid_png

    x0 = uncalibrated_test_digits(16)
    rows = []
    for task, shift in (("sr4", "invert-2"), ("deblur", "blur-2"), ("box", "invert-1"), ("deblur", "invert-2")):
        loaded = load_shipped(task)
        _, t = restore_cell(task, shift, loaded, x0, argparse.Namespace(**{**vars(args), "red_diff_images": 1}))
        idx = t["flag"].nonzero().flatten()[:2].tolist()
        for i in idx:
            rows += [display_measurement(t["y"][i: i + 1], t["x"][i: i + 1])[0], t["davi"][i], t["davi_refine"][i],
                     t["x"][i]]
    save_grid_png(make_grid(torch.stack(rows), nrow=4), out_path, upscale=3)
    print(f"wrote {out_path}")


def with_other_tasks(results: dict, out, head: str, tasks: list[str]) -> dict:
    """A run of some tasks keeps the other tasks' rows of ``out`` when they were measured the same way (same
    head: digits, subset, refinement); rows in DIGIT_TASKS order."""
    from davi.eval.tasks import DIGIT_TASKS

    old = json.loads(Path(out).read_text()) if Path(out).is_file() else {}
    if old.get("head") == head:
        results = {**{k: v for k, v in old.items() if "/" in k and k.split("/")[0] not in tasks}, **results}
    return {k: results[k] for t in DIGIT_TASKS for k in results if k.split("/")[0] == t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shift_protocol_arguments(p)
    p.add_argument("--red-diff-images", type=int, default=32, help="RED-Diff-100 on the first N of them")
    p.add_argument("--cache-dir", default="/tmp/davi_ood_cache", help="per-(task, shift) results, for resuming")
    p.add_argument("--reverse", action="store_true",
                   help="shifts last to first: a second process sharing --cache-dir meets the first halfway")
    p.add_argument("--figure", default=None, help="also write the figure (e.g. docs/ood.png)")
    p.add_argument("--out", default=str(RESULTS / "ood.json"))
    args = p.parse_args()
    torch.set_grad_enabled(False)  # RED-Diff turns autograd on for itself

    from davi.solvers.methods import REFINE, REFINE_STEPS

    results = run(args)
    head = (f"Held-out test digits 0-{args.images - 1} per shift (thresholds calibrated on test digits 500-999), "
            f"sigma_y = 0.05, one sample per image, the same measurements and seeds for every method. RED-Diff-100 "
            f"on the first {args.red_diff_images} digits only (lr/lambda per task as tuned by compare.py); the "
            f"'(subset)' columns are the other methods on those same digits. Refinement: {REFINE_STEPS} RED-Diff "
            f"steps warm-started from the DAVI sample ({', '.join(f'{k} {v}' for k, v in REFINE.items())}), "
            f"20 network evaluations per refined image; auto refines only flagged images.")
    results = with_other_tasks(results, args.out, head, args.tasks)
    # "<task>/<shift>" rows at the top level, beside the run's description and summary
    data = {**results, "command": command_line("ood.py"), "head": head, "summary": summarise(results),
            "refine": {"steps": REFINE_STEPS, **REFINE}}
    publish(args.out, data, render_ood)
    if args.figure:
        figure(args, args.figure)


# ----------------------------------------------------------------------------------------------
# the tables: ood.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
OOD_COLUMNS = [("cell", "task / shift", "{}"), ("lift", "lift(y)", "{:.2f}"), ("davi", "DAVI", "{:.2f}"),
               ("davi_refine", "DAVI + refine auto", "{:.2f}"), ("davi_refine_forced", "DAVI + refine forced", "{:.2f}"),
               ("lift_subset", "lift(y) (subset)", "{:.2f}"), ("davi_subset", "DAVI (subset)", "{:.2f}"),
               ("davi_refine_subset", "refine auto (subset)", "{:.2f}"), ("red_diff_100", "RED-Diff-100 (subset)", "{:.2f}"),
               ("flag_rate", "flagged", "{:.0%}"), ("caught", "DAVI < lift: flagged", "{}"),
               ("nfe_davi_refine", "NFE / image (auto)", "{:.1f}")]


@table("ood_shifts", "ood.json")
def render_ood_shifts(data: dict) -> str:
    """benchmarks/ood.py: PSNR (dB) per task and shift (docs/results.md)."""
    rows = [{**v, "cell": k, "caught": f"{v['davi_below_lift_flagged']} / {v['davi_below_lift']}"}
            for k, v in data.items() if "/" in k]
    return markdown_table(rows, OOD_COLUMNS)


@table("ood_goals", "ood.json")
def render_ood_goals(data: dict) -> str:
    """benchmarks/ood.py: the goals per task (README)."""
    goals = []
    for task, g in data["summary"].items():
        det = g["detection_rate"]
        verdict = lambda ok: "met" if ok else "**not met**"  # noqa: E731
        goals.append({"task": task, "fa": f"{g['false_alarm_rate']:.1%}: " + verdict(g["false_alarm_rate"] <= 0.02),
                      "det": ("-" if det is None else f"{det:.0%} ({g['detected']} / {g['davi_below_lift']}): "
                              + verdict(det >= 0.9)),
                      "refine": f"{g['refine_goal_met']} of {g['shifts']}"
                                + (f" (missed: {', '.join(g['refine_goal_missed'])})" if g["refine_goal_missed"] else "")})
    return markdown_table(goals, [
        ("task", "task", "{}"), ("fa", "false alarms, unshifted (goal <= 2%)", "{}"),
        ("det", "DAVI < lift(y) flagged (goal >= 90%)", "{}"),
        ("refine", "shifts with refine auto >= max(lift, DAVI)", "{}")])


def render_ood(data: dict) -> str:
    """benchmarks/ood.py's results .md: the per-shift table, then the goals."""
    return render_ood_shifts(data) + "\n\n" + render_ood_goals(data)


if __name__ == "__main__":
    main()
