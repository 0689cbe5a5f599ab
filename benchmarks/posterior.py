"""Does DAVI sample the posterior? Its sampler and paired objectives against EXACT posteriors.

For priors whose posterior is known in closed form (davi.analytic) -- a Gaussian fitted to 8x8
digits, and a Gaussian mixture with one component per digit class (0, 1, 7) -- and linear tasks at
8x8 (deblur, SR x2, SR x4, box and random inpainting, sigma_y = 0.05), DAVI mappers are trained
against the analytic prior on its own samples (``train(cfg, davi_recipe, prior=..., train_images=...)``)
and, for 6 test measurements y (held-out prior samples; for the mixture the 6 most ambiguous of 192),
256 one-step samples per y are compared with the exact posterior:

* ``mean_err``: ||m_hat - m|| / ||m|| (sample mean vs exact posterior mean, averaged over the y's);
* ``var_ratio``: tr(C_hat) / tr(C); ``var_ratio_top5_min/max``: the range of v_i^T C_hat v_i / lambda_i
  along the exact posterior's top-5 eigen-directions (C: the posterior covariance; a mixture's total one);
* ``mode_dev``: max over components of |fraction of samples assigned to it - its exact weight| (mixture);
* ``coverage``: how often an exact posterior draw (32 per y) falls in the samples' central per-pixel
  50/80/90/95% intervals (benchmarks/calibration.py collects these);
* ``seconds``: CPU seconds of training (process time, one thread; the paired warm start included in
  the sampler's).

Methods per task (keys of ``benchmarks/results/posterior.json``: ``"<prior>/<task>"`` for the sampler,
``":paired"``, ``":exact"`` and ``":target"`` suffixes for the others):

* ``sampler`` (``davi.objective=sampler``): warm-started from the paired mapper below
  (``davi.init_mapper``), then trained with lambda_reg = 0 and the derived consistency weight at a
  small t_ikl (davi.training.recipes.sampler);
* ``paired`` (``davi.objective=paired``, the paper's recipe at the paper's box settings (DAVI, Lee et al. 2024) t_ikl 1000,
  lambda_con 0.5, lambda_reg 1): a point estimator; it is also the sampler's warm start;
* ``exact``: exact posterior samples through the same estimators (the Monte-Carlo floor);
* ``target`` (Gaussian prior): samples of the closed-form optimum of the sampler objective at its
  t_ikl (davi.analytic.davi_fixed_point): what an ideal mapper and score network converge to;
* ``red-diff-1000``: RED-Diff's point estimates from 8 seeds per y (their spread is optimiser noise).

Each (prior, task) is cached in ``--work-dir`` as it finishes, so an interrupted run resumes where it
stopped; every run rewrites the results from all cached tasks.

The priors, tasks, mapper and its training are davi.analytic.problems's (shared with baselines.py and family.py).

    python benchmarks/posterior.py                      # full run (5 tasks x 2 priors; resumable)
    python benchmarks/posterior.py --priors gauss       # one prior (run the other in a second process)
    python benchmarks/posterior.py --quick --out /tmp/p.json   # smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import command_line, met, publish, span, table

from davi.analytic import davi_fixed_point, mapper_samples
from davi.analytic.problems import (
    DEFAULT_TASKS,
    GMM_CLASSES,
    NUM_TRUTHS,
    PAIRED,
    PRIORS,
    RANK,
    REGRESSION,
    SIGMA_Y,
    TASKS,
    TRUTH_SEED,
    davi_config,
    figures,
    problem,
    sampler_objective,
    sampler_settings,
    train_mapper,
    truth_draws,
)
from davi.eval.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
torch.set_num_threads(1)

LAMBDA_MEAN = 0.3  # the sampler's mean-matching weight (docs/sampler.md: chosen on gauss/box, sr2)


# ----------------------------------------------------------------------------------------------
# one (prior, task)
# ----------------------------------------------------------------------------------------------
def run_task(prior_name: str, task: str, args, work: Path) -> list[dict]:
    cache = work / f"{prior_name}_{task}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from davi.training.losses import sampler_consistency_weight

    prior, op, y, posts = problem(prior_name, task, args.measurements)
    g = torch.Generator().manual_seed(TRUTH_SEED)
    truths = truth_draws(posts, g)  # then g goes on to draw the exact samples
    rows = []

    def add(method, samples, seconds, notes=""):
        rows.append({"prior": prior_name, "task": task, "method": method, **figures(samples, posts, truths),
                     "seconds": seconds, "notes": notes})

    t0 = time.process_time()
    exact = torch.stack([p.sample(args.samples, g) for p in posts], 1)
    add("exact", exact, time.process_time() - t0, "Monte-Carlo floor")
    if prior_name == "gauss":
        D = prior.dim
        M = op.measurement_shape((1, *prior.shape))
        lam = sampler_consistency_weight(prior.schedule.alphas_cumprod, args.t_ikl, SIGMA_Y, D, M[1] * M[2] * M[3])
        mu, C = davi_fixed_point(prior, op, y, lam, args.t_ikl)
        Lc = torch.linalg.cholesky(C + 1e-12 * torch.eye(D, dtype=torch.float64))
        z = torch.randn(args.samples, y.shape[0], D, generator=g, dtype=torch.float64)
        add("target", mu[None] + torch.einsum("de,nbe->nbd", Lc, z), 0.0,
            f"closed-form optimum of the sampler objective, t_ikl={args.t_ikl}, consistency weight {lam:.3g}")

    run = work / f"{prior_name}_{task}"
    mapper_args = {"batch_size": args.batch_size, "lr": args.lr, "h": args.h,
                       "extra": [f"mapper.noise_channels={args.noise_channels}"]}
    paired_cfg = davi_config(task, run / "paired", args.paired_steps, PAIRED, **mapper_args)
    paired, paired_export, paired_s = train_mapper(prior, paired_cfg)
    add("paired", mapper_samples(paired, op, y, args.samples), paired_s, f"{args.paired_steps} steps")
    warm_export, warm_s = paired_export, paired_s
    if args.warm_start == "regression":
        warm_cfg = davi_config(task, run / "regression", args.paired_steps, REGRESSION, **mapper_args)
        _, warm_export, warm_s = train_mapper(prior, warm_cfg)
    steps, notes = args.steps, f"{args.paired_steps} {args.warm_start} + {args.steps} sampler steps, t_ikl={args.t_ikl}"
    if args.curriculum:
        # a large t_ikl first, where the modes' diffused densities overlap and samples can move between them
        big, big_steps = args.curriculum
        big_cfg = davi_config(task, run / "sampler_big", big_steps,
                              sampler_objective(big, warm_export, args.score_steps) + sampler_settings(args),
                              **mapper_args)
        _, warm_export, big_s = train_mapper(prior, big_cfg)
        warm_s, steps = warm_s + big_s, args.steps - big_steps
        notes = (f"{args.paired_steps} {args.warm_start} + {big_steps} sampler steps at t_ikl={big} + {steps} at "
                 f"t_ikl={args.t_ikl}")
    sampler_cfg = davi_config(task, run / "sampler", steps,
                              sampler_objective(args.t_ikl, warm_export, args.score_steps) + sampler_settings(args),
                              **mapper_args)
    sampler, _, sampler_s = train_mapper(prior, sampler_cfg)
    add("sampler", mapper_samples(sampler, op, y, args.samples), warm_s + sampler_s, notes)
    from davi.io.atomic import write_text

    write_text(cache, json.dumps(rows, indent=1))
    return rows


def run_red_diff(prior_name: str, task: str, args, work: Path) -> list[dict]:
    """RED-Diff's rows for one (prior, task) (cached apart from the training: a few CPU seconds here)."""
    cache = work / f"{prior_name}_{task}.red_diff.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    prior, op, y, posts = problem(prior_name, task, args.measurements)
    truths = truth_draws(posts, torch.Generator().manual_seed(TRUTH_SEED))  # the same draws as run_task's
    t0 = time.process_time()
    red = red_diff_estimates(prior, op, y, args.red_diff_seeds, num_steps=args.red_diff_steps)
    rows = [{"prior": prior_name, "task": task, "method": f"red-diff-{args.red_diff_steps}",
             **figures(red, posts, truths), "seconds": time.process_time() - t0,
             "notes": f"point estimates of {args.red_diff_seeds} seeds (their spread is optimiser noise)"}]
    from davi.io.atomic import write_text

    write_text(cache, json.dumps(rows, indent=1))
    return rows


def red_diff_estimates(prior, op, y: torch.Tensor, seeds: int, num_steps: int = 1000, lr: float = 0.25,
                       lam: float = 0.25) -> torch.Tensor:
    """(seeds, B, D): RED-Diff's point estimate from ``seeds`` noise seeds per y (unclamped)."""
    from davi.solvers.red_diff import RedDiff

    solver = RedDiff(prior, op, steps=num_steps, lr=lr, lam=lam)
    yy = y.float().repeat(seeds, 1, 1, 1)
    mu = solver(yy, seeds=list(range(yy.shape[0])))
    return mu.double().reshape(seeds, y.shape[0], -1)


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
SUFFIX = {"sampler": "", "paired": ":paired", "exact": ":exact", "target": ":target"}


def keyed(rows: list[dict]) -> dict:
    """The issue's format: {"<prior>/<task>[:variant]": {mean_err, var_ratio, var_ratio_top5_min/max, mode_dev,
    seconds, coverage}}."""
    out = {}
    for r in rows:
        suffix = SUFFIX.get(r["method"], ":" + r["method"])
        out[f"{r['prior']}/{r['task']}{suffix}"] = {
            "mean_err": r["mean_err"], "var_ratio": r["var_tr"], "var_ratio_top5_min": r["var_top_min"],
            "var_ratio_top5_max": r["var_top_max"], "mode_dev": r.get("mode_dev"), "seconds": r["seconds"],
            "coverage": r["coverage"]}
    return out


def table_rows(rows: list[dict]) -> list[dict]:
    """Rows as benchmarks/readme_tables.py reads them (rounded)."""
    out = []
    for r in rows:
        t = {"prior": r["prior"], "task": r["task"], "method": r["method"], "mean_err": round(r["mean_err"], 4),
             "max_err": round(r["mean_err_max"], 4), "var_tr": round(r["var_tr"], 3),
             "var_top5": [round(r["var_top_min"], 2), round(r["var_top_max"], 2)],
             "cov90": round(r["coverage"]["90"], 3), "seconds": round(r["seconds"], 1), "notes": r["notes"]}
        if r.get("mode_dev") is not None:
            t["mode_dev"] = round(r["mode_dev"], 3)
        out.append(t)
    return out


COLUMNS = [("prior", "prior", "{}"), ("task", "task", "{}"), ("method", "method", "{}"),
           ("mean_err", "mean err", "{:.4f}"), ("max_err", "max over y", "{:.4f}"), ("var_tr", "var tr", "{:.3f}"),
           ("top5", "var top-5", "{}"), ("mode_dev", "mode dev", "{:.3f}"), ("cov90", "90% coverage", "{:.3f}"),
           ("seconds", "CPU s", "{:.0f}"), ("notes", "notes", "{}")]


def goals(rows: list[dict]) -> list[str]:
    """The issue's goals for the sampler rows: Gaussian mean err <= 5%, trace and top-5 variance ratios in
    [0.5, 2]; mixture mode weights within 0.1; <= 600 CPU seconds per task."""
    out = []
    for r in (r for r in rows if r["method"] == "sampler"):
        checks = [("mean err <= 0.05", r["mean_err"] <= 0.05), ("var tr in [0.5, 2]", 0.5 <= r["var_tr"] <= 2),
                  ("top-5 in [0.5, 2]", 0.5 <= r["var_top5"][0] and r["var_top5"][1] <= 2),
                  ("<= 600 CPU s", r["seconds"] <= 600)]
        if "mode_dev" in r:
            checks.append(("mode dev <= 0.1", r["mode_dev"] <= 0.1))
        out.append(f"- {r['prior']} / {r['task']}: " + "; ".join(f"{n}: {'met' if ok else 'MISSED'}" for n, ok in checks))
    return out


def render_results(data: dict) -> str:
    from davi.eval.evaluate import markdown_table

    rows = [{**r, "top5": f"{r['var_top5'][0]:.2f}-{r['var_top5'][1]:.2f}"} for r in data["rows"]]
    return markdown_table(rows, COLUMNS) + "\n\nGoals (sampler rows):\n\n" + "\n".join(goals(data["rows"]))


def t_ikl_and_steps(text: str) -> tuple[int, int]:
    """``--curriculum 200:500`` -> (200, 500)."""
    try:
        t_ikl, steps = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T_IKL:STEPS, e.g. 200:500, got {text!r}") from None
    return t_ikl, steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="*", default=DEFAULT_TASKS, choices=list(TASKS))
    p.add_argument("--priors", nargs="*", default=list(PRIORS), choices=list(PRIORS))
    p.add_argument("--steps", type=int, default=None, help="sampler steps per task (default 1500; --quick 40)")
    p.add_argument("--paired-steps", type=int, default=None, help="paired steps (warm start; default 200; --quick 20)")
    p.add_argument("--t-ikl", type=int, default=20, help="the sampler's t_ikl (the presets' value)")
    p.add_argument("--curriculum", type=t_ikl_and_steps, default=None,
                   metavar="T_IKL:STEPS", help="train the first STEPS sampler steps at this larger t_ikl (of --steps)")
    p.add_argument("--score-steps", type=int, default=2, help="s_psi updates per mapper update (sampler)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--h", type=float, default=0.1, help="the mapper's input perturbation scale")
    p.add_argument("--score-condition", default="center", choices=("none", "lift", "center"),
                   help="what the sampler's s_psi sees besides x_t (davi.score_condition)")
    p.add_argument("--score-warmup", type=int, default=100, help="sampler steps that train s_psi only (of --steps)")
    p.add_argument("--lambda-mean", type=float, default=LAMBDA_MEAN,
                   help="weight of the sampler's mean-matching term (davi.lambda_mean; 0: off)")
    p.add_argument("--sampler-ppb", action="store_true", help="the sampler phase keeps the bridge (default: off)")
    p.add_argument("--sampler-override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for the sampler phase only (repeatable), e.g. train.lr=3e-4")
    p.add_argument("--warm-start", default="paired", choices=("paired", "regression"),
                   help="the sampler's warm start: the paired run, or a regression-only run (the posterior mean)")
    p.add_argument("--noise-channels", type=int, default=0, help="the mapper's extra N(0, 1) input channels")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="smoke run: 40 + 20 steps, 2 measurements, 64 samples")
    p.add_argument("--measurements", type=int, default=None, help="test measurements y per task (default 6)")
    p.add_argument("--samples", type=int, default=None, help="samples per y (default 256)")
    p.add_argument("--red-diff-steps", type=int, default=1000)
    p.add_argument("--red-diff-seeds", type=int, default=8, help="RED-Diff seeds per y (0: no RED-Diff rows)")
    p.add_argument("--work-dir", default="runs/posterior", help="per-task cache and training runs (resumable)")
    p.add_argument("--out", default=str(RESULTS / "posterior.json"))
    p.add_argument("--collect", action="store_true", help="train nothing: write the results of the cached tasks")
    args = p.parse_args()
    args.steps = args.steps or (40 if args.quick else 1500)
    args.paired_steps = args.paired_steps or (20 if args.quick else 200)
    args.measurements = args.measurements or (2 if args.quick else 6)
    args.samples = args.samples or (64 if args.quick else 256)
    if args.curriculum and not 0 < args.curriculum[1] < args.steps:
        p.error(f"--curriculum: its steps ({args.curriculum[1]}) must be fewer than --steps ({args.steps})")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    rows = []
    for prior_name in args.priors if not args.collect else []:
        for task in args.tasks:
            rows += run_task(prior_name, task, args, work)
            if args.red_diff_seeds:
                rows += run_red_diff(prior_name, task, args, work)
            print(f"{prior_name}/{task} done", flush=True)
    # every task cached so far (another process may run the other prior)
    rows = [r for prior_name in PRIORS for task in TASKS for suffix in (".json", ".red_diff.json")
            if (work / f"{prior_name}_{task}{suffix}").is_file()
            for r in json.loads((work / f"{prior_name}_{task}{suffix}").read_text())]
    head = (f"8x8 digits, sigma_y={SIGMA_Y}; Gaussian prior: fit_gaussian(classes 0-9, rank {RANK}); mixture: "
            f"fit_gmm(classes {GMM_CLASSES}, rank {RANK}). Mapper and score net: fresh UNet [16,32], no attention, "
            f"h=0.1, batch {args.batch_size}, lr {args.lr}, EMA 0.995. paired (PPB on): {args.paired_steps} steps, "
            f"t_ikl 1000, lambda_con 0.5, lambda_reg 1. sampler: warm-started from the {args.warm_start} mapper, "
            f"{args.steps} steps, t_ikl {args.t_ikl}, lambda_reg 0, derived consistency weight, "
            f"{args.score_steps} score update(s) per mapper update, s_psi conditioned: {args.score_condition}, "
            f"the first {args.score_warmup} steps s_psi only, mean matching {args.lambda_mean}, "
            f"PPB {'on' if args.sampler_ppb else 'off'}"
            f"{', ' + ' '.join(args.sampler_override) if args.sampler_override else ''}. {args.measurements} test measurements per task "
            f"(mixture: the most ambiguous of {32 * args.measurements}), {args.samples} samples per y; coverage "
            f"against {NUM_TRUTHS} exact posterior draws per y. seconds = CPU seconds of training, one thread "
            f"(the sampler's include its warm start). RED-Diff: {args.red_diff_steps} steps, lr 0.25, lambda 0.25, "
            f"{args.red_diff_seeds} seeds per y (point estimates).")
    data = {"command": command_line("posterior.py"), "head": head, "rows": table_rows(rows), **keyed(rows)}
    publish(Path(args.out), data, render_results)


# ----------------------------------------------------------------------------------------------
# the tables: posterior.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
@table("posterior", "posterior.json")
def render_posterior(data: dict) -> str:
    """The goals of the exact-posterior check (issue 11) for the sampler objective, with the paired objective
    beside it: on the Gaussian tasks mean error <= 5%, trace and top-5 variance ratios in [0.5, 2]; mixture mode
    weights within 0.1; <= 600 CPU seconds per task. From the per-(prior, task) rows of benchmarks/posterior.py."""
    rows = data["rows"]

    def of(method: str, prior: str) -> list[dict]:
        return [r for r in rows if r["method"] == method and r["prior"] == prior]

    def goal(name: str, test, value, fmt: str, prior: str = "gauss") -> dict:
        out = {"goal": name}
        for method in ("sampler", "paired"):
            rs = of(method, prior)
            out[method] = (f"{met(sum(map(test, rs)), len(rs))} of {len(rs)} ({span([value(r) for r in rs], fmt)})"
                           if rs else "")
        return out

    out = [
        goal("Gaussian: posterior mean within 5%", lambda r: r["mean_err"] <= 0.05, lambda r: 100 * r["mean_err"],
             "{:.1f}%"),
        goal("Gaussian: trace variance ratio in [0.5, 2]", lambda r: 0.5 <= r["var_tr"] <= 2, lambda r: r["var_tr"],
             "{:.2f}"),
        goal("Gaussian: top-5 eigen-direction variance ratios in [0.5, 2]",
             lambda r: 0.5 <= r["var_top5"][0] and r["var_top5"][1] <= 2, lambda r: r["var_top5"][0], "{:.2f}"),
        goal("mixture: mode weights within 0.1", lambda r: r["mode_dev"] <= 0.1, lambda r: r["mode_dev"], "{:.2f}",
             prior="gmm"),
        goal("at most 600 CPU s of training per task", lambda r: r["seconds"] <= 600, lambda r: r["seconds"],
             "{:.0f} s", prior="gauss"),
    ]
    out[2]["goal"] += " (smallest ratio shown)"
    target = [100 * r["mean_err"] for r in rows if r["method"] == "target"]
    floor = [100 * r["mean_err"] for r in rows if r["method"] == "exact"]
    if target:
        out.append({"goal": "(reference) closed-form optimum of the sampler objective: mean error",
                    "sampler": f"{span(target, '{:.1f}%')} (sampled like the mapper)", "paired": ""})
    out.append({"goal": "(reference) exact posterior samples: mean error (Monte-Carlo floor)",
                "sampler": span(floor, "{:.1f}%"), "paired": ""})
    return markdown_table(out, [("goal", "goal", "{}"), ("sampler", "sampler objective", "{}"),
                                ("paired", "paired objective", "{}")])


@table("posterior_red_diff", "posterior.json", inline=True)
def render_posterior_red_diff(data: dict) -> str:
    return span([100 * r["mean_err"] for r in data["rows"] if r["method"].startswith("red-diff")], "{:.1f}%")


if __name__ == "__main__":
    main()
