"""DAVI against RED-Diff, lift(y) and the prior's own samples on 200 held-out digits (issue 12).

For SR x4, deblur and box inpainting on the embedded default:

* ``davi``: the mapper in davi/assets/mappers/<task> (or ``--mapper TASK=PATH``), one network
  evaluation per image; ``lift``: lift(y);
* ``red_diff_1000`` / ``red_diff_100``: RED-Diff (Mardani et al. 2023) with the shipped prior at the
  lr / lambda tuned per task on TRAIN digits: a grid at 100 steps, best PSNR, widened
  (davi.eval.grid_search) until the chosen lr and lambda are both interior;
* ``prior_ddim50``: unconditional DDIM-50 samples of the prior, scored against the same test
  digits on the realism measures only (the realism ceiling of anything that samples this prior).

Every method restores the same ``--images`` test digits (the first N of the shuffled test split,
measurement noise seed 0), one sample per image per seed, seeds 0, 1, 2. Metrics
(davi.eval.metrics.score_restorations): PSNR, SSIM, classifier Fréchet distance and kernel distance
(KID) in the digit classifier's features, averaged over the seeds complete so far, against the
measured digits and against test digits N..2N-1, which nothing restores (realism alone: against the
measured digits FD and KID also reward fidelity, benchmarks/realism_floor.py); the row ``real_digits``
(test digits 2N..3N-1, unrestored) is the measures' floor; a paired
bootstrap (davi.eval.bootstrap) over the images gives 95% intervals of DAVI minus each RED-Diff.
Seconds per image come from a separate timing pass at one batch size for every method (warm-up,
then the median of ``--repeats`` runs); RED-Diff is timed over ``--time-steps`` steps per run and
scaled to N steps.

The RED-Diff work is expensive (about 35 CPU minutes per task and seed for RED-Diff-1000 on 200
images here) and resumable: grid points, RED-Diff restorations (in chunks of ``--chunk`` images,
keyed by the chunk's measurements and the setting) and the prior's samples are cached under
``--runs``; a killed run continues where it stopped. DAVI and lift are recomputed on every run,
so a report after new mappers are shipped costs a few minutes, not hours.

    python benchmarks/compare.py --solve        # background: grid, RED-Diff-100 (3 seeds), then RED-Diff-1000 seed 0, 1, 2
    python benchmarks/compare.py                # report from what is cached: compare.json, compare_grid.json (+ .md)
    python benchmarks/readme_tables.py          # the README's tables from compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.builders import red_diff_settings
from davi.cli.common import run_cli

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("sr4", "deblur", "box")
SEEDS = (0, 1, 2)
STEPS = (1000, 100)
GRID_LRS = (0.05, 0.1, 0.25)  # the starting 3 x 3 grid (widened by davi.eval.grid_search)
GRID_LAMS = (0.05, 0.25, 1.0)
GRID_STEPS = 100
TRAIN_NOISE_SEED = 1  # the tuning measurements' noise: apart from the test set's seed 0
PRIOR_SAMPLE_SEED = 0


def method_name(steps: int) -> str:
    return f"red_diff_{steps}"


def log(*parts) -> None:
    print(*parts, flush=True)


# ----------------------------------------------------------------------------------------------
# the tasks' data
# ----------------------------------------------------------------------------------------------
class Task:
    """A task's config, operator, the test digits and their measurements, loaded once."""

    _priors: dict = {}

    def __init__(self, name: str, args):
        import torch

        from davi.io.chunks import digest
        from davi.config import load_config
        from davi.data.datasets import load_split
        from davi.operators import build_operator

        self.name, self.args = name, args
        self.cfg = load_config(ROOT / "configs" / f"{name}_mnist.yaml")
        self.operator = build_operator(self.cfg.operator, self.cfg.data.resolution, self.cfg.data.channels)
        test = load_split(self.cfg.data, "test").tensor(limit=3 * args.images)
        if len(test) < 3 * args.images:
            raise SystemExit(f"error: --images {args.images}: the test split has only {len(test)} digits (needs 3 x)")
        # the measured digits; an independent realism reference; a third real set, scored as the floor
        self.x0, self.independent, self.real = (test[k * args.images: (k + 1) * args.images] for k in range(3))
        self.y = self.operator.measure(self.x0, generator=torch.Generator().manual_seed(0))
        self.digest = digest(self.y)
        self.runs = Path(args.runs) / name

    @property
    def prior(self):
        from davi.builders import prior_from_config

        path = self.cfg.prior.path
        if path not in Task._priors:
            Task._priors[path] = prior_from_config(self.cfg)
        return Task._priors[path]

    def red_diff_config(self, steps: int, lr: float, lam: float):
        from davi.config import RedDiffConfig

        return RedDiffConfig(**{**self.cfg.red_diff.__dict__, "num_steps": steps, "lr": lr, "lam": lam})

    def red_diff_key(self, steps: int, lr: float, lam: float, seed: int, y) -> dict:
        """What a cached RED-Diff result depends on (its measurements by digest)."""
        from davi.io.chunks import digest

        return {"version": 1, "task": self.name, "measurements": digest(y), "steps": steps, "lr": lr, "lam": lam,
                "seed": seed, "red_diff": self.red_diff_config(steps, lr, lam).__dict__,
                "prior": self.prior.digest or self.prior.identity}


# ----------------------------------------------------------------------------------------------
# RED-Diff's lr / lambda grid on train digits
# ----------------------------------------------------------------------------------------------
def grid_point(task: Task, lr: float, lam: float, compute: bool) -> dict | None:
    """Scores of RED-Diff-100 at (lr, lam) on the tuning digits, cached in runs/compare/<task>/grid/."""
    import torch

    from davi.io.atomic import write_json
    from davi.data.datasets import load_split
    from davi.eval.evaluate import run_method
    from davi.solvers.methods import RedDiffMethod
    from davi.eval.metrics import score_restorations

    xt = load_split(task.cfg.data, "train").tensor(limit=task.args.tune_images)
    yt = task.operator.measure(xt, generator=torch.Generator().manual_seed(TRAIN_NOISE_SEED))
    key = task.red_diff_key(task.args.grid_steps, lr, lam, 0, yt)
    path = task.runs / "grid" / f"lr{lr:g}_lam{lam:g}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["scores"]
    if not compute:
        return None
    out, _ = run_method(RedDiffMethod(task.prior, task.operator, **red_diff_settings(task.red_diff_config(task.args.grid_steps, lr, lam))), yt,
                        len(yt), desc=f"grid {task.name} lr={lr:g} lam={lam:g}")
    scores = score_restorations(out, xt, explain_absent=False)
    write_json(path, {"key": key, "scores": scores})
    log(f"grid {task.name} lr={lr:g} lam={lam:g}: {json.dumps(scores)}")
    return scores


def tune(task: Task, compute: bool) -> dict | None:
    """The widened grid and its interior choice, or None while a point is not computed (report)."""
    from davi.eval.grid_search import widen_or_choose

    lrs, lams, widenings, points = GRID_LRS, GRID_LAMS, 0, {}
    while True:
        for lr in lrs:
            for lam in lams:
                if (lr, lam) not in points:
                    scores = grid_point(task, lr, lam, compute)
                    if scores is None:
                        return None
                    points[lr, lam] = scores
        step = widen_or_choose(lrs, lams, {k: v["psnr"] for k, v in points.items()}, widenings=widenings,
                               max_widenings=task.args.max_widenings)
        if step.done:
            lr, lam = step.choice
            return {"lr": lr, "lam": lam, "interior": step.interior, "widenings": widenings, "lrs": list(step.xs),
                    "lams": list(step.ys), "train_images": task.args.tune_images, "steps": task.args.grid_steps,
                    "grid": [{"lr": a, "lam": b, **points[a, b]} for a in step.xs for b in step.ys]}
        lrs, lams, widenings = step.xs, step.ys, widenings + 1
        log(f"grid {task.name}: best at an edge, widened to lr {lrs} x lam {lams}")


# ----------------------------------------------------------------------------------------------
# cached restorations
# ----------------------------------------------------------------------------------------------
def red_diff(task: Task, steps: int, seed: int, tuning: dict, compute: bool):
    """RED-Diff-``steps`` restorations of the test measurements for ``seed`` (None if not all cached)."""
    from davi.io.chunks import cached_result, run_in_chunks
    from davi.solvers.methods import RedDiffMethod

    lr, lam = tuning["lr"], tuning["lam"]
    folder = task.runs / method_name(steps) / f"seed{seed}"
    key = lambda a, b: task.red_diff_key(steps, lr, lam, seed, task.y[a:b])  # noqa: E731
    n, chunk = len(task.y), task.args.chunk
    if not compute:
        return cached_result(folder, key, n, chunk)
    method = RedDiffMethod(task.prior, task.operator, **red_diff_settings(task.red_diff_config(steps, lr, lam)))

    def solve(a: int, b: int):
        # the seeds run_method would give these images (davi.eval.evaluate), whatever the chunking
        return method(task.y[a:b], [seed * 100003 + i for i in range(a, b)], 1)[0].cpu()

    return run_in_chunks(folder, key, n, chunk, solve,
                         on_chunk=lambda a, b, new: log(f"{task.name} {method_name(steps)} seed {seed}: images {a}-{b} "
                                                        + ("done" if new else "cached")))


def prior_samples(task: Task, compute: bool):
    """``--images`` DDIM-50 samples of the prior (seeded), cached in runs/compare/prior_ddim50/."""
    import torch

    from davi.io.chunks import cached_result, run_in_chunks
    from davi.models.prior import sample

    n = task.args.images
    folder = Path(task.args.runs) / "prior_ddim50"
    key = {"version": 1, "prior": task.prior.digest or task.prior.identity, "steps": 50, "seed": PRIOR_SAMPLE_SEED,
           "n": n}
    if not compute:
        return cached_result(folder, key, n, n)
    return run_in_chunks(folder, key, n, n, lambda a, b: sample(
        task.prior, b - a, 50, generator=torch.Generator().manual_seed(PRIOR_SAMPLE_SEED), batch_size=n))


def solve(args) -> None:
    """All the expensive work, in the order that makes partial results most useful."""
    tasks = {name: Task(name, args) for name in args.tasks}
    prior_samples(next(iter(tasks.values())), compute=True)
    tunings = {}
    for name, task in tasks.items():
        tunings[name] = tune(task, compute=True)
        log(f"{name}: RED-Diff lr={tunings[name]['lr']}, lam={tunings[name]['lam']} "
            f"(interior: {tunings[name]['interior']})")
    # RED-Diff-100 (minutes per task and seed) for every seed first, then RED-Diff-1000 (half an hour
    # each) seed 0 of every task, then seeds 1, 2: each finished unit completes a row of the report
    for steps in sorted(args.steps):
        for seed in args.seeds:
            for name, task in tasks.items():
                red_diff(task, steps, seed, tunings[name], compute=True)
    log("solve: everything is computed")


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------
def mapper_folder(task: str, args) -> Path:
    overrides = dict(m.split("=", 1) for m in args.mapper)
    return Path(overrides.get(task, ROOT / "davi" / "assets" / "mappers" / task))


def features(images):
    from davi.models.classifier import classifier_features, load_classifier

    return classifier_features(load_classifier(), images)


def kid_of(feats, ref) -> float:
    """Unbiased squared MMD (cubic kernel, KID) of two whole feature sets."""
    import torch
    from torchmetrics.image.kid import poly_mmd

    return float(poly_mmd(torch.as_tensor(ref, dtype=torch.float64), torch.as_tensor(feats, dtype=torch.float64)))


def seed_mean(metric):
    """A set statistic averaged over seeds: items are (N, S, D) features of S seeds and (N, D) references."""
    return lambda feats, ref: sum(metric(feats[:, s], ref) for s in range(feats.shape[1])) / feats.shape[1]


def score_method(outs: list, x0, independent) -> tuple[dict, dict]:
    """(row averaged over the seeds' restorations ``outs``, per-image items for the bootstrap)."""
    import torch

    from davi.models.classifier import classifier_realism, load_classifier, sample_quality
    from davi.eval.metrics import psnr, score_restorations

    per_seed = []
    for out in outs:
        s = score_restorations(out, x0, explain_absent=False)
        s["confidence"] = sample_quality(load_classifier(), out)["confidence"]
        # realism alone: against the measured digits FD / KID also reward fidelity (benchmarks/realism_floor.py)
        s.update(classifier_realism(load_classifier(), out, independent, "independent"))
        per_seed.append(s)
    keys = per_seed[0].keys()
    row = {k: sum(s[k] for s in per_seed) / len(per_seed) for k in keys}
    items = {"psnr": torch.stack([psnr(o, x0) for o in outs], 1).mean(1).numpy(),
             "feats": torch.stack([features(o) for o in outs], 1).numpy()}
    return {**row, "seeds": len(outs), "per_seed": per_seed}, items


def time_methods(task: Task, methods: dict, args) -> dict:
    """Seconds per image and call of each method at batch ``--time-batch`` (median of ``--repeats`` after
    warm-up), divided by the call's steps: ``methods`` maps name -> (Method, steps per call), so a
    RED-Diff of ``--time-steps`` steps gives seconds per step and image."""
    import torch

    from davi.eval.timing import median_time

    y = task.y[:args.time_batch]
    seeds = list(range(len(y)))
    out = {}
    for name, (method, steps) in methods.items():
        t = median_time(lambda: method(y, seeds, 1), torch.device("cpu"), args.warmup, args.repeats) / len(y)
        out[name] = t / steps
        log(f"{task.name} timing {name}: {out[name]:.4g} s / image" + (" / step" if steps > 1 else ""))
    return out


def bootstrap(task: Task, rows: dict, items: dict, args) -> dict:
    """Paired-bootstrap intervals of DAVI minus each RED-Diff: PSNR, and FD / KID against the measured
    digits and against the independent ones; and of DAVI minus the real-digit floor against the
    independent ones (an interval holding 0 there: DAVI is as real as real digits, at this size).
    The reference's rows are resampled with the images' indices, so its own sampling noise is in the
    interval too (the independent digits are a sample, not the distribution)."""
    import numpy as np

    from davi.eval.bootstrap import bootstrap_differences
    from davi.models.classifier import frechet_distance

    red = {k: v for k, v in items.items() if k != "davi"}
    if not red:
        return {}
    measured, independent = features(task.x0).numpy(), features(task.independent).numpy()
    vs_floor = {**red, "real_digits": {"feats": features(task.real).numpy()[:, None]}}

    def differences(statistic, reference, others):
        return bootstrap_differences(seed_mean(statistic), [items["davi"]["feats"], reference],
                                     {k: [v["feats"], reference] for k, v in others.items()},
                                     resamples=args.resamples, seed=0)

    psnr_i = bootstrap_differences(lambda p: float(np.mean(p)), [items["davi"]["psnr"]],
                                   {k: [v["psnr"]] for k, v in red.items()}, resamples=args.resamples, seed=0)
    fd_i, kid_i = differences(frechet_distance, measured, red), differences(kid_of, measured, red)
    fd_ind, kid_ind = differences(frechet_distance, independent, vs_floor), differences(kid_of, independent, vs_floor)
    seeds = rows["davi"]["seeds"]
    boot = {k: {"psnr": psnr_i[k].as_dict(), "classifier_fd": fd_i[k].as_dict(), "kid": kid_i[k].as_dict(),
                "fd_independent": fd_ind[k].as_dict(), "kid_independent": kid_ind[k].as_dict(),
                "seeds": [seeds, rows[k]["seeds"]]} for k in red}
    boot["real_digits"] = {"fd_independent": fd_ind["real_digits"].as_dict(),
                           "kid_independent": kid_ind["real_digits"].as_dict(), "seeds": [seeds, 1]}
    return boot


def report_task(task: Task, tuning: dict | None, prior_x, args) -> tuple[dict, dict, dict]:
    """(rows {method: metrics}, bootstrap intervals, timing) for one task."""
    from davi.models.classifier import classifier_realism, load_classifier, sample_quality
    from davi.eval.evaluate import run_method
    from davi.io.export import load_export
    from davi.solvers.methods import DaviMethod, LiftMethod, RedDiffMethod

    folder = mapper_folder(task.name, args)
    mapper, card, _ = load_export(folder)
    davi_method = DaviMethod(mapper, task.operator)
    rows, items = {}, {}
    rows["lift"], _ = score_method([run_method(LiftMethod(task.operator), task.y, args.time_batch)[0]], task.x0,
                                   task.independent)
    rows["davi"], items["davi"] = score_method(
        [run_method(davi_method, task.y, args.time_batch, seed=s)[0] for s in args.seeds], task.x0, task.independent)
    rows["davi"]["mapper"] = {"folder": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder),
                              "steps": card.get("steps")}
    timed = {"lift": (LiftMethod(task.operator), 1), "davi": (davi_method, 1)}
    if tuning is not None:
        timed["red_diff"] = (RedDiffMethod(task.prior, task.operator,
                                           **red_diff_settings(task.red_diff_config(args.time_steps, tuning["lr"], tuning["lam"]))), args.time_steps)
        for steps in args.steps:
            done = {s: o for s in args.seeds if (o := red_diff(task, steps, s, tuning, compute=False)) is not None}
            if done:
                name = method_name(steps)
                rows[name], items[name] = score_method(list(done.values()), task.x0, task.independent)
                rows[name].update(lr=tuning["lr"], lam=tuning["lam"], seed_ids=list(done))
    seconds = time_methods(task, timed, args)
    timing = {"lift": seconds["lift"], "davi": seconds["davi"]}
    if "red_diff" in seconds:
        timing["red_diff_per_step"] = seconds["red_diff"]
        for steps in args.steps:
            timing[method_name(steps)] = seconds["red_diff"] * steps
    for name, row in rows.items():
        row["nfe"] = {"lift": 0, "davi": 1}.get(name, int(name.rsplit("_", 1)[-1]) if name.startswith("red") else None)
        if name in timing:
            row["s_per_image"] = timing[name]
            row["time_vs_davi"] = timing[name] / timing["davi"]
    clf = load_classifier()

    def unrestored(images, **extra) -> dict:
        return {**classifier_realism(clf, images, task.x0), "confidence": sample_quality(clf, images)["confidence"],
                "seeds": 1, **extra, **classifier_realism(clf, images, task.independent, "independent")}

    if prior_x is not None:
        rows["prior_ddim50"] = unrestored(prior_x, nfe=50)
    # the floor: other real digits, as real as the measured ones, restoring nothing
    rows["real_digits"] = unrestored(task.real)
    boot = bootstrap(task, rows, items, args)
    log(f"{task.name}: " + json.dumps({k: {m: round(v, 4) for m, v in r.items() if isinstance(v, float)}
                                       for k, r in rows.items()}))
    return rows, boot, timing


def report(args) -> None:
    import torch

    from davi.io.atomic import write_json
    from davi.eval.timing import device_description
    from davi.models.classifier import load_classifier, sample_quality
    from readme_tables import command_line, publish, render_compare_md

    data, boot, tunings, timing = {}, {}, {}, {}
    prior_x, ref_conf = None, None
    for k, name in enumerate(args.tasks):
        task = Task(name, args)
        if k == 0:
            prior_x = prior_samples(task, compute=False)
            ref_conf = sample_quality(load_classifier(), task.x0)["confidence"]
        tunings[name] = tune(task, compute=False)
        data[name], boot[name], timing[name] = report_task(task, tunings[name], prior_x, args)
    load = os.getloadavg()[1]  # the last 5 minutes: the timing passes, on a busy or an idle machine
    write_json(Path(args.out) / "compare_grid.json", {"command": command_line("compare.py"), **{
        k: v for k, v in tunings.items() if v is not None}})
    head = (f"Embedded default (32x32 digits, sigma_y = 0.05): the first {args.images} held-out test digits "
            f"(all classes), measurement noise seed 0, one sample per image per seed (seeds "
            f"{', '.join(map(str, args.seeds))}; each row says how many it averages: RED-Diff runs resume across "
            f"sessions). RED-Diff lr / lambda tuned per task on {args.tune_images} train digits at {args.grid_steps} steps "
            f"(best PSNR, grid widened until the choice is interior; benchmarks/results/compare_grid.json). "
            f"classifier FD / KID = Frechet / kernel distance in the digit classifier's features (not FID; lower is "
            f"more realistic; KID +- its std over 100 subsets of 100 images); confidence = mean "
            f"max-softmax of the classifier (real test digits: {ref_conf:.3f}). prior_ddim50 = the prior's own "
            f"unconditional DDIM-50 samples against the same digits; real_digits = test digits "
            f"{2 * args.images}-{3 * args.images - 1}, real and unrestored, the floor of the realism measures. 'vs other "
            f"real digits': FD / KID against test digits {args.images}-{2 * args.images - 1}, which nothing restores "
            f"(against the measured digits FD / KID also reward fidelity: benchmarks/realism_floor.py). s / image: a separate timing pass, batch "
            f"{args.time_batch} for every method, median of {args.repeats} runs after {args.warmup} warm-up, "
            f"{device_description(torch.device('cpu'))}, {os.cpu_count()} cores, load average {load:.1f} at the end of the run (the run itself counts 1); "
            f"RED-Diff timed over {args.time_steps} steps per run and scaled to N steps (seconds per step x N). "
            f"Bootstrap: paired over the images, {args.resamples} resamples, 95% percentile intervals of DAVI minus "
            f"RED-Diff and of DAVI minus the real-digit floor (FD and KID recomputed on each resampled set as a whole, per seed, "
            f"then averaged; the reference resampled with the same indices).")
    publish(Path(args.out) / "compare.json", {"command": command_line("compare.py"), "head": head, "images": args.images, "seeds": args.seeds,
                                       **data, "bootstrap": boot, "timing": timing,
                                       "tuning": {k: {**{x: v[x] for x in ("lr", "lam", "interior", "widenings",
                                                                           "lrs", "lams", "train_images", "steps")},
                                                      "train_psnr": next(g["psnr"] for g in v["grid"] if
                                                                         (g["lr"], g["lam"]) == (v["lr"], v["lam"])),
                                                      # the realism-favouring corner of the same grid, for context
                                                      "best_fd": min(({x: g[x] for x in ("lr", "lam", "psnr",
                                                                                         "classifier_fd", "kid")}
                                                                      for g in v["grid"]),
                                                                     key=lambda g: g["classifier_fd"])}
                                                  for k, v in tunings.items() if v is not None}},
            render_compare_md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--solve", action="store_true", help="compute (or resume) the cached RED-Diff work, no report")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    p.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    p.add_argument("--steps", nargs="*", type=int, default=list(STEPS), help="RED-Diff step counts to solve")
    p.add_argument("--mapper", nargs="*", default=[], metavar="TASK=PATH", help="a mapper export other than the shipped one")
    p.add_argument("--tune-images", type=int, default=32, help="train digits the RED-Diff grid is scored on")
    p.add_argument("--max-widenings", type=int, default=4)
    p.add_argument("--chunk", type=int, default=50, help="images per cached RED-Diff chunk")
    p.add_argument("--time-batch", type=int, default=50)
    p.add_argument("--time-steps", type=int, default=5, help="RED-Diff steps per timed run")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--grid-steps", type=int, default=GRID_STEPS, help="RED-Diff steps of the tuning grid")
    p.add_argument("--runs", default=str(ROOT / "runs" / "compare"))
    p.add_argument("--out", default=str(RESULTS), help="folder for compare.json, compare_grid.json and the .md")
    args = p.parse_args()
    for m in args.mapper:
        task, _, path = m.partition("=")
        if task not in TASKS or not path:
            raise SystemExit(f"error: --mapper {m!r}: expected TASK=PATH with TASK one of {', '.join(TASKS)}")
    if args.images < 2 or args.chunk < 1:
        raise SystemExit("error: --images must be >= 2 and --chunk >= 1")
    if args.solve:
        solve(args)
    else:
        report(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
