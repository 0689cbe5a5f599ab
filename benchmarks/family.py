"""One sampler for a family of degradations and noise levels (issue 30): its benchmark.

Sections (flags; each caches what it trains and measures under ``--work-dir``, so an interrupted run
resumes; every run MERGES its keys into ``--out``, keeping the other sections' keys):

* ``--dedicated``: today's per-task sampler recipe (benchmarks/posterior.py's settings: paired warm
  start 200 steps, then 1,500 sampler steps) on the ``stationary`` analytic prior (a full-rank Gaussian
  with a squared-exponential covariance NOT fitted to digits, :func:`davi.analytic.stationary_gaussian`,
  settings in ``STATIONARY``), 5 tasks at sigma_y 0.05, scored against the exact posterior exactly as
  posterior.py scores them (6 test y, 256 samples per y, 32 exact draws per y for the coverage).
  ``--variant before`` is the recipe as it was, ``--variant after`` the fixed one (docs/family.md,
  "A second Gaussian prior"); keys ``"stationary_dedicated/<task>": {"before": {...}, "after": {...}}``.
* ``--calibration``: ONE family sampler per analytic prior (``--priors gauss stationary``) over the members
  {SR x2, deblur 3 px std 1.0, box 4 px (position drawn per image)} with sigma_y log-uniform in
  [0.02, 0.2] and ``mapper.condition: embedding``: a paired warm start, then the sampler objective
  (the family recipe, davi/training/recipes/family.py), then for each of sr2 / deblur / box (the box
  centred, a member) and sigma_y in {0.02, 0.05, 0.1, 0.2} the same estimators as posterior.py:
  keys ``"calibration/<prior>/<task>/<sigma_y>": {"cov90", "mean_err", "var_ratio"}``; its training
  CPU seconds under ``"calibration/<prior>:train_cpu_s"``.
* ``--digits N``: the family mapper on the embedded digits (benchmarks/family_digits.py): against the shipped
  dedicated mappers on SR x4 / deblur / box (``"<task>"``), at held-out settings against a dedicated mapper
  and RED-Diff-100 (``"heldout/<name>"``), the one threshold's false alarms per sigma_y
  (``"false_alarms/<sigma_y>"``), training seconds (``"train_cpu_s"``); ``--train-dedicated`` trains
  the two dedicated held-out mappers (paired 2,000 + sampler 600 steps each, the shipped recipe).

    python benchmarks/family.py --dedicated --variant before      # stationary prior, today's recipe
    python benchmarks/family.py --dedicated --variant after       # the same with the fixed recipe
    python benchmarks/family.py --calibration --priors gauss      # one family sampler per prior
    python benchmarks/family.py --calibration --priors stationary
    python benchmarks/family.py --calibration --priors gauss --partial  # score a run stopped short at its checkpoint
    python benchmarks/family.py --dedicated --variant after --tasks box --partial
    python benchmarks/family.py --collect                         # rewrite family.json/.md from the caches
    python benchmarks/family.py --train-dedicated --collect       # the two dedicated held-out mappers (~3 CPU h)
    python benchmarks/family.py --digits 200                      # the digit sections (family_digits.py)
    python benchmarks/family.py --calibration --quick --out /tmp/f.json --work-dir /tmp/family  # smoke run

Every training runs on one thread; seconds are CPU (process) seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import RESULTS, ROOT, command_line, publish, table
from family_digits import render_digits

from davi.analytic.problems import (
    PAIRED,
    REGRESSION,
    TRUTH_SEED,
    davi_config,
    figures,
    make_operator,
    make_prior,
    sampler_objective,
    sampler_settings,
    train_mapper,
    truth_draws,
)
from davi.eval.evaluate import markdown_table

torch.set_num_threads(1)

# The second Gaussian prior: chosen once, not tuned (docs/family.md): zero mean (mid-grey), marginal
# std 0.5, squared-exponential covariance with a 2-pixel length scale, nugget 1e-3 (full rank).
STATIONARY = {"mean": 0.0, "std": 0.5, "length_scale": 2.0, "nugget": 1e-3}
PRIORS = ("gauss", "stationary")
DEDICATED_TASKS = ["deblur", "sr2", "sr4", "box", "random"]
FAMILY_TASKS = ["sr2", "deblur", "box"]
SIGMAS = [0.02, 0.05, 0.1, 0.2]
MEMBERS = "[{name: sr, scale: 2}, {name: deblur, kernel_size: 3, kernel_std: 1.0}, {name: box_inpaint, box_size: 4}]"
FAMILY = [f"operator.family={MEMBERS}", "operator.sigma_y=[0.02, 0.2]", "mapper.condition=embedding"]
MEASUREMENTS, SAMPLES = 6, 256

# posterior.py's per-task sampler settings (its argparse defaults), as a new user runs them.
RECIPE = {"steps": 1500, "paired_steps": 200, "t_ikl": 20, "score_steps": 2, "lr": 1e-3, "h": 0.1, "noise_channels": 0,
          "warm_start": "paired",
              "score_condition": "center",
              "score_warmup": 100, "lambda_mean": 0.3, "sampler_ppb": False, "sampler_override": [], "batch_size": 64, "net": []}
# The fix (docs/family.md, "A second Gaussian prior"): the mapper's only randomness was h z ADDED TO lift(y),
# which reaches the samples through the same posterior gain as y: with h = 0.1 a mapper with the posterior's
# mean has at least h^2 G G^T of covariance, 1.25x the whole posterior on the stationary box at sigma_y 0.05.
# After: h well below sigma_y (h^2 G G^T under 3% of the posterior at sigma_y >= 0.02) and one noise channel
# (randomness at unit scale that is not mixed into the measurement). Tried first and not enough (probes at 375
# steps, observed pixels still 2.7-3.0x over-dispersed): t_ikl 5, and a per-pixel CRPS term of weight 3.
# rule: the IKL horizon per image from its own sigma_y (davi.ikl_noise_ratio 0.25, t_ikl 20 the cap): one t_ikl
# collapses the measured pixels' spread at small sigma_y (closed form: box at 0.05, 90% coverage 0.37 at t_ikl 20).
WIDE = ["prior.block_out_channels=[32,64]"]  # NET at twice its channels
VARIANTS = {"before": {}, "after": {"h": 0.01, "noise_channels": 1},
            "after_t5": {"h": 0.01, "noise_channels": 1, "t_ikl": 5},
            "rule": {"h": 0.01, "noise_channels": 1, "sampler_override": ["davi.ikl_noise_ratio=0.25"]},
            "rule_cosine": {"h": 0.01, "noise_channels": 1,
                            "sampler_override": ["davi.ikl_noise_ratio=0.25", "train.lr_schedule=cosine"]},
            "rule_cosine_reg": {"h": 0.01, "noise_channels": 1, "warm_start": "regression",
                                "sampler_override": ["davi.ikl_noise_ratio=0.25", "train.lr_schedule=cosine"]},
            "rule_cosine_mean1": {"h": 0.01, "noise_channels": 1, "lambda_mean": 1.0,
                                  "sampler_override": ["davi.ikl_noise_ratio=0.25", "train.lr_schedule=cosine"]},
            # the mapper and s_psi twice as wide (the net overrides both stages: the warm start must match)
            "rule_cosine_wide": {"h": 0.01, "noise_channels": 1, "net": WIDE,
                                 "sampler_override": ["davi.ikl_noise_ratio=0.25", "train.lr_schedule=cosine"]},
            "rule_cosine_wide_mean1": {"h": 0.01, "noise_channels": 1, "net": WIDE, "lambda_mean": 1.0,
                                       "sampler_override": ["davi.ikl_noise_ratio=0.25", "train.lr_schedule=cosine"]}}
# the family calibration reported: the best recipe measured that has a record (docs/family.md compares them)
CALIBRATION_ORDER = ("rule_cosine_wide", "rule_cosine", "rule", "after")


def prior_of(name: str):
    if name == "stationary":
        from davi.analytic import stationary_gaussian

        return stationary_gaussian(resolution=8, **STATIONARY)
    return make_prior(name)


def training_settings(r: argparse.Namespace, extra: list[str] = ()) -> dict:
    """davi_config's keywords for both stages of recipe ``r`` (the warm start and the sampler must match)."""
    return {"batch_size": r.batch_size, "lr": r.lr, "h": r.h,
            "extra": [*extra, f"mapper.noise_channels={r.noise_channels}", *r.net]}


def recipe(variant: str, quick: bool = False) -> argparse.Namespace:
    r = argparse.Namespace(**{**RECIPE, **VARIANTS[variant]})
    r.sampler_override = list(r.sampler_override)
    if quick:
        r.steps, r.paired_steps, r.score_warmup = 40, 20, 10
    return r


def _write(path: Path, data) -> None:
    from davi.io.atomic import write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=1))


def _scores(samples, posts, truths) -> dict:
    f = figures(samples, posts, truths)
    return {"cov90": f["coverage"]["90"], "mean_err": f["mean_err"], "var_ratio": f["var_tr"],
            "mean_err_max": f["mean_err_max"], "var_top5": [f["var_top_min"], f["var_top_max"]]}


def _problem(prior, op, measurements: int):
    from davi.analytic import exact_posteriors, held_out_measurements

    _, y = held_out_measurements(prior, op, measurements, seed=1, ambiguous=False)
    posts = exact_posteriors(prior, op, y)
    g = torch.Generator().manual_seed(TRUTH_SEED)
    return y, posts, truth_draws(posts, g), g


def _target(prior, op, y, t_ikl: int, n: int, g) -> torch.Tensor:
    """(n, B, D) samples of the closed-form optimum of the sampler objective (davi_fixed_point)."""
    from davi.analytic import davi_fixed_point
    from davi.training.losses import sampler_consistency_weight

    D, M = prior.dim, op.measurement_shape((1, *prior.shape))
    lam = sampler_consistency_weight(prior.schedule.alphas_cumprod, t_ikl, float(op.sigma_y), D, M[1] * M[2] * M[3])
    mu, C = davi_fixed_point(prior, op, y, lam, t_ikl)
    L = torch.linalg.cholesky(C + 1e-12 * torch.eye(D, dtype=torch.float64))
    return mu[None] + torch.einsum("de,nbe->nbd", L, torch.randn(n, y.shape[0], D, generator=g, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# --dedicated: posterior.py's per-task recipe on the stationary prior
# ----------------------------------------------------------------------------------------------
def dedicated_partial(task: str, variant: str, args, work: Path) -> dict:
    """A dedicated run stopped short, scored at its latest sampler checkpoint (its steps recorded)."""
    from davi.analytic import mapper_samples
    from davi.models.mapper import Mapper

    run = work / "dedicated" / f"{variant}_{task}" / "sampler"
    ckpts = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not ckpts:
        raise SystemExit(f"--partial: no sampler checkpoint of {variant}/{task} yet")
    r = recipe(variant)
    prior, op = prior_of("stationary"), make_operator(task)
    y, posts, truths, g = _problem(prior, op, args.measurements)
    mapper = Mapper.from_pretrained(str(ckpts[-1] / "ema"), use_safetensors=True).float().eval()
    steps = int(ckpts[-1].name.split("-")[1])
    out = {"sampler": {**_scores(mapper_samples(mapper, op, y, args.samples), posts, truths), "seconds": None},
           "target": _scores(_target(prior, op, y, r.t_ikl, args.samples, g), posts, truths),
           "settings": {**vars(r), "steps": steps, "partial": True}}
    _write(work / "dedicated" / f"{variant}_{task}_partial.json", out)
    return out


def dedicated_task(task: str, variant: str, args, work: Path) -> dict:
    cache = work / "dedicated" / f"{variant}_{task}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    if args.partial:
        return dedicated_partial(task, variant, args, work)
    from davi.analytic import mapper_samples

    r = recipe(variant, args.quick)
    prior, op = prior_of("stationary"), make_operator(task)
    y, posts, truths, g = _problem(prior, op, args.measurements)
    run = work / "dedicated" / f"{variant}_{task}"
    kw = training_settings(r)
    paired, paired_export, paired_s = train_mapper(prior, davi_config(task, run / "paired", r.paired_steps, PAIRED, **kw))
    sampler_cfg = davi_config(task, run / "sampler", r.steps,
                              sampler_objective(r.t_ikl, paired_export, r.score_steps) + sampler_settings(r), **kw)
    sampler, _, sampler_s = train_mapper(prior, sampler_cfg)
    out = {"sampler": {**_scores(mapper_samples(sampler, op, y, args.samples), posts, truths),
                       "seconds": paired_s + sampler_s},
           "target": _scores(_target(prior, op, y, r.t_ikl, args.samples, g), posts, truths),
           "paired": _scores(mapper_samples(paired, op, y, args.samples), posts, truths),
           "settings": {**vars(r)}}
    _write(cache, out)
    return out


# ----------------------------------------------------------------------------------------------
# --calibration: one family sampler per prior, scored per (task, sigma_y)
# ----------------------------------------------------------------------------------------------
def family_run(prior_name: str, args, work: Path):
    """Train (or resume) the family sampler of ``prior_name``: (EMA mapper, family, CPU seconds, settings)."""
    from davi.config import load_config
    from davi.operators import family_from_config

    r = recipe(args.variant, args.quick)
    steps, paired_steps = args.family_steps or 3 * r.steps, args.family_paired_steps or 3 * r.paired_steps
    if args.quick:
        steps, paired_steps = 40, 20
    prior = prior_of(prior_name)
    run = work / "calibration" / f"{prior_name}_{args.variant}"
    kw = training_settings(r, FAMILY)
    # davi_config's task only names a base operator; the family overrides it
    # a family's s_psi must see y and the member in the warm start too (center, as the sampler's)
    # the warm start: the paired objective, or regression alone (its optimum is the posterior mean E[x | y])
    warm = ([*PAIRED, "davi.score_condition=center"] if r.warm_start == "paired" else REGRESSION)
    paired_cfg = davi_config("denoise", run / r.warm_start, paired_steps, warm, **kw)
    _, paired_export, paired_s = train_mapper(prior, paired_cfg)
    cfg = davi_config("denoise", run / "sampler", steps,
                      sampler_objective(r.t_ikl, paired_export, r.score_steps) + sampler_settings(r), **kw)
    mapper, _, sampler_s = train_mapper(prior, cfg)
    family = family_from_config(load_config(None, FAMILY).operator, 8, 1)
    settings = {**vars(r), "steps": steps, "paired_steps": paired_steps}
    return mapper, family, paired_s + sampler_s, settings


def _checkpoint_mapper(prior_name: str, args, work: Path):
    """The EMA mapper of the family run's latest sampler checkpoint (a run stopped short: its steps recorded)."""
    from davi.config import load_config
    from davi.models.mapper import Mapper
    from davi.operators import family_from_config

    ckpts = sorted((work / "calibration" / f"{prior_name}_{args.variant}" / "sampler").glob("checkpoint-*"),
                   key=lambda p: int(p.name.split("-")[1]))
    if not ckpts:
        raise SystemExit(f"--partial: no sampler checkpoint of {prior_name}/{args.variant} yet")
    mapper = Mapper.from_pretrained(str(ckpts[-1] / "ema"), use_safetensors=True).float().eval()
    family = family_from_config(load_config(None, FAMILY).operator, 8, 1)
    steps = int(ckpts[-1].name.split("-")[1])
    return mapper, family, None, {**vars(recipe(args.variant)), "steps": steps, "partial": True}


def calibration(prior_name: str, args, work: Path) -> dict:
    cache = work / "calibration" / f"{prior_name}_{args.variant}{'_partial' if args.partial else ''}.json"
    if cache.is_file() and not args.partial:
        return json.loads(cache.read_text())
    from davi.analytic import mapper_samples
    from davi.models.conditioning import family_condition

    run = _checkpoint_mapper if args.partial else family_run
    mapper, family, seconds, settings = run(prior_name, args, work)
    prior = prior_of(prior_name)
    out = {"train_cpu_s": seconds, "settings": settings, "cells": {}}
    for task in FAMILY_TASKS:
        for sigma in SIGMAS:
            op = make_operator(task, sigma)
            family.check(op)
            y, posts, truths, _ = _problem(prior, op, args.measurements)
            cond = family_condition(family, [op] * y.shape[0], op.lift(y.float()), embedding=True)
            samples = mapper_samples(mapper, op, y, args.samples, condition=cond)
            out["cells"][f"{task}/{sigma}"] = _scores(samples, posts, truths)
            print(f"{prior_name} {task} sigma_y={sigma}: {out['cells'][f'{task}/{sigma}']}", flush=True)
    _write(cache, out)
    return out


# ----------------------------------------------------------------------------------------------
# --optimum: the objective's closed-form optimum per noise level, one t_ikl against the per-image rule
# ----------------------------------------------------------------------------------------------
IKL_NOISE_RATIO = 0.25  # the rule variant's davi.ikl_noise_ratio


def optimum(work: Path) -> dict:
    """Per prior, family task and sigma_y: the sampler objective's closed-form optimum (davi_fixed_point, at the
    derived consistency weight) at t_ikl 20 and at the rule's horizon (davi.training.losses.ikl_horizons), scored
    like the trained samplers (same y, truths and estimators). What training can reach at best. Cached."""
    from davi.training.losses import ikl_horizons

    cache = work / "optimum.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    out = {}
    for prior_name in PRIORS:
        prior = prior_of(prior_name)
        for task in FAMILY_TASKS:
            for sigma in SIGMAS:
                op = make_operator(task, sigma)
                y, posts, truths, g = _problem(prior, op, MEASUREMENTS)
                rule = int(ikl_horizons(prior.schedule.alphas_cumprod, torch.tensor([sigma]), IKL_NOISE_RATIO, 20)[0])
                cell = {}
                for label, t in (("t_ikl_20", 20), ("rule", rule)):
                    sc = _scores(_target(prior, op, y, t, SAMPLES, g).float(), posts, truths)
                    cell[label] = {**{k: sc[k] for k in KEEP}, "t_ikl": t}
                out[f"optimum/{prior_name}/{task}/{sigma}"] = cell
                print(f"optimum {prior_name} {task} {sigma}: {cell}", flush=True)
    _write(cache, out)
    return out


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
KEEP = ("cov90", "mean_err", "var_ratio")


def exact_floor(task: str, measurements: int = MEASUREMENTS, samples: int = SAMPLES) -> dict:
    """The estimators on exact posterior samples of the stationary prior (the Monte-Carlo floor; seconds)."""
    prior, op = prior_of("stationary"), make_operator(task)
    _y, posts, truths, g = _problem(prior, op, measurements)
    return {k: v for k, v in _scores(torch.stack([p.sample(samples, g) for p in posts], 1), posts, truths).items()
            if k in KEEP}


def collect(work: Path) -> dict:
    """The result keys of every cached section."""
    out: dict = {}
    for task in DEDICATED_TASKS:
        rec = {}
        for v in VARIANTS:  # a finished run, else one scored at its latest checkpoint (--partial)
            for name in (f"{v}_{task}.json", f"{v}_{task}_partial.json"):
                if v not in rec and (work / "dedicated" / name).is_file():
                    rec[v] = json.loads((work / "dedicated" / name).read_text())
        if rec:
            out[f"stationary_dedicated/{task}"] = {
                v: {**{k: d["sampler"][k] for k in (*KEEP, "mean_err_max", "var_top5")}, "seconds": d["sampler"]["seconds"],
                    "settings": d["settings"], "target": {k: d["target"][k] for k in KEEP}} for v, d in rec.items()}
            out[f"stationary_dedicated/{task}"]["exact"] = exact_floor(task)
    if (work / "optimum.json").is_file():
        out.update(json.loads((work / "optimum.json").read_text()))
    for prior_name in PRIORS:
        # a finished run, else one scored at its latest checkpoint (--partial); the newest recipe first
        paths = [work / "calibration" / f"{prior_name}_{v}{end}.json" for v in CALIBRATION_ORDER for end in ("", "_partial")]
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            continue
        d = json.loads(path.read_text())
        d["settings"].setdefault("variant", path.stem.removeprefix(f"{prior_name}_").removesuffix("_partial"))
        out[f"calibration/{prior_name}:train_cpu_s"] = d["train_cpu_s"]
        out[f"calibration/{prior_name}:settings"] = d["settings"]
        for cell, v in d["cells"].items():
            out[f"calibration/{prior_name}/{cell}"] = {k: v[k] for k in KEEP}
    return out


def goal_ok(v: dict) -> bool:
    return 0.85 <= v["cov90"] <= 0.95 and v["mean_err"] <= 0.05 and 0.5 <= v["var_ratio"] <= 2


def _steps(settings: dict | None) -> str:
    """Sampler steps of a record: '750 of 1500 (stopped short)' for a run scored at a checkpoint."""
    if not settings:
        return ""
    if settings.get("partial"):
        return f"{settings['steps']} (stopped short)"
    return str(settings["steps"])


@table("family_calibration", "family.json")
def render_family(data: dict) -> str:
    """Calibration across noise levels (issue 30): one family sampler per analytic prior, per task and sigma_y
    (goals: 90% coverage in [0.85, 0.95], mean error <= 5%, trace variance ratio in [0.5, 2]); and the
    stationary prior's dedicated samplers before / after the recipe fix."""
    rows = []
    for key, v in data.items():
        if key.startswith("calibration/") and "/" in key[12:] and isinstance(v, dict):
            _, prior, task, sigma = key.split("/")
            st = data.get(f"calibration/{prior}:settings", {})
            rows.append({"what": f"family, {prior}, {st.get('variant', 'after')}", "task": task, "sigma_y": sigma, **v, "steps": _steps(st),
                         "ok": "met" if goal_ok(v) else "MISSED"})
    for key, rec in data.items():
        if key.startswith("stationary_dedicated/"):
            for variant, v in rec.items():
                rows.append({"what": f"dedicated, stationary, {variant}", "task": key.split("/")[1], "sigma_y": "0.05",
                             **{k: v[k] for k in KEEP}, "steps": _steps(v.get("settings")),
                             "ok": "met" if goal_ok(v) else "MISSED"})
    cols = [("what", "sampler", "{}"), ("task", "task", "{}"), ("sigma_y", "sigma_y", "{}"), ("steps", "sampler steps", "{}"),
            ("cov90", "90% coverage", "{:.3f}"), ("mean_err", "mean err", "{:.4f}"),
            ("var_ratio", "var ratio", "{:.3f}"), ("ok", "goals", "{}")]
    return markdown_table(rows, cols)


@table("family_optimum", "family.json")
def render_optimum(data: dict) -> str:
    """The closed-form optimum of the sampler objective per noise level: one t_ikl (20) against the per-image
    horizon of davi.ikl_noise_ratio 0.25 (cov90 / mean error / trace variance ratio; goals as the trained)."""
    rows = []
    for key, cell in data.items():
        if key.startswith("optimum/"):
            _, prior, task, sigma = key.split("/")
            fmt = lambda v: f"{v['cov90']:.3f} / {100 * v['mean_err']:.1f}% / {v['var_ratio']:.2f}"
            rows.append({"prior": prior, "task": task, "sigma_y": sigma, "fixed": fmt(cell["t_ikl_20"]),
                         "t": cell["rule"]["t_ikl"], "rule": fmt(cell["rule"]),
                         "ok": "met" if goal_ok(cell["rule"]) else "MISSED"})
    if not rows:
        return ""
    cols = [("prior", "prior", "{}"), ("task", "task", "{}"), ("sigma_y", "sigma_y", "{}"),
            ("fixed", "t_ikl 20: cov90 / mean err / var", "{}"), ("t", "rule's horizon", "{}"),
            ("rule", "rule (ratio 0.25): cov90 / mean err / var", "{}"), ("ok", "goals at the optimum", "{}")]
    return markdown_table(rows, cols)


table("family_digits", "family.json")(render_digits)


def render_all(data: dict) -> str:
    return "\n\n".join(t for t in (render_family(data), render_optimum(data), render_digits(data)) if t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dedicated", action="store_true", help="posterior.py's per-task recipe on the stationary prior")
    p.add_argument("--calibration", action="store_true", help="one family sampler per prior, per (task, sigma_y)")
    p.add_argument("--collect", action="store_true", help="train nothing: merge the cached sections into --out")
    p.add_argument("--optimum", action="store_true", help="the objective's closed-form optimum per sigma_y (minutes)")
    p.add_argument("--variant", default="after", choices=list(VARIANTS), help="the recipe: as it was, or fixed")
    p.add_argument("--tasks", nargs="*", default=DEDICATED_TASKS, choices=DEDICATED_TASKS, help="--dedicated's tasks")
    p.add_argument("--priors", nargs="*", default=list(PRIORS), choices=list(PRIORS), help="--calibration's priors")
    p.add_argument("--family-steps", type=int, default=0, help="family sampler steps (default 3x the per-task 1,500)")
    p.add_argument("--family-paired-steps", type=int, default=0, help="family warm-start steps (default 3x 200)")
    p.add_argument("--partial", action="store_true",
                   help="score a run stopped short at its latest sampler checkpoint (--dedicated, --calibration)")
    p.add_argument("--quick", action="store_true", help="smoke run: 40 + 20 steps, 2 measurements, 64 samples")
    d = p.add_argument_group("digits (family_digits.py: the family mapper on the embedded default)")
    d.add_argument("--digits", type=int, default=0, help="score the digit sections on the first N test digits (200)")
    d.add_argument("--train-dedicated", nargs="*", default=None, metavar="NAME",
                   help="train the dedicated held-out mappers (all, or the named ones; resumes)")
    d.add_argument("--tune-digits", type=int, default=16, help="train digits of RED-Diff-100's grid points")
    d.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    d.add_argument("--figure", default=str(ROOT / "docs" / "family_grid.png"), help="the family figure ('' : none)")
    p.add_argument("--work-dir", default="runs/family")
    p.add_argument("--out", default=str(RESULTS / "family.json"))
    args = p.parse_args()
    args.measurements, args.samples = (2, 64) if args.quick else (MEASUREMENTS, SAMPLES)
    work = Path(args.work_dir) if Path(args.work_dir).is_absolute() else ROOT / args.work_dir  # cwd-independent
    if args.dedicated:
        for task in args.tasks:
            print(f"dedicated/{args.variant}/{task}: {dedicated_task(task, args.variant, args, work)['sampler']}",
                  flush=True)
    if args.calibration:
        for prior_name in args.priors:
            calibration(prior_name, args, work)
    if args.optimum:
        optimum(work)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    head = (f"8x8 analytic priors: gauss = posterior.py's (fit_gaussian to digits, rank 8); stationary = "
            f"stationary_gaussian({', '.join(f'{k}={v}' for k, v in STATIONARY.items())}). Family: members {MEMBERS}, "
            f"sigma_y log-uniform in [0.02, 0.2], mapper.condition embedding; {MEASUREMENTS} test y per cell, "
            f"{SAMPLES} samples per y, coverage against 32 exact posterior draws per y (posterior.py's estimators).")
    data = {**old, "command": command_line("family.py"), "head": head, **collect(work)}
    if args.train_dedicated is not None:
        from family_digits import DEDICATED, train_dedicated

        for name in args.train_dedicated or DEDICATED:
            if name not in DEDICATED:
                raise SystemExit(f"error: --train-dedicated {name}: not one of {', '.join(DEDICATED)}")
            train_dedicated(name, work)
    if args.digits:
        from family_digits import digit_sections

        data.update(digit_sections(args, work))
        data["digits_command"] = data["command"]
    publish(out, data, render_all)


if __name__ == "__main__":
    main()
