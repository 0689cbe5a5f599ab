"""README tables generated from the benchmark results, so the README cannot drift from them.

A README table lives between two markers, ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``.
``TABLES`` maps each NAME to the JSON file(s) in ``benchmarks/results/`` that hold the measured
numbers and to a render function (the parsed JSON -> Markdown). The benchmark that measured the
numbers calls the same render function through ``publish`` (JSON + its ``.md`` beside it), so
the README table and the results ``.md`` are the same text.

    python benchmarks/readme_tables.py            # rewrite the README's marked tables from the JSONs
    python benchmarks/readme_tables.py --check    # exit 1 naming every table that differs

Adding a table: write a render function, decorate it with ``@table("name", "file.json")``,
put the two markers in the README and run this script once. The render function receives one
parsed JSON per file named in the decorator.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from davi.io.atomic import write_text
from davi.eval.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
RESULTS_PAGE = ROOT / "docs" / "results.md"  # long tables the README summarises and links to


@dataclass(frozen=True)
class Table:
    sources: tuple[str, ...]  # JSON files in benchmarks/results/
    render: Callable[..., str]  # render(*parsed_jsons) -> Markdown
    inline: bool = False  # rendered inside a sentence (no blank lines around it)


TABLES: dict[str, Table] = {}


def table(name: str, *sources: str, inline: bool = False):
    """Register ``render`` as the README table ``name``, rendered from ``sources``."""

    def register(render: Callable[..., str]) -> Callable[..., str]:
        TABLES[name] = Table(tuple(sources), render, inline)
        return render

    return register


# ----------------------------------------------------------------------------------------------
# writing a benchmark's results
# ----------------------------------------------------------------------------------------------
def results_markdown(data: dict, render: Callable[..., str]) -> str:
    """The results ``.md`` of one run: its description, its command, then the rendered table."""
    head = data.get("head", "")
    return (f"{head}\n\n" if head else "") + f"Command: {data['command']}\n\n{render(data)}\n"


def publish(json_path: str | Path, data: dict, render: Callable[..., str]) -> None:
    """Write a run's results atomically: ``json_path`` (the numbers) and the ``.md`` beside it
    (``results_markdown``); print the table. ``data`` needs ``command`` and ``rows``-like content
    the render function understands; ``head`` (one paragraph of settings) is optional."""
    json_path = Path(json_path)
    write_text(json_path, json.dumps(data, indent=2) + "\n")
    md = json_path.with_suffix(".md")
    write_text(md, results_markdown(data, render))
    print(render(data))
    print(f"wrote {json_path} and {md}")


def command_line(script: str) -> str:
    """The command that ran this benchmark, as recorded in its results."""
    return " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])


# ----------------------------------------------------------------------------------------------
# the tables
# ----------------------------------------------------------------------------------------------
TASK_COLUMNS = [("task", "task", "{}"), ("method", "method", "{}"), ("steps", "train steps", "{}"),
                ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                ("classifier_fd", "classifier FD", "{:.2f}"), ("s_per_step", "s / train step (CPU)", "{:.2f}")]


@table("tasks", "tasks.json")
def render_tasks(data: dict) -> str:
    return markdown_table(data["rows"], TASK_COLUMNS)


def _task_gains(data: dict) -> list[tuple[float, float]]:
    """(PSNR gain over lift in dB, lift's classifier FD / the method's) for every trained row."""
    lift = {r["task"]: r for r in data["rows"] if r["method"] == "lift(y)"}
    return [(r["psnr"] - lift[r["task"]]["psnr"], lift[r["task"]]["classifier_fd"] / r["classifier_fd"])
            for r in data["rows"] if r["method"] != "lift(y)"]


@table("tasks_psnr_gain", "tasks.json", inline=True)
def render_tasks_psnr_gain(data: dict) -> str:
    gains = [g for g, _ in _task_gains(data)]
    return f"{min(gains):+.1f} to {max(gains):+.1f} dB"


@table("tasks_fd_drop", "tasks.json", inline=True)
def render_tasks_fd_drop(data: dict) -> str:
    drops = [d for _, d in _task_gains(data)]
    return f"{min(drops):.1f}x to {max(drops):.0f}x"


@table("tasks_ikl_vs_regression", "tasks.json", inline=True)
def render_tasks_ikl_vs_regression(data: dict) -> str:
    """Classifier FD of full DAVI vs regression only, per task (the realism the IKL term buys)."""
    fd = {(r["task"], r["method"]): r["classifier_fd"] for r in data["rows"]}
    names = {"sr4": "SR x4", "box": "box", "deblur": "deblur"}
    return ", ".join(f"{fd[t, 'davi']:.3g} vs {fd[t, 'regression only (no IKL)']:.3g} for {names.get(t, t)}"
                     for t in names if (t, "davi") in fd)


@table("tasks_davi_seconds_per_step", "tasks.json", inline=True)
def render_tasks_davi_seconds_per_step(data: dict) -> str:
    return _span([r["s_per_step"] for r in data["rows"] if r["method"] == "davi"], "{:.1f}") + " s"


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
    davi = rows.get("davi")
    measured = [k for k in COMPARE_RED_DIFF if k in rows]
    missing = [COMPARE_METHODS[k] for k in COMPARE_RED_DIFF if k not in rows]
    verdict = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    out = {"task": task}
    if davi and measured:
        # realism alone: against real digits nothing restores, where compare.json has them (benchmarks/realism_floor.py)
        independent = all("fd_independent" in rows[k] for k in ("davi", *measured))
        fd_key, kid_key = ("fd_independent", "kid_independent") if independent else ("classifier_fd", "kid")
        fd = min(rows[k][fd_key] for k in measured)
        kid = min(rows[k][kid_key] for k in measured)
        best = max(rows[k]["psnr"] for k in measured)
        # with a RED-Diff row still pending, a miss is final (it must beat every setting), a pass is not
        partial = lambda ok: ("met so far" if ok else "**not met**") + f" ({', '.join(missing)} pending)"  # noqa: E731
        judge = partial if missing else verdict
        point = (f"FD {davi[fd_key]:.2f} vs {fd:.2f}, KID {davi[kid_key]:.3f} vs {kid:.3f}"
                 + (" (vs other real digits)" if independent else ""))
        judged = _realism_judgement(data, task, measured) if independent else None
        if judged is None:
            out["realism"] = point + ": " + judge(davi[fd_key] < fd and davi[kid_key] < kid)
        elif judged[0] == "tie":  # neither a pass nor a miss, pending or not
            out["realism"] = f"{point}: **tie** ({judged[1]})" + (f" ({', '.join(missing)} pending)" if missing else "")
        else:
            out["realism"] = f"{point}: {judge(judged[0] == 'met')}; {judged[1]}"
        out["psnr"] = f"{davi['psnr'] - best:+.2f} dB: " + judge(davi["psnr"] >= best - 1)
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
        text += f", pending on {', '.join(pending)} (RED-Diff not finished)" if pending else ""
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
    return _span(values, fmt) + ("x" if ratio else " s") + ("" if len(timing) == len(COMPARE_TASKS) else f" ({', '.join(timing)} only)")


@table("compare_red_diff_1000_seconds", "compare.json", inline=True)
def render_compare_red_diff_1000_seconds(data: dict) -> str:
    return _compare_timing(data, "red_diff_1000", False, "{:.1f}")


@table("compare_speedup_1000", "compare.json", inline=True)
def render_compare_speedup_1000(data: dict) -> str:
    return _compare_timing(data, "red_diff_1000", True, "{:.0f}")


@table("compare_speedup_100", "compare.json", inline=True)
def render_compare_speedup_100(data: dict) -> str:
    return _compare_timing(data, "red_diff_100", True, "{:.0f}")


TRAIN_COST_COLUMNS = [("what", "what", "{}"), ("seconds", "seconds", "{:.3f}"),
                      ("ratio", "iteration / sum of its parts", "{:.2f}"),
                      ("vs_reg", "DAVI / regression iteration", "{:.2f}")]


@table("train_cost", "train_cost.json")
def render_train_cost(data: dict) -> str:
    return markdown_table(data["rows"], TRAIN_COST_COLUMNS)


def _davi_iteration(data: dict) -> dict:
    return next(r for r in data["rows"] if r["what"].startswith("DAVI iteration"))


@table("train_cost_overhead", "train_cost.json", inline=True)
def render_train_cost_overhead(data: dict) -> str:
    return f"{_davi_iteration(data)['ratio']:.2f}x"


@table("train_cost_vs_regression", "train_cost.json", inline=True)
def render_train_cost_vs_regression(data: dict) -> str:
    return f"{_davi_iteration(data)['vs_reg']:.1f}x"


ONNX_SPEED_COLUMNS = [("threads", "threads", "{}"), ("batch", "batch", "{}"),
                      ("torch_ms", "PyTorch eager (ms)", "{:.1f}"), ("onnx_ms", "ONNX Runtime (ms)", "{:.1f}"),
                      ("speedup", "speed-up", "{:.2f}x"), ("verdict", "goal", "{}"),
                      ("max_abs_diff", "max abs difference", "{:.1e}")]


@table("onnx_speed", "onnx_speed.json")
def render_onnx_speed(data: dict) -> str:
    """benchmarks/onnx_speed.py: the same restore in both runtimes, with the speed-up goals."""
    def verdict(r: dict) -> str:
        if not r.get("goal"):
            return ""
        return f">= {r['goal']}x: " + ("met" if r["speedup"] >= r["goal"] else "**not met**")

    return markdown_table([{**r, "verdict": verdict(r)} for r in data["rows"]], ONNX_SPEED_COLUMNS)


@table("prior", "prior_mnist.json")
def render_prior(data: dict) -> str:
    """Mean classifier confidence and class shares of the prior's samples (bars: >= 0.8, 5-15%)."""
    confidence = markdown_table(
        [{"c": f"**{data['mean_confidence']:.3f}** (real test digits: {data['real_test_mean_confidence']:.3f})",
          "bar": ">= 0.8"}], [("c", "mean classifier confidence", "{}"), ("bar", "bar", "{}")])
    shares = data["class_histogram"]
    histogram = markdown_table(
        [{"digit": f"share of {data['samples']:,} samples", **{str(d): f"{100 * s:.1f}%" for d, s in enumerate(shares)}}],
        [("digit", "digit", "{}"), *[(str(d), str(d), "{}") for d in range(len(shares))]])
    met = all(0.05 <= s <= 0.15 for s in shares)
    verdict = (f"Every class is between 5% and 15% ({100 * min(shares):.1f}%-{100 * max(shares):.1f}%): bar met, "
               "no collapse." if met else
               f"Class shares {100 * min(shares):.1f}%-{100 * max(shares):.1f}%: the 5-15% bar is **missed**.")
    return f"{confidence}\n\n{histogram}\n\n{verdict}"


CLASSIFIER_COLUMNS = [("split", "digits", "{}"), ("accuracy", "accuracy", "{:.3f}"),
                      ("confidence", "mean confidence", "{:.3f}"), ("recorded", "at training", "{}")]


@table("classifier", "classifier.json")
def render_classifier(data: dict) -> str:
    return markdown_table(data["rows"], CLASSIFIER_COLUMNS)


SPEED_COLUMNS = [("arch", "arch", "{}"), ("dtype", "dtype", "{}"), ("batch", "batch", "{}"),
                 ("layout", "layout", "{}"), ("compiled", "compiled", "{}"), ("noise", "DAVI noise drawn on", "{}"),
                 ("davi", "DAVI s/img (1 NFE)", "{:.4g}"), ("davi_ips", "DAVI img/s", "{:.4g}"),
                 ("step", "RED-Diff s/img per step", "{:.4g}"), ("step_over_davi", "step / DAVI", "{:.2f}"),
                 ("rd100", "RED-Diff-100 s/img", "{:.4g}"), ("rd1000", "RED-Diff-1000 s/img", "{:.4g}"),
                 ("speedup", "RED-Diff-1000 / DAVI", "{:.0f}")]


def render_speed(data: dict) -> str:
    """benchmarks/speed.py: seconds per image of DAVI and per RED-Diff step, per dtype and batch size."""
    return markdown_table([{"noise": "cpu", **r} for r in data["rows"]], SPEED_COLUMNS)


@table("speed_256", "speed_cpu_ffhq256.json")
def render_speed_256(data: dict) -> str:
    """The README's 256 x 256 speed table: the batch-1 rows of benchmarks/speed.py at the prior's size."""
    rows = [{**r, "dtype": r["dtype"] + ("" if r["dtype"].startswith("fp32") else " (autocast)")}
            for r in data["rows"] if r["batch"] == 1]
    where = f"{data['resolution']}x{data['resolution']}, {data['device']}"
    return markdown_table(rows, [("dtype", where, "{}"), ("davi", "DAVI s/image (1 NFE)", "{:.4g}"),
                                 ("step", "RED-Diff s/step", "{:.4g}"), ("speedup", "RED-Diff-1000 / DAVI", "{:.0f}x")])


@table("speed_256_params", "speed_cpu_ffhq256.json", inline=True)
def render_speed_256_params(data: dict) -> str:
    return f"{data['params'] / 1e6:.1f}M"


def render_memory(data: dict) -> str:
    """benchmarks/memory.py: peak memory of one training iteration per batch size and checkpointing;
    the allocator's reserved memory where it was measured (CUDA)."""
    reserved = [("reserved", "max reserved (GiB)", "{:.3f}")] if any("reserved" in r for r in data["rows"]) else []
    return markdown_table(data["rows"], [
        ("batch", "batch / GPU", "{}"), ("ckpt", "grad ckpt", "{}"), ("precision", "precision", "{}"),
        ("resident", "resident before (GiB)", "{:.3f}"), ("peak", "peak (GiB)", "{:.3f}"),
        ("act", "peak - resident (GiB)", "{:.3f}"), *reserved, ("seconds", "s / iteration", "{:.3f}"),
        ("how", "how", "{}")])


@table("memory_256_peak", "memory_cpu_ffhq256.json", inline=True)
def render_memory_256_peak(data: dict) -> str:
    """Batch-1 peak of benchmarks/memory.py at the prior's size, without and with gradient checkpointing."""
    peak = {r["ckpt"]: r["peak"] for r in data["rows"] if r["batch"] == 1}
    return f"{peak['off']:.1f} GiB, {peak['on']:.1f} GiB with gradient checkpointing"


SPEED_GPU_FILES = ("speed_gpu_eager.json", "speed_gpu_channels_last.json", "speed_gpu_compile.json",
                   "speed_gpu_compile_ro.json", "speed_gpu_devnoise.json", "speed_gpu_devnoise_compile.json",
                   "speed_gpu_devnoise_compile_ro.json")


def _gpu_setting(row: dict) -> str:
    compiled = "eager" if row["compiled"] == "no" else f"compile {row['compiled']}"
    layout = ", channels_last" if row["layout"] == "channels_last" else ""
    return f"{row['dtype']}, {compiled}{layout}, noise on {'GPU' if row.get('noise') == 'device' else 'CPU'}"


@table("speed_gpu_all", *SPEED_GPU_FILES)
def render_speed_gpu_all(*runs: dict) -> str:
    """Every GPU speed row (benchmarks/speed.py), one line per setting and batch size."""
    rows = [{**r, "setting": _gpu_setting(r), "lease": run["machine"].split("(")[1].split(":")[0],
             "davi_ms": 1e3 * r["davi"], "step_ms": 1e3 * r["step"], "speedup100": r["speedup"] / 10}
            for run in runs for r in run["rows"]]
    return markdown_table(rows, [("setting", "setting", "{}"), ("lease", "machine", "{}"), ("batch", "batch", "{}"),
                                 ("davi_ms", "DAVI ms/image", "{:.2f}"), ("step_ms", "RED-Diff ms/step/image", "{:.2f}"),
                                 ("speedup", "RED-Diff-1000 / DAVI", "{:.0f}x"),
                                 ("speedup100", "RED-Diff-100 / DAVI", "{:.0f}x")])


@table("speed_gpu", "speed_gpu_eager.json", "speed_gpu_devnoise.json", "speed_gpu_devnoise_compile_ro.json")
def render_speed_gpu(default: dict, device_noise: dict, fastest: dict) -> str:
    """The README's GPU speed table: infer.py's default, the eager half-precision path and the fastest."""
    picks = [(default, "fp32"), (device_noise, "bf16"), (fastest, "bf16")]
    rows = []
    for run, dtype in picks:
        by_batch = {r["batch"]: r for r in run["rows"] if r["dtype"] == dtype}
        b1, b32 = by_batch[1], by_batch[32]
        rows.append({"setting": _gpu_setting(b1), "b1": 1e3 * b1["davi"], "b32": 1e3 * b32["davi"],
                     "rd1000": b1["rd1000"], "x1000": b1["speedup"], "x100": b1["speedup"] / 10})
    return markdown_table(rows, [("setting", "setting (both methods)", "{}"), ("b1", "DAVI ms/image, batch 1", "{:.1f}"),
                                 ("b32", "DAVI ms/image, batch 32", "{:.1f}"),
                                 ("rd1000", "RED-Diff-1000 s/image, batch 1", "{:.1f}"),
                                 ("x1000", "RED-Diff-1000 / DAVI", "{:.0f}x"), ("x100", "RED-Diff-100 / DAVI", "{:.0f}x")])


@table("memory_gpu", "memory_gpu_fp16.json", "memory_gpu_bf16.json")
def render_memory_gpu(fp16: dict, bf16: dict) -> str:
    """Peak GPU memory of one DAVI training iteration (benchmarks/memory.py on CUDA), per batch size."""
    peak = {(run["rows"][0]["precision"], r["ckpt"], r["batch"]): r["peak"] for run in (fp16, bf16) for r in run["rows"]}
    rows = [{"batch": b, **{f"{p}_{c}": peak[p, c, b] for p in ("fp16", "bf16") for c in ("off", "on")}}
            for b in sorted({k[2] for k in peak})]
    return markdown_table(rows, [("batch", "batch / GPU", "{}"), ("fp16_off", "fp16 (GiB)", "{:.2f}"),
                                 ("fp16_on", "fp16 + grad ckpt (GiB)", "{:.2f}"), ("bf16_off", "bf16 (GiB)", "{:.2f}"),
                                 ("bf16_on", "bf16 + grad ckpt (GiB)", "{:.2f}")])


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def _met(n_met: int, n: int) -> str:
    return "met on all" if n_met == n else ("**not met** on any" if n_met == 0 else f"met on {n_met}")


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
            out[method] = (f"{_met(sum(map(test, rs)), len(rs))} of {len(rs)} ({_span([value(r) for r in rs], fmt)})"
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
                    "sampler": f"{_span(target, '{:.1f}%')} (sampled like the mapper)", "paired": ""})
    out.append({"goal": "(reference) exact posterior samples: mean error (Monte-Carlo floor)",
                "sampler": _span(floor, "{:.1f}%"), "paired": ""})
    return markdown_table(out, [("goal", "goal", "{}"), ("sampler", "sampler objective", "{}"),
                                ("paired", "paired objective", "{}")])


@table("posterior_red_diff", "posterior.json", inline=True)
def render_posterior_red_diff(data: dict) -> str:
    return _span([100 * r["mean_err"] for r in data["rows"] if r["method"].startswith("red-diff")], "{:.1f}%")


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


UNPAIRED_VARIANTS = {"paired": "paired DAVI", "unpaired": "measurement-only, no anchors (PPB off)",
                     "unpaired_anchors": "measurement-only + RED-Diff anchors", "red_diff_100": "RED-Diff-100"}
UNPAIRED_COLUMNS = [("task", "task", "{}"), ("variant", "method", "{}"), ("psnr", "PSNR (dB)", "{:.2f}"),
                    ("ssim", "SSIM", "{:.3f}"), ("classifier_fd", "classifier FD", "{:.2f}"),
                    ("train_steps", "mapper steps", "{}"), ("train_set", "train digits measured", "{}"),
                    ("clean_images", "clean images used", "{}"), ("train_cpu_minutes", "training CPU min", "{:.1f}"),
                    ("precompute_cpu_minutes", "RED-Diff CPU min", "{:.1f}")]


@table("unpaired", "unpaired.json")
def render_unpaired(data: dict) -> str:
    """benchmarks/unpaired.py: {task: {variant: metrics}}; RED-Diff minutes are anchors or test-time solves."""
    rows = []
    for task in ("sr4", "deblur", "box"):
        for key, name in UNPAIRED_VARIANTS.items():
            r = data.get(task, {}).get(key)
            if r is not None:
                minutes = r.get("anchor_cpu_minutes") if key != "red_diff_100" else r.get("cpu_minutes")
                row = {**r, "task": task, "variant": name, "precompute_cpu_minutes": minutes,
                       "train_set": r.get("train_images"), "clean_images": r.get("train_images")}
                if key.startswith("unpaired"):
                    row["clean_images"] = 0  # measurements only
                rows.append({k: "" if v is None else v for k, v in row.items()})
    return markdown_table(rows, UNPAIRED_COLUMNS)


@table("unpaired_goals", "unpaired.json", inline=True)
def render_unpaired_goals(data: dict) -> str:
    """Issue 13's goal per task: measurement-only + anchors within 1 dB PSNR of paired DAVI and a lower
    classifier FD than RED-Diff-100 (a task missing a row is named, not counted)."""
    parts, met, measured = [], 0, 0
    for task in ("sr4", "deblur", "box"):
        r = data.get(task, {})
        if not all(k in r for k in ("paired", "unpaired_anchors", "red_diff_100")):
            parts.append(f"{task}: not measured")
            continue
        gap = r["unpaired_anchors"]["psnr"] - r["paired"]["psnr"]
        fd, fd_rd = r["unpaired_anchors"]["classifier_fd"], r["red_diff_100"]["classifier_fd"]
        ok = gap >= -1 and fd < fd_rd
        measured, met = measured + 1, met + ok
        parts.append(f"{task}: {gap:+.2f} dB vs paired, classifier FD {fd:.3g} vs RED-Diff-100's {fd_rd:.3g}"
                     f" ({'met' if ok else 'not met'})")
    return f"goal met on {met} of {measured} measured tasks (needed: 2 of 3); " + "; ".join(parts)


PAIRED_TASKS = ("sr4", "deblur", "box")
SWEEP_COLUMNS = [("name", "setting", "{}"), ("overrides", "overrides", "{}"), ("psnr", "PSNR (dB)", "{:.2f}"),
                 ("ssim", "SSIM", "{:.3f}"), ("classifier_fd", "classifier FD", "{:.2f}"), ("kid", "KID", "{:.3f}"),
                 ("kid_std", "KID std", "{:.3f}"), ("picked", "picked", "{}")]


def render_sweep(data: dict) -> str:
    """benchmarks/sweep.py: one row per setting of the paired objective, the picked one marked."""
    return markdown_table([{**r, "picked": "yes" if r["name"] == data["picked"] else ""} for r in data["rows"]],
                          SWEEP_COLUMNS)


CONVERGENCE_COLUMNS = [("run", "run", "{}"), ("step", "step", "{}"), ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                       ("classifier_fd", "classifier FD", "{:.2f}"), ("kid", "KID", "{:.3f}"),
                       ("kid_std", "KID std", "{:.3f}")]


def render_convergence(data: dict) -> str:
    """benchmarks/convergence.py: held-out scores of every checkpoint of one or more runs."""
    return markdown_table(data["rows"], CONVERGENCE_COLUMNS)


def render_convergence_summary(data: dict) -> str:
    """First and last checkpoint of the first run, then the last of each continuation, for a sentence."""
    rows = data["rows"]
    runs = list(dict.fromkeys(r.get("run", "") for r in rows))
    first = [r for r in rows if r.get("run", "") == runs[0]]
    fig = "{psnr:.2f} dB, classifier FD {classifier_fd:.2f}, KID {kid:.3f}"
    out = f"{fig.format(**first[0])} at step {first[0]['step']}"
    if len(first) > 1:
        out = f"from {out} to {fig.format(**first[-1])} at step {first[-1]['step']}"
    for run in runs[1:]:
        last = [r for r in rows if r.get("run", "") == run][-1]
        out += f"; continued as `{run}`: {fig.format(**last)} at step {last['step']}"
    return out


def render_sweep_summary(data: dict) -> str:
    """The sweep's pick and how the most realistic setting did, for a sentence."""
    rows = {r["name"]: r for r in data["rows"]}
    picked, realist = rows[data["picked"]], min(data["rows"], key=lambda r: r["kid"])
    best = max(r["psnr"] for r in data["rows"])
    out = (f"`{picked['name']}` ({picked['overrides']}: {picked['psnr']:.2f} dB, KID {picked['kid']:.3f}) of "
           f"{len(rows)} settings")
    if realist is not picked:
        out += (f"; the most realistic, `{realist['name']}` (KID {realist['kid']:.3f}, classifier FD "
                f"{realist['classifier_fd']:.2f}), is {best - realist['psnr']:.2f} dB below the best PSNR")
    return out


# one sweep and one convergence study per paired task (benchmarks/sweep.py, benchmarks/convergence.py)
for _task in PAIRED_TASKS:
    table(f"sweep_{_task}", f"sweep_{_task}.json")(render_sweep)
    table(f"sweep_{_task}_summary", f"sweep_{_task}.json", inline=True)(render_sweep_summary)
    table(f"convergence_{_task}", f"convergence_{_task}.json")(render_convergence)
    table(f"convergence_{_task}_summary", f"convergence_{_task}.json", inline=True)(render_convergence_summary)


# ----------------------------------------------------------------------------------------------
# the README
# ----------------------------------------------------------------------------------------------
def _region(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{re.escape(name)} -->)(.*?)(<!-- /table:{re.escape(name)} -->)", re.S)


def render(name: str, results: Path = RESULTS) -> str:
    """The text between ``name``'s markers, rendered from its JSON(s) in ``results``."""
    entry = TABLES[name]
    data = []
    for source in entry.sources:
        path = Path(results) / source
        if not path.is_file():
            raise SystemExit(f"error: table {name!r}: results file {path} is missing")
        try:
            data.append(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: table {name!r}: {path} is not valid JSON ({e})") from None
    try:
        text = entry.render(*data).strip()
    except (KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"error: table {name!r}: {', '.join(entry.sources)} lacks what the table needs "
                         f"({type(e).__name__}: {e})") from None
    return text if entry.inline else f"\n{text}\n"


def update(texts: dict[Path, str], results: Path = RESULTS) -> tuple[dict[Path, str], list[str]]:
    """(each document's text with every registered table re-rendered, names of the tables that changed).

    ``texts`` maps a document (the README, docs/results.md) to its text; a table sits in one of them.
    A registered table without markers in any document is an error (it would never be checked), as
    is a missing or unusable JSON; every such table is named, in one line."""
    texts, changed, errors = dict(texts), [], []
    for name in TABLES:
        found = [(doc, m) for doc, text in texts.items() if (m := _region(name).search(text))]
        if not found:
            errors.append(f"table {name!r} has no <!-- table:{name} --> ... <!-- /table:{name} --> markers in "
                          + " or ".join(str(d.name) for d in texts))
            continue
        try:
            new = render(name, results)
        except SystemExit as e:
            errors.append(str(e).removeprefix("error: "))
            continue
        doc, match = found[0]
        if match.group(2) != new:
            changed.append(name)
            texts[doc] = texts[doc][:match.start(2)] + new + texts[doc][match.end(2):]
    if errors:
        raise SystemExit("error: " + "; ".join(errors))
    return texts, changed


def documents(readme: Path = README) -> dict[Path, str]:
    """The README and the long results page it links to (docs/results.md), as texts."""
    docs = [Path(readme), RESULTS_PAGE]
    return {d: d.read_text() for d in docs if d.is_file()}


def check(readme: Path = README, results: Path = RESULTS) -> list[str]:
    """Names of the tables (README, docs/results.md) that differ from what their JSONs render to."""
    return update(documents(readme), results)[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not args.readme.is_file():
        raise SystemExit(f"error: {args.readme} does not exist")
    before = documents(args.readme)
    after, changed = update(before, args.results)
    if args.check:
        for name in changed:
            print(f"table {name!r} differs from {', '.join(TABLES[name].sources)} "
                  f"(run python benchmarks/readme_tables.py)", file=sys.stderr)
        return 1 if changed else 0
    for doc, text in after.items():
        if text != before[doc]:
            write_text(doc, text)
    print(f"{args.readme}: {'rewrote ' + ', '.join(changed) if changed else 'all tables up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
