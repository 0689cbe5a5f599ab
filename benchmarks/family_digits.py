"""benchmarks/family.py's digit sections (issue 30): the family mapper on the embedded default.

* shipped tasks (SR x4, deblur std 1, centred 16 px box at sigma_y 0.05; compare.py's first N test digits and
  their y): each family export (the shipped sampler, and its paired warm start) against the shipped dedicated
  mappers (paired: the headline one; and the sampler), PSNR / SSIM / FD / KID against other real digits, the
  paired bootstrap of family minus dedicated, seconds per image side by side;
* held-out settings inside the family's ranges that no training saw as such: the family, a dedicated mapper
  trained for that one setting with the shipped recipe and budget (``DEDICATED``: configs/<task>_mnist.yaml's
  paired 2,000 steps, then <task>_mnist_sampler.yaml's 600; ``--train-dedicated`` trains them), and
  RED-Diff-100 tuned for the setting on train digits with compare.py's grid rule, timed beside the family;
* false alarms of the family's one consistency threshold at each sigma_y: the share of held-out test digits,
  each measured by its own member at that sigma_y, whose r exceeds the card's threshold.

Every expensive unit is cached under ``<work>/digits`` (a killed run continues).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("sr4", "deblur", "box")
FAMILY_EXPORTS = {"family": ROOT / "davi/assets/mappers/family",  # the shipped sampler
                  "family_paired": ROOT / "resume/family_mnist_paired/export"}  # its paired warm start
# name -> (the digit task whose data, prior and RED-Diff settings it uses, the member's operator params)
HELDOUT = {
    "deblur_std1.7_sigma0.08": ("deblur", {"name": "deblur", "kernel_size": 9, "kernel_std": 1.7, "sigma_y": 0.08}),
    "sr4_sigma0.15": ("sr4", {"name": "sr", "scale": 4, "sigma_y": 0.15}),
    "sr4_sigma0.03": ("sr4", {"name": "sr", "scale": 4, "sigma_y": 0.03}),
    "random0.45": ("box", {"name": "random_inpaint", "drop_fraction": 0.45, "mask_seed": 0, "sigma_y": 0.05}),
}
DEDICATED = ("deblur_std1.7_sigma0.08", "sr4_sigma0.15")  # the two settings given their own mapper
FALSE_ALARM_SIGMAS = (0.01, 0.02, 0.05, 0.1, 0.2)
TIME_BATCH = 25


def log(msg: str) -> None:
    print(msg, flush=True)


def heldout_task(name: str, images: int):
    """The DigitTask of a held-out setting: its base task's data and prior, the member as its operator."""
    from davi.eval.tasks import DigitTask
    from davi.operators import operator_from_params

    base, params = HELDOUT[name]
    task = DigitTask.load(base, images)
    op = operator_from_params({"resolution": 32, "channels": 1, **params})
    return replace(task, name=name, operator=op)


def restorer_method(export: Path, operator):
    """The one-step method of the export at ``export`` for ``operator`` (a family export: that member)."""
    from davi.restorer import Restorer

    r = Restorer.from_pretrained(export)
    return (r.with_operator(operator) if r.family is not None else r).one_step_method()


def restore(method, y: torch.Tensor) -> torch.Tensor:
    """One restoration per image with compare.py's per-image seeds (seed 0)."""
    from davi.eval.evaluate import run_method

    return run_method(method, y, 100, seed=0)[0]


def seconds_per_image(methods: dict, y: torch.Tensor, warmup: int = 1, repeats: int = 3) -> dict:
    """Median seconds per image of each method on the same batch, one after the other (one process)."""
    from davi.eval.timing import median_time

    batch = y[:TIME_BATCH]
    return {k: median_time(lambda m=m: m(batch, list(range(len(batch))), 1), torch.device("cpu"), warmup, repeats)
            / len(batch) for k, m in methods.items()}


# like against like: the family sampler against the dedicated samplers, its paired stage against the paired
# mappers (a posterior sample's squared error is about twice the posterior mean's, so a sampler scores
# lower PSNR than a point estimator by design)
PAIRS = {"dedicated": ("family", "dedicated"), "dedicated_paired": ("family_paired", "dedicated_paired")}


def score_rows(outs: dict, x0, independent, resamples: int) -> tuple[dict, dict]:
    """(rows, paired bootstrap of family minus dedicated for each of PAIRS present) of single restorations
    ``outs[name]`` of ``x0``."""
    from davi.eval.paired_bootstrap import psnr_differences, realism_differences
    from davi.eval.tasks import score_digit_restorations
    from davi.models.classifier import classifier_features, load_classifier

    rows, items = {}, {}
    for name, x in outs.items():
        row, items[name] = score_digit_restorations([x], x0, independent)
        rows[name] = {k: v for k, v in row.items() if k not in ("per_seed", "seeds")}
    reference = classifier_features(load_classifier(), independent).numpy()
    boot = {}
    for key, (family, dedicated) in PAIRS.items():
        if family in items and dedicated in items:
            a, b = items[family], {key: items[dedicated]}
            fd, kid = realism_differences(a["feats"], {key: b[key]["feats"]}, reference, resamples=resamples)
            ps = psnr_differences(a["psnr"], {key: b[key]["psnr"]}, resamples=resamples)
            boot[key] = {"minus": family, "fd_independent": fd[key].as_dict(), "kid_independent": kid[key].as_dict(),
                         "psnr": ps[key].as_dict()}
    return rows, boot


def shipped_task(name: str, args) -> dict:
    """Family exports against the shipped dedicated mappers (sampler, paired) on one shipped task."""
    from davi.eval.tasks import MAPPERS, DigitTask

    task = DigitTask.load(name, args.digits)
    x0, independent = task.test_blocks(2)
    y = task.measure(x0)
    exports = {k: p for k, p in FAMILY_EXPORTS.items() if p.is_dir()}
    exports.update({"dedicated": MAPPERS / f"{name}_sampler", "dedicated_paired": MAPPERS / name})
    methods = {k: restorer_method(p, task.operator) for k, p in exports.items()}
    rows, boot = score_rows({k: restore(m, y) for k, m in methods.items()}, x0, independent, args.resamples)
    for k, s in seconds_per_image(methods, y).items():
        rows[k]["s_per_image"] = s
    log(f"digits {name}: " + ", ".join(f"{k} {r['psnr']:.2f} dB" for k, r in rows.items()))
    return {**rows, "bootstrap": boot, "exports": {k: str(p.relative_to(ROOT)) for k, p in exports.items()}}


def red_diff_tuning(task, args, work: Path) -> dict:
    """RED-Diff-100's (lr, lam) for a held-out setting: compare.py's grid and widening rule on train digits."""
    from davi.builders import red_diff_settings
    from davi.eval.tasks import TRAIN_NOISE_SEED
    from davi.eval.tuning import tune_red_diff
    from davi.io.atomic import write_json

    path = work / "digits" / task.name / "red_diff_tuning.json"
    if path.is_file():
        return json.loads(path.read_text())
    xt = task.train_digits(args.tune_digits)
    yt = task.measure(xt, TRAIN_NOISE_SEED)
    settings = red_diff_settings(task.red_diff_config(100, 0.1, 0.1))
    found = tune_red_diff(task.prior, task.operator, xt, yt, steps=100,
                          **{k: v for k, v in settings.items() if k not in ("steps", "lr", "lam")})
    write_json(path, found)
    log(f"{task.name}: RED-Diff-100 tuned to lr {found['lr']:g} lam {found['lam']:g}")
    return found


def red_diff_100(task, tuning: dict):
    """RED-Diff-100 at the tuned (lr, lam), with the task's other RED-Diff settings."""
    from davi.builders import red_diff_settings
    from davi.solvers.methods import RedDiffMethod

    return RedDiffMethod(task.prior, task.operator,
                         **red_diff_settings(task.red_diff_config(100, tuning["lr"], tuning["lam"])))


def red_diff_restorations(task, tuning: dict, method, y: torch.Tensor, work: Path) -> torch.Tensor:
    """``method`` (red_diff_100 at ``tuning``) restoring the test ``y`` (seed 0's per-image seeds), cached by chunk."""
    from davi.io.chunks import digest, run_in_chunks

    key = lambda a, b: {"steps": 100, "lr": tuning["lr"], "lam": tuning["lam"], "y": digest(y[a:b])}
    return run_in_chunks(work / "digits" / task.name / "red_diff_100", key, len(y), 50,
                         lambda a, b: method(y[a:b], list(range(a, b)), 1)[0].cpu(),
                         on_chunk=lambda a, b, new: log(f"{task.name} RED-Diff-100: {a}-{b} {'done' if new else 'cached'}"))


def heldout_setting(name: str, args, work: Path) -> dict:
    """Family (and its paired stage), the dedicated mapper where trained, RED-Diff-100: PSNR; speed-up."""
    from davi.eval.metrics import psnr

    task = heldout_task(name, args.digits)
    x0 = task.test_blocks(1)[0]
    y = task.measure(x0)
    methods = {k: restorer_method(p, task.operator) for k, p in FAMILY_EXPORTS.items() if p.is_dir()}
    for stage, key in (("sampler", "dedicated"), ("paired", "dedicated_paired")):
        if (export := work / "heldout" / name / stage / "export").is_dir():
            methods[key] = restorer_method(export, task.operator)
    tuning = red_diff_tuning(task, args, work)
    red = red_diff_100(task, tuning)
    outs = {k: restore(m, y) for k, m in methods.items()}
    outs["red_diff_100"] = red_diff_restorations(task, tuning, red, y, work)
    row = {k: float(psnr(x, x0).mean()) for k, x in outs.items()}
    row.setdefault("dedicated", None)
    base = "family" if "family" in methods else "family_paired"  # the shipped sampler once it exists
    seconds = seconds_per_image({base: methods[base], "red_diff_100": red}, y)
    row.update({"speedup_red_diff_100": seconds["red_diff_100"] / seconds[base], "s_per_image": seconds,
                "base": base, "operator": HELDOUT[name][1], "red_diff_100_tuning": {k: tuning[k] for k in
                                                                                   ("lr", "lam", "interior")}})
    log(f"heldout {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float)))
    return row


def train_dedicated(name: str, work: Path) -> None:
    """The shipped recipe and budget for one held-out setting: the task's paired config, then its sampler
    config warm-started from it, each its own train.py process on one thread (resumes a stopped run)."""
    base, params = HELDOUT[name]
    over = [f"operator.{k}={v}" for k, v in params.items() if k != "name"]
    folder = work / "heldout" / name
    stages = (("paired", f"configs/{base}_mnist.yaml", []),
              ("sampler", f"configs/{base}_mnist_sampler.yaml", [f"davi.init_mapper={folder / 'paired' / 'export'}"]))
    for stage, config, extra in stages:
        out = folder / stage
        if (out / "export").is_dir():
            continue
        resume = ["--resume", "latest"] if any(out.glob("checkpoint-*")) else []
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / config), *over, *extra,
               f"train.output_dir={out}", *resume]
        log(f"dedicated {name} {stage}: {' '.join(cmd[1:])}")
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def false_alarms(args, work: Path) -> dict:
    """Per sigma_y: the share of held-out test digits (each measured by its own member drawn from the
    family, at that sigma_y) whose consistency statistic r exceeds the family export's threshold at that
    sigma_y (ExportCard.threshold_at; calibrated on other test digits, 500-999)."""
    from davi.eval.tasks import DigitTask
    from davi.io.atomic import write_json
    from davi.models.prior import safetensors_digest
    from davi.restorer import Restorer
    from davi.solvers.family_consistency import family_statistics

    export = FAMILY_EXPORTS["family"]
    weights = safetensors_digest(export)
    path = work / "digits" / "false_alarms.json"
    if path.is_file() and (cached := json.loads(path.read_text())).get("weights") == weights:
        return cached  # keyed by the export's weights: a re-shipped mapper is measured again
    r = Restorer.from_pretrained(export)
    x0 = DigitTask.load("sr4", args.digits).test_blocks(1)[0]  # test digits 0..N-1; the threshold saw 500-999
    out = {"images": len(x0), "weights": weights, "threshold": {}, "median_r": {}}
    for sigma in FALSE_ALARM_SIGMAS:
        stat, _ = family_statistics(r.mapper.float(), r.family, x0, seed=1, sigma_y=sigma)
        threshold = r.card.threshold_at(sigma)
        out[str(sigma)] = float((stat > threshold).double().mean())
        out["threshold"][str(sigma)], out["median_r"][str(sigma)] = threshold, float(stat.median())
        log(f"false alarms at sigma_y {sigma}: {out[str(sigma)]:.3f}")
    write_json(path, out)
    return out


def train_seconds(work: Path) -> dict:
    """Training seconds (one thread; train_summary.json) of the family (paired stage + sampler) and of each
    dedicated held-out mapper (paired + sampler)."""
    def run_seconds(summary: dict) -> float:
        # The whole run's seconds; a run resumed from a checkpoint that predates that record (seconds counted
        # from a later step) is estimated at its last process's seconds per step.
        if summary.get("seconds_counted_from", summary["start_step"]) == 0:
            return summary.get("seconds_total", summary["seconds"])
        return summary["seconds_per_step"] * summary["steps"]

    def seconds(*folders: Path):
        paths = [f / "train_summary.json" for f in folders]
        return sum(run_seconds(json.loads(p.read_text())) for p in paths) if all(p.is_file() for p in paths) else None

    out = {"family": seconds(ROOT / "runs/family_mnist_paired", ROOT / "runs/family_mnist")}
    for name in DEDICATED:
        out[f"dedicated/{name}"] = seconds(work / "heldout" / name / "paired", work / "heldout" / name / "sampler")
    done = [v for k, v in out.items() if k.startswith("dedicated/") and v]
    out["dedicated"] = sum(done) / len(done) if done else None
    return out


def digit_sections(args, work: Path) -> dict:
    """family.json's digit keys: ``<task>``, ``heldout/<name>``, ``false_alarms/<sigma_y>``, ``train_cpu_s``."""
    out = {}
    for name in SHIPPED:
        out[name] = shipped_task(name, args)
    for name in HELDOUT:
        out[f"heldout/{name}"] = heldout_setting(name, args, work)
    if FAMILY_EXPORTS["family"].is_dir():
        alarms = false_alarms(args, work)
        out.update({f"false_alarms/{s}": alarms[str(s)] for s in FALSE_ALARM_SIGMAS})
        out["false_alarms:threshold"], out["false_alarms:median_r"] = alarms["threshold"], alarms["median_r"]
    out["train_cpu_s"] = train_seconds(work)
    if args.figure and FAMILY_EXPORTS["family"].is_dir():
        family_grid(Path(args.figure))
    return out


# the figure's rows: one measurement of each kind, from the one network
FIGURE_MEMBERS = (
    {"name": "sr", "scale": 4, "sigma_y": 0.05}, {"name": "sr", "scale": 2, "sigma_y": 0.15},
    {"name": "deblur", "kernel_size": 9, "kernel_std": 1.7, "sigma_y": 0.08},
    {"name": "deblur", "kernel_size": 9, "kernel_std": 2.5, "sigma_y": 0.02},
    {"name": "box_inpaint", "box_size": 12, "box_top": 4, "box_left": 14, "sigma_y": 0.05},
    {"name": "random_inpaint", "drop_fraction": 0.7, "mask_seed": 3, "sigma_y": 0.1},
)


@torch.no_grad()
def family_grid(path: Path, samples: int = 6) -> None:
    """The family figure: per row one member (a different test digit each), the measurement, ``samples``
    samples of the one family export, their mean, their per-pixel std (scaled to the row's max) and the truth."""
    from davi.eval.tasks import DigitTask
    from davi.io.images import display_measurement, make_grid, save_grid_png
    from davi.operators import operator_from_params
    from davi.restorer import Restorer

    restorer = Restorer.from_pretrained(FAMILY_EXPORTS["family"])
    x0 = DigitTask.load("sr4", len(FIGURE_MEMBERS)).test_blocks(1)[0]
    rows = []
    for i, params in enumerate(FIGURE_MEMBERS):
        op = operator_from_params({"resolution": 32, "channels": 1, **params})
        y = op.measure(x0[i:i + 1], generator=torch.Generator().manual_seed(i))
        out = restorer(y, samples=samples, seed=i, operator=op, progress=False)
        std = out.std[0]
        rows += [display_measurement(y, x0[i:i + 1])[0].clamp(-1, 1), *out.samples[:, 0], out.mean[0],
                 std / std.amax().clamp_min(1e-8) * 2 - 1, x0[i]]
    save_grid_png(make_grid(torch.stack(rows), nrow=samples + 4), path, upscale=3)
    log(f"wrote {path}")


LABELS = {"family": "family (sampler)", "dedicated": "dedicated sampler",
          "family_paired": "family (paired stage)", "dedicated_paired": "dedicated paired"}


def _interval(b: dict | None, fmt: str) -> str:
    return f"{fmt.format(b['estimate'])} [{fmt.format(b['low'])}, {fmt.format(b['high'])}]" if b else ""


def render_digits(data: dict) -> str:
    """The digit sections of family.json as markdown (empty while they have not run)."""
    from davi.eval.evaluate import markdown_table

    rows = []
    for task in SHIPPED:
        rec = data.get(task)
        if not isinstance(rec, dict) or "bootstrap" not in rec:
            continue
        for name in ("family", "dedicated", "family_paired", "dedicated_paired"):
            if (r := rec.get(name)) is None:
                continue
            b = rec["bootstrap"].get(name, {})
            rows.append({"task": task, "method": LABELS[name], **r, "d_psnr": _interval(b.get("psnr"), "{:+.2f}"),
                         "d_fd": _interval(b.get("fd_independent"), "{:+.2f}"),
                         "d_kid": _interval(b.get("kid_independent"), "{:+.3f}")})
    if not rows:
        return ""
    out = [markdown_table(rows, [
        ("task", "task", "{}"), ("method", "mapper", "{}"), ("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
        ("fd_independent", "FD (independent)", "{:.2f}"), ("kid_independent", "KID (independent)", "{:.4f}"),
        ("s_per_image", "s / image", "{:.4f}"), ("d_psnr", "family minus this: PSNR [95%]", "{}"),
        ("d_fd", "FD [95%]", "{}"), ("d_kid", "KID [95%]", "{}")])]
    held = [{"setting": k.split("/", 1)[1], **{f: "-" if x is None else x for f, x in v.items()}}
            for k, v in data.items() if k.startswith("heldout/")]
    if held:
        out.append(markdown_table(held, [
            ("setting", "held-out setting", "{}"), ("family", "family", "{:.2f}"),
            ("family_paired", "family (paired stage)", "{:.2f}"), ("dedicated", "dedicated", "{:.2f}"),
            ("dedicated_paired", "dedicated (paired stage)", "{:.2f}"), ("red_diff_100", "RED-Diff-100", "{:.2f}"),
            ("speedup_red_diff_100", "speed-up vs RED-Diff-100", "{:.0f}x")]))
    alarms = {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith("false_alarms/")}
    if alarms:
        out.append("False alarms of the family's threshold at each noise level: " + ", ".join(
            f"sigma_y {s}: {v:.1%}" for s, v in alarms.items()) + ".")
    return "\n\n".join(out)
