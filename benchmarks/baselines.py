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

**Digits** (``--digits N``): PSNR / SSIM / NFE / seconds per image of dps, diffpir, ddrm on the first N of
benchmarks/compare.py's 200 held-out test digits, one task, with the bundled prior; labelled partial.
The full comparison (200 digits, sr4 / deblur / box, FD/KID, bootstrap) is not run here (see
docs/baselines.md for the command a later session runs).

    python benchmarks/baselines.py                              # leaderboard (resumable: --work-dir cache)
    python benchmarks/baselines.py --priors gauss --tasks sr4 --samples 64 --out /tmp/b.json   # smoke
    python benchmarks/baselines.py --digits 16 --digit-task sr4 --no-leaderboard   # partial digit table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

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
    from posterior import TRUTH_SEED, figures, problem, truth_draws

    from davi.baselines import baseline_method

    prior, op, y, posts = problem(prior_name, task, SimpleNamespace(measurements=args.measurements))
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
    from posterior import DEFAULT_TASKS

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
# digits (partial)
# ----------------------------------------------------------------------------------------------
def digits(args) -> dict:
    """PSNR / SSIM / NFE / s per image of the baselines on the first ``args.digits`` of compare.py's 200
    held-out test digits (the same y: measured as a block of 200 with noise seed 0, then cut), one sample
    each with compare.py's per-image seeds (seed 0); restorations cached in chunks (resumable)."""
    from davi.baselines import baseline_method
    from davi.eval.metrics import psnr, ssim
    from davi.eval.tasks import DigitTask
    from davi.io.chunks import digest, run_in_chunks

    task = DigitTask.load(args.digit_task, images=200)
    x0 = task.test_blocks(1)[0]
    y = task.measure(x0)[: args.digits]
    x0 = x0[: args.digits]
    out = {}
    for name in args.methods:
        method = baseline_method(name, task.prior, task.operator)
        folder = Path(args.work_dir) / "digits" / args.digit_task / name
        key = lambda a, b: {"method": name, "settings": str(method.settings), "y": digest(y[a:b])}  # noqa: E731
        timing = folder / "seconds.json"  # per chunk, kept beside the cached restorations

        def solve(a: int, b: int):
            t0 = time.perf_counter()
            x = method(y[a:b], [i for i in range(a, b)], 1)[0].cpu()
            seconds = json.loads(timing.read_text()) if timing.is_file() else {}
            write_text(timing, json.dumps({**seconds, f"{a}-{b}": (time.perf_counter() - t0) / (b - a)}))
            return x

        xh = run_in_chunks(folder, key, len(y), args.digit_chunk, solve,
                           on_chunk=lambda a, b, new: log(f"digits {name}: {a}-{b} {'done' if new else 'cached'}"))
        seconds = list(json.loads(timing.read_text()).values()) if timing.is_file() else []
        out[name] = {"psnr": float(psnr(xh, x0).mean()), "ssim": float(ssim(xh, x0).mean()),
                     "nfe": method.nfe_per_sample, "s_per_image": sum(seconds) / len(seconds) if seconds else None}
        log(f"digits/{args.digit_task} {name}: {out[name]}")
    return {"partial": True, "task": args.digit_task, "images": args.digits, "methods": out,
            "note": (f"PARTIAL: first {args.digits} of compare.py's 200 held-out test digits, one sample each "
                     f"(seed i for digit i), deepinv defaults, CPU, one thread; no FD/KID, no bootstrap, no tuning")}


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
def _fmt(v, fmt: str) -> str:
    return "" if v is None else fmt.format(v)


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
    text = render_leaderboard_table(data)
    if data.get("digits"):
        d = data["digits"]
        lines = [f"\n\nDigits, task {d['task']} ({d['note']}):\n"]
        lines += [f"- {m}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}, {r['nfe']} NFE, "
                  f"{_fmt(r['s_per_image'], '{:.1f}')} s/image"
                  for m, r in d["methods"].items()]
        text += "\n".join(lines)
    return text


def main() -> None:
    from posterior import DEFAULT_TASKS, PRIORS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--priors", nargs="*", default=list(PRIORS), choices=list(PRIORS))
    p.add_argument("--tasks", nargs="*", default=list(DEFAULT_TASKS))
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--samples", type=int, default=256, help="samples per y (posterior.py's 256)")
    p.add_argument("--measurements", type=int, default=6, help="test measurements per task (posterior.py's 6)")
    p.add_argument("--chunk", type=int, default=64, help="samples per y in one deepinv run (one seed)")
    p.add_argument("--no-leaderboard", action="store_true")
    p.add_argument("--digits", type=int, default=0, help="also the partial digit table on the first N test digits")
    p.add_argument("--digit-task", default="sr4", choices=("sr4", "deblur", "box"))
    p.add_argument("--digit-chunk", type=int, default=8, help="digits per cached chunk")
    p.add_argument("--posterior", default=str(RESULTS / "posterior.json"))
    p.add_argument("--work-dir", default="runs/baselines", help="per-(prior, task, method) cache (resumable)")
    p.add_argument("--out", default=str(RESULTS / "baselines.json"))
    args = p.parse_args()
    from davi.baselines import DEEPINV_VERSION

    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    data = {"command": command_line("baselines.py"), "deepinv": DEEPINV_VERSION,
            "head": (f"Posterior leaderboard on the analytic priors of benchmarks/posterior.py (8x8, sigma_y 0.05): "
                     f"{args.samples} samples per y, {args.measurements} y per task; dps/diffpir/ddrm at deepinv "
                     f"{DEEPINV_VERSION} defaults through davi.baselines, unclamped; davi_sampler, davi_paired, "
                     f"red_diff_1000 and exact from posterior.json."),
            "leaderboard_command": old.get("leaderboard_command"), "leaderboard": old.get("leaderboard", {}),
            "digits_command": old.get("digits_command"), "digits": old.get("digits")}
    if not args.no_leaderboard:
        data["leaderboard"].update(leaderboard(args))
        data["leaderboard_command"] = data["command"]
    if args.digits:
        data["digits"] = digits(args)
        data["digits_command"] = data["command"]
    publish(out, data, render_baselines)


if __name__ == "__main__":
    main()
