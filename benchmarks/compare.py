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
from common import RESULTS, ROOT, command_line, log, publish, span, table
from davi.builders import red_diff_settings
from davi.cli.common import run_cli
from davi.eval.evaluate import markdown_table
from davi.eval.tasks import DIGIT_TASKS as TASKS
from davi.eval.tasks import TRAIN_NOISE_SEED, score_digit_restorations
from davi.eval.tuning import GRID_LAMS, GRID_LRS  # the starting 3 x 3 grid (widened until interior)

SEEDS = (0, 1, 2)
STEPS = (1000, 100)
GRID_STEPS = 100
PRIOR_SAMPLE_SEED = 0


def method_name(steps: int) -> str:
    return f"red_diff_{steps}"


# ----------------------------------------------------------------------------------------------
# the tasks' data
# ----------------------------------------------------------------------------------------------
class Task:
    """A task (davi.eval.tasks.DigitTask) with this run's test blocks, measurements and cache folder."""

    def __init__(self, name: str, args):
        from davi.eval.tasks import DigitTask
        from davi.io.chunks import digest

        self.digits = DigitTask.load(name, args.images)
        self.name, self.args, self.cfg, self.operator = name, args, self.digits.config, self.digits.operator
        # the measured digits; an independent realism reference; a third real set, scored as the floor
        self.x0, self.independent, self.real = self.digits.test_blocks(3)
        self.y = self.digits.measure(self.x0)  # noise seed 0
        self.digest = digest(self.y)
        self.runs = Path(args.runs) / name

    @property
    def prior(self):
        return self.digits.prior

    def red_diff_config(self, steps: int, lr: float, lam: float):
        return self.digits.red_diff_config(steps, lr, lam)

    def red_diff_key(self, steps: int, lr: float, lam: float, seed: int, y) -> dict:
        """What a cached RED-Diff result depends on (its measurements by digest)."""
        from davi.io.chunks import digest

        return {"version": 1, "task": self.name, "measurements": digest(y), "steps": steps, "lr": lr, "lam": lam,
                "seed": seed, "red_diff": self.red_diff_config(steps, lr, lam).__dict__,
                "prior": self.prior.digest or self.prior.identity}


# ----------------------------------------------------------------------------------------------
# RED-Diff's lr / lambda grid on train digits (davi.eval.tuning), each point cached
# ----------------------------------------------------------------------------------------------
def grid_point(task: Task, xt, yt, lr: float, lam: float, compute: bool) -> dict | None:
    """Scores of RED-Diff-100 at (lr, lam) on the tuning digits, cached in runs/compare/<task>/grid/."""
    from davi.eval.tuning import red_diff_scores
    from davi.io.atomic import write_json

    key = task.red_diff_key(task.args.grid_steps, lr, lam, 0, yt)
    path = task.runs / "grid" / f"lr{lr:g}_lam{lam:g}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["scores"]
    if not compute:
        return None
    settings = {k: v for k, v in red_diff_settings(task.cfg.red_diff).items() if k not in ("steps", "lr", "lam")}
    scores = red_diff_scores(task.prior, task.operator, xt, yt, lr, lam, task.args.grid_steps,
                             desc=f"grid {task.name} lr={lr:g} lam={lam:g}", **settings)
    write_json(path, {"key": key, "scores": scores})
    log(f"grid {task.name} lr={lr:g} lam={lam:g}: {json.dumps(scores)}")
    return scores


def tune(task: Task, compute: bool) -> dict | None:
    """The widened grid and its interior choice, or None while a point is not computed (report)."""
    from davi.eval.tuning import search_summary, widen_until_interior

    xt = task.digits.train_digits(task.args.tune_images)
    yt = task.digits.measure(xt, TRAIN_NOISE_SEED)
    found = widen_until_interior(
        lambda lr, lam: grid_point(task, xt, yt, lr, lam, compute), GRID_LRS, GRID_LAMS,
        max_widenings=task.args.max_widenings,
        on_widen=lambda lrs, lams: log(f"grid {task.name}: best at an edge, widened to lr {lrs} x lam {lams}"))
    if found is None:
        return None
    return search_summary(found, train_images=task.args.tune_images, steps=task.args.grid_steps)


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
def mapper_folder(task: Task, args) -> Path:
    return task.digits.mapper_folder(dict(m.split("=", 1) for m in args.mapper))


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
    """Paired-bootstrap intervals (davi.eval.paired_bootstrap) of DAVI minus each RED-Diff: PSNR, and FD /
    KID against the measured digits and against the independent ones; and of DAVI minus the real-digit
    floor against the independent ones (an interval holding 0 there: DAVI is as real as real digits)."""
    from davi.eval.paired_bootstrap import psnr_differences, realism_differences
    from davi.models.classifier import classifier_features, load_classifier

    red = {k: v for k, v in items.items() if k != "davi"}
    measured, independent, floor = (classifier_features(load_classifier(), x).numpy()
                                    for x in (task.x0, task.independent, task.real))
    base, feats, n = items["davi"]["feats"], {k: v["feats"] for k, v in red.items()}, args.resamples
    fd_ind, kid_ind = realism_differences(base, {**feats, "real_digits": floor[:, None]}, independent, resamples=n)
    seeds, boot = rows["davi"]["seeds"], {}
    if red:  # (none restored here: the floor's interval alone)
        psnr_i = psnr_differences(items["davi"]["psnr"], {k: v["psnr"] for k, v in red.items()}, resamples=n)
        fd_i, kid_i = realism_differences(base, feats, measured, resamples=n)
        boot = {k: {"psnr": psnr_i[k].as_dict(), "classifier_fd": fd_i[k].as_dict(), "kid": kid_i[k].as_dict(),
                    "fd_independent": fd_ind[k].as_dict(), "kid_independent": kid_ind[k].as_dict(),
                    "seeds": [seeds, rows[k]["seeds"]]} for k in red}
    boot["real_digits"] = {"fd_independent": fd_ind["real_digits"].as_dict(),
                           "kid_independent": kid_ind["real_digits"].as_dict(), "seeds": [seeds, 1]}
    return boot


CARRIED = ("carried from the published benchmarks/results/compare.json: this checkout has no cached restorations "
           "(runs/compare is not in git; `--solve` recomputes them)")


def published_results(args) -> dict:
    """The compare.json already in ``--out`` when it measured the same ``--images`` (else {})."""
    path = Path(args.out) / "compare.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    return data if data.get("images") == args.images else {}


def carry_rows(task: Task, rows: dict, published: dict) -> dict:
    """Put into ``rows`` the RED-Diff and prior rows this checkout's cache cannot give but ``published`` (the last
    compare.json, same images and y) has: they do not depend on the mapper. Returns their bootstrap intervals against
    DAVI, kept only while DAVI is the mapper they were measured against (none otherwise: no per-image results)."""
    old, old_boot = published.get(task.name, {}), published.get("bootstrap", {}).get(task.name, {})
    if not abs(old.get("lift", {}).get("psnr", float("nan")) - rows["lift"]["psnr"]) < 1e-4:
        return {}  # other measurements (lift(y) is deterministic in y): nothing carries over
    # the same mapper: its weights' digest (a file from before digests were recorded keeps no interval)
    keep_boot = old.get("davi", {}).get("mapper", {}).get("digest") == rows["davi"]["mapper"]["digest"]
    boot = {}
    for key in (*(method_name(s) for s in task.args.steps), "prior_ddim50"):
        if key in rows or key not in old:
            continue
        rows[key] = {**{k: v for k, v in old[key].items() if k not in ("s_per_image", "time_vs_davi")},
                     "carried": CARRIED}
        if keep_boot and key in old_boot:
            boot[key] = {**old_boot[key], "carried": CARRIED}
    return boot


def report_task(task: Task, tuning: dict | None, prior_x, args, published: dict) -> tuple[dict, dict, dict]:
    """(rows {method: metrics}, bootstrap intervals, timing) for one task; rows the cache lacks carried from
    ``published`` (carry_rows)."""
    from davi.models.classifier import classifier_realism, load_classifier, sample_quality
    from davi.eval.evaluate import run_method
    from davi.io.export import load_export
    from davi.models.prior import safetensors_digest
    from davi.solvers.methods import DaviMethod, LiftMethod, RedDiffMethod

    folder = mapper_folder(task, args)
    mapper, card, _ = load_export(folder)
    davi_method = DaviMethod(mapper, task.operator)
    rows, items = {}, {}
    lifted = run_method(LiftMethod(task.operator), task.y, args.time_batch)[0]
    rows["lift"], _ = score_digit_restorations([lifted], task.x0, task.independent)
    rows["davi"], items["davi"] = score_digit_restorations(
        [run_method(davi_method, task.y, args.time_batch, seed=s)[0] for s in args.seeds], task.x0, task.independent)
    rows["davi"]["mapper"] = {"folder": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder),
                              "steps": card.get("steps"), "digest": safetensors_digest(folder)}
    timed = {"lift": (LiftMethod(task.operator), 1), "davi": (davi_method, 1)}
    if tuning is not None:
        timed["red_diff"] = (RedDiffMethod(task.prior, task.operator,
                                           **red_diff_settings(task.red_diff_config(args.time_steps, tuning["lr"], tuning["lam"]))), args.time_steps)
        for steps in args.steps:
            done = {s: o for s in args.seeds if (o := red_diff(task, steps, s, tuning, compute=False)) is not None}
            if done:
                name = method_name(steps)
                rows[name], items[name] = score_digit_restorations(list(done.values()), task.x0, task.independent)
                rows[name].update(lr=tuning["lr"], lam=tuning["lam"], seed_ids=list(done))
    carried_boot = carry_rows(task, rows, published)
    seconds = time_methods(task, timed, args)
    timing = {"lift": seconds["lift"], "davi": seconds["davi"]}
    if "red_diff" in seconds:
        timing["red_diff_per_step"] = seconds["red_diff"]
        for steps in args.steps:
            timing[method_name(steps)] = seconds["red_diff"] * steps
    for name, row in rows.items():
        if "carried" not in row:
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
    boot = {**bootstrap(task, rows, items, args), **carried_boot}
    log(f"{task.name}: " + json.dumps({k: {m: round(v, 4) for m, v in r.items() if isinstance(v, float)}
                                       for k, r in rows.items()}))
    return rows, boot, timing


def report(args) -> None:
    import torch

    from davi.io.atomic import write_json
    from davi.eval.timing import device_description
    from davi.models.classifier import load_classifier, sample_quality

    data, boot, tunings, timing = {}, {}, {}, {}
    prior_x, ref_conf = None, None
    published = published_results(args)
    for k, name in enumerate(args.tasks):
        task = Task(name, args)
        if k == 0:
            prior_x = prior_samples(task, compute=False)
            ref_conf = sample_quality(load_classifier(), task.x0)["confidence"]
        tunings[name] = tune(task, compute=False)
        # without the grid's cache, the published choice still finds RED-Diff's cache and times it
        tuning = tunings[name] or published.get("tuning", {}).get(name)
        data[name], boot[name], timing[name] = report_task(task, tuning, prior_x, args, published)
    load = os.getloadavg()[1]  # the last 5 minutes: the timing passes, on a busy or an idle machine
    grid_path = Path(args.out) / "compare_grid.json"
    write_json(grid_path, {**(json.loads(grid_path.read_text()) if grid_path.is_file() else {}),
                           "command": command_line("compare.py"), **{k: v for k, v in tunings.items() if v is not None}})
    carried = any("carried" in r for rows in data.values() for r in rows.values())
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
            f"then averaged; the reference resampled with the same indices)."
            + (" Rows marked carried: from the compare.json this run replaced (same images and measurements; RED-Diff "
               "and the prior's samples do not depend on the mapper), as this checkout has no cache of their "
               "restorations; their intervals against DAVI are kept only while DAVI is the same mapper, and RED-Diff "
               "is timed again beside DAVI." if carried else ""))
    publish(Path(args.out) / "compare.json", {"command": command_line("compare.py"), "head": head, "images": args.images, "seeds": args.seeds,
                                       **data, "bootstrap": boot, "timing": timing,
                                       "tuning": tuning_summaries(tunings, published)},
            render_compare_md)


def tuning_summaries(tunings: dict, published: dict) -> dict:
    """compare.json's ``tuning``: per task the grid's choice (or, without the grid's cache, the published one)."""
    out = {k: v for k, v in published.get("tuning", {}).items() if tunings.get(k) is None and k in tunings}
    for k, v in tunings.items():
        if v is None:
            continue
        out[k] = {**{x: v[x] for x in ("lr", "lam", "interior", "widenings", "lrs", "lams", "train_images", "steps")},
                  "train_psnr": next(g["psnr"] for g in v["grid"] if (g["lr"], g["lam"]) == (v["lr"], v["lam"])),
                  # the realism-favouring corner of the same grid, for context
                  "best_fd": min(({x: g[x] for x in ("lr", "lam", "psnr", "classifier_fd", "kid")} for g in v["grid"]),
                                 key=lambda g: g["classifier_fd"])}
    return out


# ----------------------------------------------------------------------------------------------
# the tables (compare.json -> Markdown; benchmarks/readme_tables.py puts them in the documents)
# ----------------------------------------------------------------------------------------------
COMPARE_TASKS = ("sr4", "deblur", "box")
COMPARE_METHODS = {"lift": "lift(y)", "davi": "DAVI", "red_diff_1000": "RED-Diff-1000", "red_diff_100": "RED-Diff-100",
                   "prior_ddim50": "prior's own samples (DDIM-50)", "real_digits": "other real digits (the floor)"}
COMPARE_RED_DIFF = ("red_diff_1000", "red_diff_100")
COMPARE_COLUMNS = [("task", "task", "{}"), ("method", "method", "{}"), ("seeds", "seeds", "{}"),
                   ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                   ("classifier_fd", "classifier FD", "{:.2f}"), ("kid", "KID (± std over subsets)", "{}"),
                   ("fd_independent", "FD vs other real digits", "{:.2f}"),
                   ("kid_independent", "KID vs other real digits", "{}"),
                   ("confidence", "confidence", "{:.3f}"), ("nfe", "network evals / image", "{}"),
                   ("s_per_image", "s / image (CPU)", "{:.4g}"), ("ratio", "time / DAVI's", "{}")]


def _red_diff_name(data: dict, task: str, key: str) -> str:
    t = data.get("tuning", {}).get(task)
    return COMPARE_METHODS[key] + (f" (lr={t['lr']:g}, lam={t['lam']:g})" if t else "")


@table("compare", "compare.json")
def render_compare(data: dict) -> str:
    """benchmarks/compare.py: {task: {method: metrics}}; a tuned RED-Diff without results yet is a
    'pending' row with its timing, so the speed figures show before the slow runs finish."""
    rows = []
    for task in COMPARE_TASKS:
        timing = data.get("timing", {}).get(task, {})
        for key in COMPARE_METHODS:
            r = data.get(task, {}).get(key)
            name = _red_diff_name(data, task, key) if key in COMPARE_RED_DIFF else COMPARE_METHODS[key]
            if r is None:
                if key in COMPARE_RED_DIFF and key in timing:
                    rows.append({"task": task, "method": name, "seeds": 0, "psnr": "pending",
                                 "nfe": int(key.rsplit("_", 1)[1]), "s_per_image": timing[key],
                                 "time_vs_davi": timing[key] / timing["davi"]})
                continue
            kid = f"{r['kid']:.3f} ± {r['kid_std']:.3f}" if "kid" in r else ""
            kid_ind = f"{r['kid_independent']:.3f} ± {r['kid_std_independent']:.3f}" if "kid_independent" in r else ""
            rows.append({**r, "task": task, "method": name, "kid": kid, "kid_independent": kid_ind})
    for r in rows:
        if "time_vs_davi" in r:
            x = r["time_vs_davi"]
            r["ratio"] = f"{x:,.0f}x" if x >= 10 else (f"{x:.2g}x" if x >= 0.01 else "< 0.01x")
    # results from before the independent reference have no such columns: leave them out
    columns = [c for c in COMPARE_COLUMNS if not c[0].endswith("_independent") or any(r.get(c[0]) for r in rows)]
    return markdown_table(rows, columns)


def _ci(interval: dict, scale: float = 1.0, fmt: str = "{:+.2f}") -> str:
    e, lo, hi = (scale * interval[k] for k in ("estimate", "low", "high"))
    star = "" if lo <= 0 <= hi else "*"
    return f"{fmt.format(e)} [{fmt.format(lo)}, {fmt.format(hi)}]{star}"


@table("compare_bootstrap", "compare.json")
def render_compare_bootstrap(data: dict) -> str:
    """Paired-bootstrap 95% intervals of DAVI minus each RED-Diff, and minus the real-digit floor where
    compare.json has it (* = the interval excludes 0)."""
    rows = []
    for task in COMPARE_TASKS:
        for key, b in data.get("bootstrap", {}).get(task, {}).items():
            rows.append({"task": task, "vs": f"DAVI - {COMPARE_METHODS.get(key, key)}", "seeds": f"{b['seeds'][0]} vs {b['seeds'][1]}",
                         **{c: _ci(b[k], fmt=f) for c, k, f in (("psnr", "psnr", "{:+.2f}"), ("fd", "classifier_fd", "{:+.2f}"),
                                                                ("kid", "kid", "{:+.3f}"), ("fd_ind", "fd_independent", "{:+.2f}"),
                                                                ("kid_ind", "kid_independent", "{:+.3f}")) if k in b}})
    columns = [("task", "task", "{}"), ("vs", "difference", "{}"), ("seeds", "seeds", "{}"), ("psnr", "PSNR (dB)", "{}"),
               ("fd", "classifier FD", "{}"), ("kid", "KID (whole set)", "{}"),
               ("fd_ind", "FD vs other real digits", "{}"), ("kid_ind", "KID vs other real digits", "{}")]
    return markdown_table(rows, [c for c in columns if not c[0].endswith("_ind") or any(c[0] in r for r in rows)])


def _realism_judgement(data: dict, task: str, measured: list) -> tuple[str, str] | None:
    """("met" | "tie" | "not met", why) from the bootstrap intervals against the independent digits:
    met if DAVI's FD and KID are lower than every RED-Diff's with intervals excluding 0, not met if
    any interval shows DAVI worse, a tie otherwise (the images cannot tell the two apart). None
    when compare.json has no such intervals (older results: the point estimates decide)."""
    boot = data.get("bootstrap", {}).get(task, {})
    if not all("fd_independent" in boot.get(k, {}) for k in measured):
        return None
    intervals = [boot[k][m] for k in measured for m in ("fd_independent", "kid_independent")]
    if any(i["low"] > 0 for i in intervals):
        judgement = "not met"
    elif all(i["high"] < 0 for i in intervals):
        judgement = "met"
    else:
        judgement = "tie"
    why = "95% intervals of the differences " + ("include 0" if judgement == "tie" else "exclude 0")
    floor = boot.get("real_digits")
    if floor and all(floor[m]["low"] <= 0 for m in ("fd_independent", "kid_independent")):
        why += "; DAVI as real as real digits: its intervals against the floor include 0 or lie below"
    return judgement, why


def _compare_goals(data: dict, task: str) -> dict:
    rows, timing = data.get(task, {}), data.get("timing", {}).get(task, {})
    ours = rows.get("davi")
    measured = [k for k in COMPARE_RED_DIFF if k in rows]
    missing = [COMPARE_METHODS[k] for k in COMPARE_RED_DIFF if k not in rows]
    verdict = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    out = {"task": task}
    if ours and measured:
        # realism alone: against real digits nothing restores, where compare.json has them (benchmarks/realism_floor.py)
        independent = all("fd_independent" in rows[k] for k in ("davi", *measured))
        fd_key, kid_key = ("fd_independent", "kid_independent") if independent else ("classifier_fd", "kid")
        fd = min(rows[k][fd_key] for k in measured)
        kid = min(rows[k][kid_key] for k in measured)
        best = max(rows[k]["psnr"] for k in measured)
        # with a RED-Diff row still pending, a miss is final (it must beat every setting), a pass is not
        partial = lambda ok: ("met so far" if ok else "**not met**") + f" ({', '.join(missing)} pending)"  # noqa: E731
        judge = partial if missing else verdict
        point = (f"FD {ours[fd_key]:.2f} vs {fd:.2f}, KID {ours[kid_key]:.3f} vs {kid:.3f}"
                 + (" (vs other real digits)" if independent else ""))
        judged = _realism_judgement(data, task, measured) if independent else None
        if judged is None and any("carried" in rows[k] for k in measured):  # a point comparison would overclaim
            out["realism"] = (point + ": pending (no intervals against this mapper: RED-Diff's restorations are not "
                              "cached in this checkout; `compare.py --solve` recomputes them)")
        elif judged is None:
            out["realism"] = point + ": " + judge(ours[fd_key] < fd and ours[kid_key] < kid)
        elif judged[0] == "tie":  # neither a pass nor a miss, pending or not
            out["realism"] = f"{point}: **tie** ({judged[1]})" + (f" ({', '.join(missing)} pending)" if missing else "")
        else:
            out["realism"] = f"{point}: {judge(judged[0] == 'met')}; {judged[1]}"
        out["psnr"] = f"{ours['psnr'] - best:+.2f} dB: " + judge(ours["psnr"] >= best - 1)
    else:
        out["realism"] = out["psnr"] = "pending (no RED-Diff result yet)"
    for key, goal in (("red_diff_1000", 500), ("red_diff_100", 50)):
        out[key] = (f"{timing[key] / timing['davi']:.0f}x: " + verdict(timing[key] / timing["davi"] >= goal)
                    if key in timing else "not timed")
    return out


@table("compare_goals", "compare.json")
def render_compare_goals(data: dict) -> str:
    """Issue 12's goals per task: realism from the bootstrap intervals against the independent digits where
    compare.json has them (else the point estimates, seed means), PSNR from the seed means, speed from the timing pass."""
    return markdown_table([_compare_goals(data, t) for t in COMPARE_TASKS if t in data], [
        ("task", "task", "{}"), ("realism", "realism: DAVI's FD and KID below every RED-Diff's", "{}"),
        ("psnr", "PSNR within 1 dB of the best RED-Diff", "{}"), ("red_diff_1000", ">= 500x faster than RED-Diff-1000", "{}"),
        ("red_diff_100", ">= 50x faster than RED-Diff-100", "{}")])


@table("compare_grid", "compare.json")
def render_compare_grid(data: dict) -> str:
    """RED-Diff's tuning per task (the whole grid: benchmarks/results/compare_grid.json)."""
    rows = [{"task": t, "lrs": ", ".join(f"{v:g}" for v in g["lrs"]), "lams": ", ".join(f"{v:g}" for v in g["lams"]),
             "choice": f"lr={g['lr']:g}, lam={g['lam']:g}", "interior": "yes" if g["interior"] else "**no**",
             "widenings": g["widenings"], "train_psnr": g["train_psnr"],
             "best_fd": (f"lr={g['best_fd']['lr']:g}, lam={g['best_fd']['lam']:g}: FD {g['best_fd']['classifier_fd']:.2f}, "
                         f"{g['best_fd']['psnr']:.2f} dB" if "best_fd" in g else "")}
            for t, g in data.get("tuning", {}).items()]
    return markdown_table(rows, [("task", "task", "{}"), ("lrs", "lr grid", "{}"), ("lams", "lambda grid", "{}"),
                                 ("widenings", "widenings", "{}"), ("choice", "chosen (best PSNR)", "{}"),
                                 ("interior", "interior", "{}"), ("train_psnr", "train PSNR (dB)", "{:.2f}"),
                                 ("best_fd", "lowest train classifier FD in the grid (not chosen)", "{}")])


@table("compare_status", "compare.json", inline=True)
def render_compare_status(data: dict) -> str:
    """How many seeds each RED-Diff figure averages so far, per task."""
    parts = []
    for key in COMPARE_RED_DIFF:
        done = [f"{data.get(t, {}).get(key, {}).get('seeds', 0)} on {t}" for t in COMPARE_TASKS if t in data]
        parts.append(f"{COMPARE_METHODS[key]} {', '.join(done)}")
    return (f"{'; '.join(parts)} (seeds of {len(data['seeds'])}, {data['images']} test images each; DAVI averages "
            f"{max((data[t]['davi']['seeds'] for t in COMPARE_TASKS if t in data), default=0)} seeds)")


@table("compare_head", "compare.json", inline=True)
def render_compare_head(data: dict) -> str:
    """The settings paragraph of benchmarks/compare.py's run (images, seeds, timing, bootstrap)."""
    return data["head"]


@table("compare_verdict", "compare.json", inline=True)
def render_compare_verdict(data: dict) -> str:
    """One sentence per goal: on how many tasks it is met, missed or still pending."""
    goals = [_compare_goals(data, t) for t in COMPARE_TASKS if t in data]
    parts = []
    for key, what in (("realism", "better realism (FD and KID) than every RED-Diff setting"),
                      ("psnr", "PSNR within 1 dB of the best RED-Diff"),
                      ("red_diff_1000", ">= 500x faster than RED-Diff-1000"), ("red_diff_100", ">= 50x faster than RED-Diff-100")):
        met = [g["task"] for g in goals if g[key].endswith(": met") or ": met; " in g[key]]
        missed = [g["task"] for g in goals if "**not met**" in g[key]]
        tied = [g["task"] for g in goals if "**tie**" in g[key]]
        pending = [g["task"] for g in goals if g["task"] not in met + missed + tied]
        text = f"{what}: met on {len(met)} of {len(goals)} tasks" + (f" ({', '.join(met)})" if met else "")
        text += f", **missed** on {', '.join(missed)}" if missed else ""
        text += f", a **tie** (no difference the test digits resolve) on {', '.join(tied)}" if tied else ""
        text += f", pending on {', '.join(pending)} (RED-Diff not finished, or no intervals against this mapper yet)" if pending else ""
        parts.append(text)
    return "; ".join(parts)


def render_compare_md(data: dict) -> str:
    """benchmarks/compare.py's results .md: the table, the bootstrap intervals, the goals, the tuning."""
    return "\n\n".join([render_compare(data), render_compare_bootstrap(data), render_compare_goals(data),
                         render_compare_grid(data)])


def _compare_timing(data: dict, key: str, ratio: bool, fmt: str) -> str:
    """The span over tasks of a RED-Diff's seconds per image (or its ratio to DAVI's), tasks named."""
    timing = {t: tm for t, tm in data.get("timing", {}).items() if key in tm}
    if not timing:
        return "(not timed yet: RED-Diff is not tuned)"
    values = [tm[key] / tm["davi"] if ratio else tm[key] for tm in timing.values()]
    return span(values, fmt) + ("x" if ratio else " s") + ("" if len(timing) == len(COMPARE_TASKS) else f" ({', '.join(timing)} only)")


@table("compare_red_diff_1000_seconds", "compare.json", inline=True)
def render_compare_red_diff_1000_seconds(data: dict) -> str:
    return _compare_timing(data, "red_diff_1000", False, "{:.1f}")


@table("compare_speedup_1000", "compare.json", inline=True)
def render_compare_speedup_1000(data: dict) -> str:
    return _compare_timing(data, "red_diff_1000", True, "{:.0f}")


@table("compare_speedup_100", "compare.json", inline=True)
def render_compare_speedup_100(data: dict) -> str:
    return _compare_timing(data, "red_diff_100", True, "{:.0f}")


HEADLINE_TASKS = {"sr4": "SR x4", "deblur": "deblur", "box": "box inpainting"}
HEADLINE_METHODS = ("davi", "red_diff_100", "red_diff_1000")
HEADLINE_COLUMNS = [("task", "task", "{}"), ("method", "method", "{}"), ("psnr", "PSNR (dB)", "{}"),
                    ("fd", "realism: FD vs other real digits (lower: more real)", "{}"),
                    ("verdict", "DAVI vs this (FD and KID, 95% intervals)", "{}"),
                    ("seconds", "s / image (CPU)", "{}")]


def _headline_verdict(data: dict, task: str, key: str) -> str:
    """DAVI against ``key`` on realism: better / worse when the intervals of DAVI minus it (FD and KID vs
    other real digits) both exclude 0 that way, else a tie; '' without intervals (older results)."""
    boot = data.get("bootstrap", {}).get(task, {}).get(key, {})
    if not all(m in boot for m in ("fd_independent", "kid_independent")):
        return ""
    intervals = [boot[m] for m in ("fd_independent", "kid_independent")]
    if key == "real_digits":
        return "as real as real digits" if all(i["low"] <= 0 for i in intervals) else "above the real-digit floor"
    word = ("DAVI more real" if all(i["high"] < 0 for i in intervals)
            else "DAVI less real" if any(i["low"] > 0 for i in intervals) else "tie")
    fd = boot["fd_independent"]
    return f"{word} (FD {fd['estimate']:+.2f}, [{fd['low']:+.2f}, {fd['high']:+.2f}])"


def _headline_row(data: dict, task: str, key: str) -> dict | None:
    r, timing = data.get(task, {}).get(key), data.get("timing", {}).get(task, {})
    if r is None and key not in timing:
        return None
    row = {"task": HEADLINE_TASKS[task], "method": COMPARE_METHODS[key], "psnr": "pending", "fd": "", "verdict": ""}
    if r is not None:
        fd_key = "fd_independent" if "fd_independent" in r else "classifier_fd"
        row.update(psnr=f"{r['psnr']:.2f}", fd=f"{r[fd_key]:.2f}" + ("" if fd_key == "fd_independent" else
                                                                       " (vs the measured digits)"),
                   verdict=_headline_verdict(data, task, "real_digits" if key == "davi" else key))
        if not row["verdict"] and "carried" in r:
            row["verdict"] = "pending (its restorations are not cached here: no interval against this mapper)"
        floor = data[task].get("real_digits", {}).get("fd_independent")
        if key == "davi" and row["verdict"] and floor is not None:
            row["verdict"] += f" (their own FD: {floor:.2f})"
    if key in timing:
        ratio = "" if key == "davi" else f" ({timing[key] / timing['davi']:,.0f}x DAVI's)"
        row["seconds"] = f"{timing[key]:.3g}" + ratio
    return row


@table("headline", "compare.json")
def render_headline(data: dict) -> str:
    """The README's front-page table: per task, DAVI vs RED-Diff-100 vs RED-Diff-1000 (benchmarks/compare.py):
    PSNR, realism (classifier FD against other real digits, which nothing restores; DAVI's verdict from
    the paired-bootstrap intervals where compare.json has them) and CPU seconds per image."""
    rows = [row for task in HEADLINE_TASKS if task in data
            for key in HEADLINE_METHODS if (row := _headline_row(data, task, key)) is not None]
    return markdown_table(rows, HEADLINE_COLUMNS)


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
        if not (Path(path) / "card.json").is_file():  # found here, not after the lift and DAVI rows
            raise SystemExit(f"error: --mapper {m!r}: no export folder (card.json) at {path}")
    if args.images < 2 or args.chunk < 1:
        raise SystemExit("error: --images must be >= 2 and --chunk >= 1")
    if args.solve:
        solve(args)
    else:
        report(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
