"""PyTorch eager vs ONNX Runtime for one mapper's one-step restore, CPU, same threads, same inputs.

    python benchmarks/onnx_speed.py                   # shipped SR x4 mapper, batch 1 and 50, 2 then 1 thread(s)

Exports the mapper to ONNX in a temporary copy of the export (the shipped folder stays as it is),
checks that both runtimes agree, then times y, z -> x_hat (lift included, davi/io/onnx.py)
with each: warm-up calls, then repeats that alternate between the two runtimes so both see the
same machine load; the medians are compared. The load average is recorded with the results.
The goals are set at 2 threads; the 1-thread rows show how much of the difference is thread
contention when the machine is busy. On a shared machine busy-waiting worker threads distort
both runtimes (benchmarks/results/onnx_speed_spin.md: --spin under load), so by default neither spins: OMP_WAIT_POLICY=PASSIVE for PyTorch's OpenMP threads (set before
torch is imported) and allow_spinning=0 for ONNX Runtime's; --spin restores both defaults.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

SPIN = "--spin" in sys.argv
if __name__ == "__main__" and not SPIN:  # must precede the OpenMP runtime's start, i.e. the torch import
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # (run as a script only: importing it sets nothing)

import davi  # noqa: E402,F401  (torchvision shim before diffusers)
from common import table  # noqa: E402
from davi.cli.common import run_cli  # noqa: E402
from davi.eval.evaluate import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOALS = {1: 2.5, 50: 1.1}  # ONNX Runtime speed-up goals at batch 1 and batch 50 ...
GOAL_THREADS = 2  # ... with 2 intra-op threads for each runtime


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(graph, session, y, z, warmup: int, repeats: int) -> dict:
    import torch

    from davi.io.onnx import run_session

    with torch.no_grad():
        eager = lambda: graph(y, z)  # noqa: E731
        ort = lambda: run_session(session, y, z)  # noqa: E731
        diff = float((eager() - ort()).abs().max())
        for _ in range(warmup):
            eager(), ort()
        t_eager, t_ort = [], []
        for _ in range(repeats):  # alternate so a burst of load hits both runtimes alike
            t_eager.append(timed(eager))
            t_ort.append(timed(ort))
    b = y.shape[0]
    torch_ms, ort_ms = 1000 * statistics.median(t_eager), 1000 * statistics.median(t_ort)
    threads = torch.get_num_threads()
    return {"threads": threads, "batch": b, "torch_ms": torch_ms, "onnx_ms": ort_ms,
            "torch_ms_per_image": torch_ms / b, "onnx_ms_per_image": ort_ms / b, "speedup": torch_ms / ort_ms,
            "goal": GOALS.get(b) if threads == GOAL_THREADS else None,
            "max_abs_diff": diff, "repeats": repeats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", default=str(ROOT / "davi" / "assets" / "mappers" / "sr4"))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 50])
    p.add_argument("--threads", type=int, nargs="+", default=[GOAL_THREADS, 1],
                   help="torch intra-op threads = ONNX Runtime intra-op threads, one run each")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--spin", action="store_true", help="let both runtimes' idle threads busy-wait (their defaults)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "onnx_speed.json"))
    args = p.parse_args()

    import torch

    from davi.io.export import load_export
    from davi.io.onnx import RestoreGraph, example_inputs, export_onnx, make_session
    from common import command_line, publish

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / Path(args.export).name
        shutil.copytree(args.export, export)
        onnx_file = export_onnx(export)
        mapper, card, operator = load_export(export)
        graph = RestoreGraph(mapper, operator).eval()
        size_mb = onnx_file.stat().st_size / 2**20
        rows = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            session = make_session(onnx_file, threads=threads, spin=args.spin)
            for b in args.batches:
                y, z = example_inputs(card, operator, batch=b, seed=b)
                rows.append(measure(graph, session, y, z, args.warmup, args.repeats))
                print(rows[-1])
    load_after = os.getloadavg()[0]
    import onnxruntime

    try:
        shown = Path(args.export).resolve().relative_to(ROOT)
    except ValueError:
        shown = Path(args.export)
    head = (f"Mapper `{shown}` ({card['task']}, {card['channels']}x{card['resolution']}x{card['resolution']}), "
            f"y, z -> x_hat with the lift inside the graph; CPU, the same number of intra-op threads for both "
            f"(torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, ONNX file {size_mb:.1f} MB float32), "
            f"{args.warmup} warm-up calls, then the median of {args.repeats} alternating repeats; "
            + ("idle threads spin (both runtimes' defaults). " if args.spin else
               f"idle threads sleep (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, ONNX Runtime "
               "allow_spinning=0). ") +
            f"1-minute load average {load_before:.2f} before and {load_after:.2f} after "
            f"(2 cores, shared with other work).")
    publish(args.out, {"command": command_line("onnx_speed.py"), "head": head,
                       "load_average": [load_before, load_after], "spin": args.spin, "rows": rows},
            render_onnx_speed)


# ----------------------------------------------------------------------------------------------
# the tables: onnx_speed.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
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


if __name__ == "__main__":
    sys.exit(run_cli(main))
