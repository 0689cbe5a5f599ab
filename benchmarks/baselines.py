"""The field's baselines (DPS, DiffPIR, DDRM through deepinv) beside DAVI and RED-Diff.

**Posterior leaderboard** (``--leaderboard``, the default): on the analytic priors and tasks of
benchmarks/posterior.py (a Gaussian fitted to 8x8 digits 0-9 and a 3-component mixture on digits 0, 1, 7;
deblur / SR x2 / SR x4 / box / random inpainting at sigma_y 0.05; the same 6 test measurements per task,
the mixture's the most ambiguous ones, and the same 32 exact posterior draws per y as truths), every
sampling baseline draws ``--samples`` restorations per y and is scored against the EXACT posterior with
posterior.py's estimators: ``mean_err`` ||m_hat - m|| / ||m||, ``var_ratio`` tr(C_hat) / tr(C) (and the
top-5 eigen-direction range), ``cov90`` (how often an exact draw falls in the samples' central 90%
per-pixel interval), ``mode_dev`` (mixture: max |sample share - exact weight| over components).
DPS / DiffPIR (zeta 0.1: stochastic) / DDRM (eta 0.85) run at deepinv 0.5.0's defaults through
davi.baselines (their samples NOT clamped, like DAVI's and RED-Diff's there); a batch of ``--chunk``
samples per y shares one seed. DAVI sampler / paired, RED-Diff (8 seeds per y) and the exact posterior's
own samples are read from benchmarks/results/posterior.json (same y, same truths; nothing retrained).

**Digits** (``--digits 200``, issue 31 items 3-4): for each of ``--digit-tasks`` (sr4 / deblur / box at
sigma_y 0.05) the first N held-out test digits of benchmarks/compare.py and the same y (noise seed 0).
dps / diffpir / ddrm restore them at deepinv's defaults (``<name>_default``) and tuned per task (``<name>``)
on ``--tune-digits`` train digits (noise seed 1, compare.py's) with RED-Diff's rule: best PSNR, the grid
(davi.baselines.methods.TUNING_GRIDS) widened by 3x while the choice is on an edge, stopping at an admissible bound (zeta, eta in [0, 1]).
Restorations run batched, ``--digit-chunk`` digits per deepinv run, one seed per chunk (chunk_seed), and are
cached per chunk; grid points, chunks and the timing pass are cached under ``--work-dir`` (a killed run
resumes). Scores as compare.py's: PSNR, SSIM, classifier FD / KID against the measured digits and against
test digits N..2N-1; a paired bootstrap of DAVI (the shipped mapper, seed 0) minus each. RED-Diff-100 / 1000
rows are copied from compare.json (same digits, same y). Seconds per image: one timing pass, every method
side by side (DPS and RED-Diff timed over a few steps and scaled). ``--report`` computes no baseline work
and publishes what is cached, the rest pending.

    python benchmarks/baselines.py                              # leaderboard (resumable: --work-dir cache)
    python benchmarks/baselines.py --priors gauss --tasks sr4 --samples 64 --out /tmp/b.json   # smoke
    python benchmarks/baselines.py --no-leaderboard --digits 200                   # the digit comparison (hours)
    python benchmarks/baselines.py --no-leaderboard --digits 200 --report          # publish what is cached
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

# one thread for BLAS too (before numpy loads it): the timings are one thread's, and on a shared machine a BLAS
# pool per process oversubscribes the cores (the bootstrap's 128 x 128 eigendecompositions ran 5x slower)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
from common import RESULTS, command_line, log, publish, table

from davi.io.atomic import write_text

torch.set_num_threads(1)
METHODS = ("dps", "diffpir", "ddrm")
# posterior.json keys -> leaderboard method names (DAVI's objectives, RED-Diff, the Monte-Carlo floor)
REUSED = {"": "davi_sampler", ":paired": "davi_paired", ":red-diff-1000": "red_diff_1000", ":exact": "exact"}
ORDER = ("exact", "davi_sampler", "davi_paired", "red_diff_1000", "dps", "diffpir", "ddrm")


# ----------------------------------------------------------------------------------------------
# the leaderboard
# ----------------------------------------------------------------------------------------------
def baseline_samples(method, y: torch.Tensor, n: int, chunk: int, seed: int = 0) -> torch.Tensor:
    """(n, B, D) float64 unclamped samples: ``chunk`` samples per y per deepinv run, run c seeded 1 + seed*1e4 + c."""
    out = []
    for c, start in enumerate(range(0, n, chunk)):
        k = min(chunk, n - start)
        x = method.sample(y.float().repeat(k, 1, 1, 1), 1 + seed * 10_000 + c, clamp=False)
        out.append(x.double().reshape(k, y.shape[0], -1))
    return torch.cat(out)


def leaderboard_entry(figures: dict, seconds: float | None) -> dict:
    return {"mean_err": figures["mean_err"], "var_ratio": figures["var_tr"],
            "var_ratio_top5": [figures["var_top_min"], figures["var_top_max"]],
            "cov90": figures["coverage"]["90"], "mode_dev": figures.get("mode_dev"), "seconds": seconds}


def run_baseline(prior_name: str, task: str, name: str, args, work: Path) -> dict:
    """One (prior, task, method) entry, cached in ``work``."""
    cache = work / f"{prior_name}_{task}_{name}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from davi.analytic.problems import TRUTH_SEED, figures, problem, truth_draws
    from davi.baselines import baseline_method

    prior, op, y, posts = problem(prior_name, task, args.measurements)
    truths = truth_draws(posts, torch.Generator().manual_seed(TRUTH_SEED))  # posterior.py's truths
    method = baseline_method(name, prior, op)
    t0 = time.process_time()
    samples = baseline_samples(method, y, args.samples, args.chunk)
    seconds = time.process_time() - t0
    entry = {**leaderboard_entry(figures(samples, posts, truths), seconds), "nfe": method.nfe_per_sample,
             "settings": {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in method.settings.items()}}
    write_text(cache, json.dumps(entry, indent=1))
    return entry


def reused_entries(posterior: dict, key: str) -> dict:
    """DAVI sampler / paired, RED-Diff and exact for ``key`` = '<prior>/<task>' from posterior.json."""
    out = {}
    for suffix, name in REUSED.items():
        r = posterior.get(key + suffix)
        if r is not None:
            out[name] = {"mean_err": r["mean_err"], "var_ratio": r["var_ratio"],
                         "var_ratio_top5": [r["var_ratio_top5_min"], r["var_ratio_top5_max"]],
                         "cov90": r["coverage"]["90"], "mode_dev": r.get("mode_dev"), "seconds": r.get("seconds"),
                         "from": "posterior.json"}
    return out


def leaderboard(args) -> dict:
    from davi.analytic.problems import DEFAULT_TASKS

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    posterior = json.loads(Path(args.posterior).read_text())
    board = {}
    for prior_name in args.priors:
        for task in args.tasks or DEFAULT_TASKS:
            key = f"{prior_name}/{task}"
            board[key] = reused_entries(posterior, key)
            for name in args.methods:
                t0 = time.time()
                board[key][name] = run_baseline(prior_name, task, name, args, work)
                log(f"{key} {name}: mean_err {board[key][name]['mean_err']:.4f} cov90 {board[key][name]['cov90']:.3f} "
                    f"({time.time() - t0:.0f} s)")
    return board


# ----------------------------------------------------------------------------------------------
# digits: the 200-digit comparison (issue 31, items 3-4)
# ----------------------------------------------------------------------------------------------
DIGIT_TASKS = ("sr4", "deblur", "box")
DIGIT_METHODS = ("diffpir", "ddrm", "dps")  # cheap first: DPS costs ~20x the others per image on CPU
RED_DIFF = ("red_diff_100", "red_diff_1000")  # copied from compare.json (same digits, same y)
DIGIT_ORDER = ("davi", *RED_DIFF, "diffpir", "diffpir_default", "ddrm", "ddrm_default", "dps", "dps_default")
def chunk_seed(start: int, seed: int = 0) -> int:
    """The seed of the one deepinv run restoring the chunk that starts at image ``start``: the library's
    per-image seed of its first image (davi.solvers.methods.image_seeds) + 1, never 0. The whole chunk is drawn
    from it (the batched path, ~10x faster than a run per image), so a restoration depends on its chunk, which
    ``--digit-chunk`` fixes: the same chunking reproduces it, another one draws other samples."""
    from davi.solvers.methods import image_seeds

    return image_seeds(seed, start, 1)[0] + 1


def digit_task(name: str, args):
    """compare.py's digits: the same first N test digits, their y (noise seed 0), the independent block N..2N-1."""
    from davi.eval.tasks import DigitTask

    digits = DigitTask.load(name, args.digits)
    x0, independent = digits.test_blocks(2)
    return SimpleNamespace(name=name, digits=digits, operator=digits.operator, prior=digits.prior, x0=x0,
                           independent=independent, y=digits.measure(x0), red_diff_config=digits.red_diff_config)


def overrides(name: str, params: dict | None, args) -> dict:
    """The settings that differ from deepinv's defaults: tuned ``params`` and the debug ``--dps-steps``."""
    extra = {"num_steps": args.dps_steps} if name == "dps" and args.dps_steps else {}
    return {**(params or {}), **extra}


def restorations(task, name: str, settings: dict, args, compute: bool):
    """``name``'s restorations of the test measurements (N, C, H, W) at ``settings``, in chunks of ``--digit-chunk``
    under <work>/digits/<task>/<name>/<settings>/ (resumable); None in report mode if a chunk is missing."""
    from davi.baselines import baseline_method
    from davi.io.chunks import cached_result, run_in_chunks

    method = baseline_method(name, task.prior, task.operator, **settings)
    folder = Path(args.work_dir) / "digits" / task.name / name / method.slug
    key = lambda a, b: method.cache_key(task.y[a:b], chunk_seed(a))
    if not compute:
        return cached_result(folder, key, len(task.y), args.digit_chunk)
    return run_in_chunks(folder, key, len(task.y), args.digit_chunk,
                         lambda a, b: method.sample(task.y[a:b], chunk_seed(a)).cpu(),
                         on_chunk=lambda a, b, new: log(f"digits {task.name} {name} {method.slug}: {a}-{b} "
                                                        + ("done" if new else "cached")))


def grid_point(task, name: str, params: dict, train: tuple, args, compute: bool) -> dict | None:
    """Scores of ``name`` at ``params`` restoring the train measurements (one run, seed chunk_seed(0)), cached."""
    from davi.baselines import baseline_method
    from davi.eval.metrics import score_restorations
    from davi.io.atomic import write_json

    xt, yt = train
    settings = overrides(name, params, args)
    method = baseline_method(name, task.prior, task.operator, **settings)
    key = method.cache_key(yt, chunk_seed(0))
    path = Path(args.work_dir) / "digits" / task.name / name / "grid" / f"{method.slug}.json"
    if path.is_file() and (cached := json.loads(path.read_text())).get("key") == key:
        return cached["scores"]
    if not compute:
        return None
    t0 = time.time()
    scores = score_restorations(method.sample(yt, chunk_seed(0)).cpu(), xt, explain_absent=False)
    write_json(path, {"key": key, "scores": scores})
    log(f"grid {task.name} {name} {params}: PSNR {scores['psnr']:.2f} ({time.time() - t0:.0f} s)")
    return scores


def tune(task, name: str, args, compute: bool) -> dict | None:
    """``name``'s settings of best train PSNR (bounded_search from TUNING_GRIDS), or None while a point is missing."""
    from davi.baselines.methods import TUNING_BOUNDS, TUNING_GRIDS
    from davi.eval.tasks import TRAIN_NOISE_SEED
    from davi.eval.tuning import bounded_search

    xt = task.digits.train_digits(args.tune_digits)
    train = (xt, task.digits.measure(xt, TRAIN_NOISE_SEED))  # compare.py's tuning noise, apart from the test's 0
    found = bounded_search(lambda params: grid_point(task, name, params, train, args, compute), TUNING_GRIDS[name],
                           TUNING_BOUNDS,
                           max_widenings=args.max_widenings,
                           on_widen=(lambda axes: log(f"grid {task.name} {name}: best at an edge, widened to {axes}"))
                           if compute else None)
    if found is None:
        return None
    default = {k: v for k, v in baseline_defaults(name).items() if k in TUNING_GRIDS[name]}
    rows = found.rows()
    pick = lambda params: next((r for r in rows if all(r[k] == v for k, v in params.items())), {})
    return {"choice": found.choice, "interior": found.interior, "at_bound": list(found.at_bound),
            "widenings": found.widenings, "axes": {k: list(v) for k, v in found.axes.items()},
            "train_digits": args.tune_digits, "train_psnr": pick(found.choice)["psnr"],
            "default": default, "default_train_psnr": pick(default).get("psnr"), "grid": rows}


def baseline_defaults(name: str) -> dict:
    from davi.baselines.methods import DDRM_DEFAULTS, DIFFPIR_DEFAULTS, DPS_DEFAULTS

    return {"dps": DPS_DEFAULTS, "diffpir": DIFFPIR_DEFAULTS, "ddrm": DDRM_DEFAULTS}[name]


DIGIT_STAGES = ("tune", "tuned", "default")


def solve_digits(tasks: dict, args) -> None:
    """All the expensive digit work, cheapest full figures first: DiffPIR and DDRM (tune, tuned, default) on
    every task, the timing pass, then DPS the same way (its grid points ~200 s each, its 200 restorations ~40
    minutes per setting and task on one CPU thread). Every unit is cached: a killed run continues."""
    groups = [[m for m in args.digit_methods if m != "dps"], [m for m in args.digit_methods if m == "dps"]]
    for k, group in enumerate(groups):
        for stage in DIGIT_STAGES:
            if stage not in args.digit_stages:
                continue
            for name in group:
                for task in tasks.values():
                    tuned = tune(task, name, args, compute=True)
                    if stage != "tune":
                        restorations(task, name, overrides(name, tuned["choice"] if stage == "tuned" else {}, args),
                                     args, compute=True)
        if k == 0:
            for task in tasks.values():
                time_digits(task, args, compute=True)
    log("digits: everything is computed")


def davi_method(task):
    """The shipped mapper of the task (davi.eval.tasks.load_shipped) on the task's operator."""
    from davi.eval.tasks import load_shipped
    from davi.solvers.methods import DaviMethod

    return DaviMethod(load_shipped(task.name).mapper, task.operator)


def timed_runs(task, args, compare_json: dict) -> dict:
    """name -> (run(y), factor to the full length). DAVI; DiffPIR and DDRM at full length; DPS over ``--dps-time-steps``
    and RED-Diff (compare.py's tuned lr / lambda) over ``--time-steps`` steps, scaled to their step counts like
    compare.py scales RED-Diff. One timing per baseline serves its default and tuned rows: the tuned settings
    (weights, noise levels) change no step's cost."""
    from davi.baselines import baseline_method
    from davi.builders import red_diff_settings
    from davi.solvers.methods import RedDiffMethod

    seeds = list(range(args.time_batch))
    davi = davi_method(task)
    runs = {"davi": (lambda y: davi(y, seeds, 1), 1.0)}
    for name in DIGIT_METHODS:  # all three, whichever --digit-methods solves: the timing key stays one
        steps = {"num_steps": args.dps_time_steps} if name == "dps" else {}
        method = baseline_method(name, task.prior, task.operator, **steps)
        full = baseline_method(name, task.prior, task.operator, **overrides(name, {}, args)).nfe_per_sample
        runs[name] = (functools.partial(method.sample, seed=1), full / method.nfe_per_sample)
    tuning = compare_json.get("tuning", {}).get(task.name)
    if tuning is not None:
        red = RedDiffMethod(task.prior, task.operator, **red_diff_settings(
            task.red_diff_config(args.time_steps, tuning["lr"], tuning["lam"])))
        for key in RED_DIFF:
            runs[key] = (lambda y: red(y, seeds, 1), int(key.rsplit("_", 1)[1]) / args.time_steps)
    return runs


def time_digits(task, args, compute: bool, compare_json: dict | None = None) -> dict | None:
    """Seconds per image of every method side by side: one batch of ``--time-batch`` test measurements, the median
    of ``--repeats`` runs after ``--warmup``, then scaled (timed_runs). Cached in <work>/digits/<task>/timing.json
    (the report reads it; None there while it is missing)."""
    import os

    from davi.eval.timing import device_description, median_time
    from davi.io.atomic import write_json

    compare_json = compare_json if compare_json is not None else json.loads(Path(args.compare).read_text())
    key = {"version": 1, "batch": args.time_batch, "warmup": args.warmup, "repeats": args.repeats,
           "dps_time_steps": args.dps_time_steps, "time_steps": args.time_steps, "dps_steps": args.dps_steps}
    path = Path(args.work_dir) / "digits" / task.name / "timing.json"
    if path.is_file() and (cached := json.loads(path.read_text())).get("key") == key:
        return cached["seconds"]
    if not compute:
        return None
    y, seconds = task.y[: args.time_batch], {}
    for name, (run, scale) in timed_runs(task, args, compare_json).items():
        seconds[name] = median_time(lambda run=run: run(y), torch.device("cpu"), args.warmup, args.repeats) / len(y) * scale
        log(f"timing {task.name} {name}: {seconds[name]:.4g} s / image" + (f" (x{scale:g} steps)" if scale != 1 else ""))
    seconds["device"] = f"{device_description(torch.device('cpu'))}, load average {os.getloadavg()[1]:.1f}"
    write_json(path, {"key": key, "seconds": seconds})
    return seconds


def red_diff_rows(task, compare_json: dict, args) -> dict:
    """RED-Diff-100 / 1000 from compare.json: the same test digits and y (built by compare.py's own Task; the
    digest is recorded), restorations not cached here (hours to recompute). Left out when this run restores
    another number of digits than compare.json's."""
    from davi.io.chunks import digest

    if compare_json.get("images") != args.digits:
        return {}
    fields = ("psnr", "ssim", "classifier_fd", "kid", "fd_independent", "kid_independent", "kid_std_independent",
              "seeds", "seed_ids", "lr", "lam", "nfe")
    return {k: {**{f: r[f] for f in fields if f in r}, "from": (
                f"benchmarks/results/compare.json (the same {args.digits} test digits and y, digest {digest(task.y)}; "
                f"the mean over its {r.get('seeds')} seed(s))")}
            for k in RED_DIFF if (r := compare_json.get(task.name, {}).get(k)) is not None}


def baseline_rows(task, args, tunings: dict) -> tuple[dict, dict]:
    """(rows, bootstrap items) of each baseline, tuned (``<name>``) and at deepinv's defaults (``<name>_default``),
    from the cache; a missing one is a pending row."""
    from davi.baselines import baseline_method
    from davi.eval.tasks import score_digit_restorations as score_method

    rows, items = {}, {}
    for name in args.digit_methods:
        tuned = tunings.get(name)
        for key, params in ((name, tuned and tuned["choice"]), (f"{name}_default", {})):
            settings = overrides(name, params, args) if params is not None else None
            nfe = baseline_method(name, task.prior, task.operator, **overrides(name, {}, args)).nfe_per_sample
            x = restorations(task, name, settings, args, compute=False) if settings is not None else None
            if x is None:
                train = tuned and tuned["default_train_psnr" if key.endswith("_default") else "train_psnr"]
                rows[key] = {"pending": "tuning" if settings is None else "restorations", "nfe": nfe,
                             "settings": params, **({"train_psnr": train} if train is not None else {})}
                continue
            row, items[key] = score_method([x], task.x0, task.independent)
            rows[key] = {**{k: v for k, v in row.items() if k != "per_seed"}, "nfe": nfe, "settings": params,
                         "tuned": key == name}
    return rows, items


def digit_bootstrap(task, items: dict, compare_json: dict, args) -> dict:
    """Paired-bootstrap 95% intervals of DAVI minus each baseline (FD / KID against the independent digits, PSNR);
    RED-Diff's copied from compare.json (there DAVI averages its seeds 0-2), where this run restores its 200 digits."""
    from davi.eval.paired_bootstrap import psnr_differences, realism_differences
    from davi.models.classifier import classifier_features, load_classifier

    others = {k: v for k, v in items.items() if k != "davi"}
    boot = {}
    if others:
        independent = classifier_features(load_classifier(), task.independent).numpy()
        fd, kid = realism_differences(items["davi"]["feats"], {k: v["feats"] for k, v in others.items()},
                                      independent, resamples=args.resamples)
        ps = psnr_differences(items["davi"]["psnr"], {k: v["psnr"] for k, v in others.items()},
                              resamples=args.resamples)
        boot = {k: {"fd_independent": fd[k].as_dict(), "kid_independent": kid[k].as_dict(), "psnr": ps[k].as_dict()}
                for k in others}
    if compare_json.get("images") == args.digits:
        for k in RED_DIFF:
            if (b := compare_json.get("bootstrap", {}).get(task.name, {}).get(k)) is not None:
                boot[k] = {**{m: b[m] for m in ("fd_independent", "kid_independent", "psnr") if m in b},
                           "from": "benchmarks/results/compare.json (DAVI averaged over seeds 0, 1, 2 there)"}
    return boot


def report_digit_task(task, args, compare_json: dict) -> tuple[dict, dict, dict, dict]:
    """(rows, bootstrap, tunings, timing) of one task from the cache; DAVI restored here (seconds)."""
    from davi.eval.evaluate import run_method
    from davi.eval.tasks import score_digit_restorations as score_method

    tunings = {name: tune(task, name, args, compute=False) for name in args.digit_methods}
    rows, items = {}, {}
    x = run_method(davi_method(task), task.y, args.time_batch, seed=0)[0]  # compare.py's per-image seeds, seed 0
    row, items["davi"] = score_method([x], task.x0, task.independent)
    rows["davi"] = {**{k: v for k, v in row.items() if k != "per_seed"}, "nfe": 1}
    rows.update(red_diff_rows(task, compare_json, args))
    base_rows, base_items = baseline_rows(task, args, tunings)
    rows.update(base_rows)
    items.update(base_items)
    timing = time_digits(task, args, compute=False, compare_json=compare_json)
    for key, row in rows.items():
        seconds = (timing or {}).get(key.removesuffix("_default"))
        row["s_per_image"] = seconds
        row["time_vs_davi"] = seconds / timing["davi"] if seconds is not None else None
    boot = digit_bootstrap(task, items, compare_json, args)
    log(f"digits {task.name}: " + json.dumps({k: {m: round(v, 4) for m, v in r.items() if isinstance(v, float)}
                                              for k, r in rows.items()}))
    return rows, boot, {k: v for k, v in tunings.items() if v is not None}, timing


def digits_head(args) -> str:
    return (f"Digit comparison (issue 31): the first {args.digits} held-out test digits of benchmarks/compare.py, "
            f"the same y (noise seed 0), sigma_y 0.05. DAVI: the shipped mapper, one network evaluation, seed 0 "
            f"(per-image seeds). dps / diffpir / ddrm: deepinv through davi.baselines, tuned per task on "
            f"{args.tune_digits} train digits (noise seed 1; best PSNR, grid widened until interior or at an admissible "
            f"bound); <name>_default: deepinv's defaults. One sample per digit, restored in chunks of {args.digit_chunk} "
            f"digits, each chunk one deepinv run seeded from its start index. RED-Diff-100 / 1000: PSNR, SSIM, FD, KID "
            f"and bootstrap copied from compare.json (same digits and y). FD / KID in the digit classifier's features "
            f"against test digits {args.digits}-{2 * args.digits - 1} (other real digits, nothing restores them). "
            f"Bootstrap: paired over the digits, {args.resamples} resamples, 95% intervals of DAVI minus each. "
            f"s / image: one timing pass, batch {args.time_batch} for every method, median of {args.repeats} after "
            f"{args.warmup} warm-up, CPU, one thread; DPS timed over {args.dps_time_steps} steps and RED-Diff over "
            f"{args.time_steps}, scaled to their step counts.")


def digits_report(tasks: dict, args, old: dict) -> dict:
    """The digit part of baselines.json (``tasks`` merged into ``old``'s): rows, bootstrap, tuning, timing. A run
    with some of the methods (``--digit-methods``) replaces their rows and keeps the others' as they were."""
    compare_json = json.loads(Path(args.compare).read_text())
    out = {k: dict(old.get(k) or {}) for k in ("bootstrap", "tuning", "digit_timing")}
    for name, task in tasks.items():
        rows, boot, tuning, out["digit_timing"][name] = report_digit_task(task, args, compare_json)
        out[name] = {**(old.get(name) or {}), **rows}
        out["bootstrap"][name] = {**out["bootstrap"].get(name, {}), **boot}
        out["tuning"][name] = {**out["tuning"].get(name, {}), **tuning}
    out["digits"] = {"command": command_line("baselines.py"), "images": args.digits, "head": digits_head(args),
                     **({"debug": f"DPS at {args.dps_steps} steps (--dps-steps): not the published setting"}
                        if args.dps_steps else {})}
    return out


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
LABELS = {"davi": "DAVI", "red_diff_100": "RED-Diff-100", "red_diff_1000": "RED-Diff-1000", "dps": "DPS",
          "diffpir": "DiffPIR", "ddrm": "DDRM"}


def _fmt(v, fmt: str) -> str:
    return "" if v is None else fmt.format(v)


def _interval(i: dict | None, fmt: str) -> str:
    """estimate [low, high], starred when the interval excludes 0."""
    if not i:
        return ""
    star = "" if i["low"] <= 0 <= i["high"] else "*"
    return f"{fmt.format(i['estimate'])} [{fmt.format(i['low'])}, {fmt.format(i['high'])}]{star}"


def _label(key: str, row: dict) -> str:
    base = key.removesuffix("_default")
    if key.endswith("_default"):
        return f"{LABELS[base]} (deepinv defaults)"
    if base in DIGIT_METHODS:
        s = row.get("settings")
        return f"{LABELS[base]} (tuned" + (": " + ", ".join(f"{k}={v:g}" for k, v in s.items()) if s else "") + ")"
    if base in RED_DIFF:
        return f"{LABELS[base]} (lr={row['lr']:g}, lam={row['lam']:g}; compare.json, {row['seeds']} seed(s))"
    return LABELS[base]


def _digit_row(data: dict, task: str, key: str) -> dict:
    r, b = data[task][key], data.get("bootstrap", {}).get(task, {}).get(key, {})
    ratio = r.get("time_vs_davi")
    row = {"task": task, "method": _label(key, r), "nfe": r.get("nfe"),
           "seconds": _fmt(r.get("s_per_image"), "{:.3g}") or "pending",
           "ratio": "" if key == "davi" or ratio is None else f"{ratio:,.0f}x",
           "fd_diff": _interval(b.get("fd_independent"), "{:+.2f}"),
           "kid_diff": _interval(b.get("kid_independent"), "{:+.3f}")}
    if r.get("pending"):
        train = f"; {r['train_psnr']:.2f} dB on the tuning train digits" if r.get("train_psnr") is not None else ""
        return {**row, "psnr": f"pending ({r['pending']}{train})"}
    return {**row, "psnr": f"{r['psnr']:.2f}", "ssim": f"{r['ssim']:.3f}", "fd": _fmt(r.get("fd_independent"), "{:.2f}"),
            "kid": _fmt(r.get("kid_independent"), "{:.3f}")}


@table("baselines_digits", "baselines.json")
def render_digits(data: dict) -> str:
    """The digit comparison: per task, DAVI, RED-Diff (from compare.json) and the deepinv baselines tuned and at
    their defaults; DAVI minus each as paired-bootstrap 95% intervals (* = excludes 0; negative: DAVI more real)."""
    from davi.eval.evaluate import markdown_table

    rows = [_digit_row(data, t, k) for t in DIGIT_TASKS if t in data for k in DIGIT_ORDER if k in data[t]]
    if not rows:
        return "(the digit comparison has not run yet)"
    return markdown_table(rows, [
        ("task", "task", "{}"), ("method", "method", "{}"), ("psnr", "PSNR (dB)", "{}"), ("ssim", "SSIM", "{}"),
        ("fd", "FD vs other real digits", "{}"), ("kid", "KID vs other real digits", "{}"),
        ("fd_diff", "DAVI - this: FD [95%]", "{}"), ("kid_diff", "DAVI - this: KID [95%]", "{}"),
        ("nfe", "NFE / image", "{}"), ("seconds", "s / image (CPU)", "{}"), ("ratio", "time / DAVI's", "{}")])


def _tuning_row(task: str, name: str, t: dict) -> dict:
    interior = ("yes" if t["interior"] else f"at the bound ({', '.join(t['at_bound'])})" if t["at_bound"]
                else "**no** (edge; widenings exhausted)")
    return {"task": task, "method": LABELS[name], "grid": "; ".join(f"{k}: {', '.join(f'{v:g}' for v in vs)}"
                                                                     for k, vs in t["axes"].items()),
            "widenings": t["widenings"], "choice": ", ".join(f"{k}={v:g}" for k, v in t["choice"].items()),
            "interior": interior, "train_psnr": t["train_psnr"], "default_psnr": _fmt(t.get("default_train_psnr"), "{:.2f}")}


@table("baselines_tuning", "baselines.json")
def render_tuning(data: dict) -> str:
    """Each baseline's tuning per task on train digits (best PSNR; the whole grid is in baselines.json)."""
    from davi.eval.evaluate import markdown_table

    rows = [_tuning_row(t, name, data["tuning"][t][name]) for t in DIGIT_TASKS if t in data.get("tuning", {})
            for name in DIGIT_METHODS if name in data["tuning"][t]]
    if not rows:
        return "(no tuning finished yet)"
    return markdown_table(rows, [("task", "task", "{}"), ("method", "method", "{}"), ("grid", "grid", "{}"),
                                 ("widenings", "widenings", "{}"), ("choice", "chosen (best train PSNR)", "{}"),
                                 ("interior", "interior", "{}"), ("train_psnr", "train PSNR (dB)", "{:.2f}"),
                                 ("default_psnr", "train PSNR at deepinv's default (dB)", "{}")])


BASELINE_ROWS = ("diffpir", "diffpir_default", "ddrm", "ddrm_default", "dps", "dps_default")
REALISM = ("fd_independent", "kid_independent")


def _digit_goals(data: dict, task: str) -> dict:
    """Issue 31's goals on one task, over the baseline rows finished so far (the pending ones named)."""
    rows, boot = data[task], data.get("bootstrap", {}).get(task, {})
    done = [k for k in BASELINE_ROWS if k in rows and not rows[k].get("pending")]
    pending = [k for k in BASELINE_ROWS if k in rows and rows[k].get("pending")]
    note = f" ({', '.join(pending)} pending)" if pending else ""
    ours = rows.get("davi")
    if ours is None or not done:
        return {"task": task, "psnr": "pending", "realism": "pending", "speed": "pending"}
    best = max(done, key=lambda k: rows[k]["psnr"])
    gap = ours["psnr"] - rows[best]["psnr"]
    psnr = f"{gap:+.2f} dB vs {best}: " + ("met" if gap >= -1 else "**not met**")
    worse = [k for k in done if any(boot.get(k, {}).get(m, {}).get("low", -1) > 0 for m in REALISM)]
    better = [k for k in done if all(boot.get(k, {}).get(m, {}).get("high", 1) < 0 for m in REALISM)]
    realism = (f"**not met**: DAVI less real than {', '.join(worse)}" if worse
               else f"met: DAVI more real than {len(better)} of {len(done)} rows, a tie with the rest")
    close = [k for k in done if rows[k]["psnr"] >= ours["psnr"] - 1]
    timed = [k for k in close if rows[k].get("time_vs_davi") is not None]
    if not close:
        speed = "no baseline within 1 dB of DAVI's PSNR"
    elif not timed:
        speed = "not timed yet"
    else:
        fastest = min(timed, key=lambda k: rows[k]["time_vs_davi"])
        ratio = rows[fastest]["time_vs_davi"]
        speed = f"{ratio:,.0f}x vs {fastest}: " + ("met" if ratio >= 100 else "**not met**")
    return {"task": task, "psnr": psnr + note, "realism": realism + note, "speed": speed + note}


@table("baselines_goals", "baselines.json")
def render_digit_goals(data: dict) -> str:
    """Issue 31's goals per task: DAVI's PSNR within 1 dB of the best baseline row (tuned or default); realism a tie
    or better against every one (FD and KID vs other real digits, bootstrap intervals); >= 100x the speed of the
    fastest baseline within 1 dB of DAVI's PSNR."""
    from davi.eval.evaluate import markdown_table

    rows = [_digit_goals(data, t) for t in DIGIT_TASKS if t in data]
    if not rows:
        return "(the digit comparison has not run yet)"
    return markdown_table(rows, [("task", "task", "{}"), ("psnr", "PSNR within 1 dB of the best baseline", "{}"),
                                 ("realism", "realism a tie or better vs every baseline", "{}"),
                                 ("speed", ">= 100x faster than the fastest baseline within 1 dB", "{}")])


def render_leaderboard_table(data: dict) -> str:
    from davi.eval.evaluate import markdown_table

    rows = []
    for key, methods in data["leaderboard"].items():
        for name in [m for m in ORDER if m in methods]:
            r = methods[name]
            rows.append({"task": key, "method": name, "mean_err": _fmt(r["mean_err"], "{:.3f}"),
                         "var_ratio": _fmt(r["var_ratio"], "{:.2f}"), "cov90": _fmt(r["cov90"], "{:.3f}"),
                         "mode_dev": _fmt(r.get("mode_dev"), "{:.2f}")})
    return markdown_table(rows, [("task", "prior/task", "{}"), ("method", "method", "{}"),
                                 ("mean_err", "mean err", "{}"), ("var_ratio", "var ratio (trace)", "{}"),
                                 ("cov90", "90% coverage", "{}"), ("mode_dev", "mode dev", "{}")])


@table("baselines_leaderboard", "baselines.json")
def render_baselines(data: dict) -> str:
    """Per (prior, task): each sampler's distance to the exact posterior, the exact posterior's own samples first
    (the Monte-Carlo floor: coverage 0.90, variance ratio 1, mode dev ~0)."""
    return render_leaderboard_table(data)


def render_results_md(data: dict) -> str:
    """baselines.md: the leaderboard, then the digit comparison, its goals and the tuning."""
    digits = data.get("digits") or {}
    return "\n\n".join([render_baselines(data), digits.get("head", ""), f"Command: {digits.get('command', '')}",
                        render_digits(data), render_digit_goals(data), render_tuning(data)])


def arguments() -> argparse.Namespace:
    from davi.analytic.problems import DEFAULT_TASKS, PRIORS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--priors", nargs="*", default=list(PRIORS), choices=list(PRIORS))
    p.add_argument("--tasks", nargs="*", default=list(DEFAULT_TASKS))
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--samples", type=int, default=256, help="samples per y (posterior.py's 256)")
    p.add_argument("--measurements", type=int, default=6, help="test measurements per task (posterior.py's 6)")
    p.add_argument("--chunk", type=int, default=64, help="samples per y in one deepinv run (one seed)")
    p.add_argument("--no-leaderboard", action="store_true")
    p.add_argument("--posterior", default=str(RESULTS / "posterior.json"))
    d = p.add_argument_group("digits (the 200-digit comparison)")
    d.add_argument("--digits", type=int, default=0, help="run the digit comparison on the first N test digits (200)")
    d.add_argument("--digit-tasks", nargs="*", default=list(DIGIT_TASKS), choices=DIGIT_TASKS)
    d.add_argument("--digit-methods", nargs="*", default=list(DIGIT_METHODS), choices=DIGIT_METHODS)
    d.add_argument("--digit-chunk", type=int, default=25, help="digits per cached chunk = per deepinv run (one seed)")
    d.add_argument("--report", action="store_true", help="compute nothing for the baselines: publish what is cached")
    d.add_argument("--digit-stages", nargs="*", default=list(DIGIT_STAGES), choices=DIGIT_STAGES,
                   help="which restorations to compute (tuned before default: the default rows can wait)")
    d.add_argument("--tune-digits", type=int, default=16, help="train digits each grid point is scored on")
    d.add_argument("--max-widenings", type=int, default=8,
                   help="widenings before a search stops at an edge (DPS's weight starts decades below its optimum)")
    d.add_argument("--dps-steps", type=int, default=None, help="DEBUG: DPS steps (default: deepinv's 1000)")
    d.add_argument("--time-batch", type=int, default=25, help="digits per timed run, every method")
    d.add_argument("--dps-time-steps", type=int, default=50, help="DPS steps per timed run (scaled to its steps)")
    d.add_argument("--time-steps", type=int, default=5, help="RED-Diff steps per timed run (scaled)")
    d.add_argument("--warmup", type=int, default=1)
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    d.add_argument("--compare", default=str(RESULTS / "compare.json"), help="RED-Diff's rows and tuning")
    p.add_argument("--work-dir", default="runs/baselines", help="cache of every expensive unit (resumable)")
    p.add_argument("--out", default=str(RESULTS / "baselines.json"))
    args = p.parse_args()
    if args.digits and (args.digits < 2 or args.digit_chunk < 1 or args.tune_digits < 2):
        raise SystemExit("error: --digits and --tune-digits must be >= 2, --digit-chunk >= 1")
    args.time_batch = min(args.time_batch, args.digits) if args.digits else args.time_batch
    return args


def main() -> None:
    args = arguments()
    from davi.baselines import DEEPINV_VERSION

    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    data = {"command": command_line("baselines.py"), "deepinv": DEEPINV_VERSION,
            "head": (f"Posterior leaderboard on the analytic priors of benchmarks/posterior.py (8x8, sigma_y 0.05): "
                     f"{args.samples} samples per y, {args.measurements} y per task; dps/diffpir/ddrm at deepinv "
                     f"{DEEPINV_VERSION} defaults through davi.baselines, unclamped; davi_sampler, davi_paired, "
                     f"red_diff_1000 and exact from posterior.json."),
            "leaderboard_command": old.get("leaderboard_command"), "leaderboard": old.get("leaderboard", {}),
            # the digit part of earlier runs (the old partial probe, marked "partial", is superseded)
            **{k: old[k] for k in (*DIGIT_TASKS, "bootstrap", "tuning", "digit_timing") if k in old},
            **({"digits": old["digits"]} if old.get("digits") and "partial" not in old["digits"] else {})}
    if not args.no_leaderboard:
        data["leaderboard"].update(leaderboard(args))
        data["leaderboard_command"] = data["command"]
    if args.digits:
        tasks = {name: digit_task(name, args) for name in args.digit_tasks}
        if not args.report:
            solve_digits(tasks, args)
        data.update(digits_report(tasks, args, data))
    publish(out, data, render_results_md)


if __name__ == "__main__":
    main()
