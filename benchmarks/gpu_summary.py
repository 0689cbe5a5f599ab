"""The GPU figures of the 256 x 256 goals in one file, gathered from the speed and memory runs.

Reads the ``benchmarks/results/speed_gpu_*.json`` and ``memory_gpu_*.json`` files that
``benchmarks/speed.py`` and ``benchmarks/memory.py`` wrote on the GPU (their commands are inside
them) and writes ``benchmarks/results/speed_gpu.json``::

    {"device": str, "setting": str, "davi_s_per_image_b1": f, "davi_s_per_image_b32": f,
     "red_diff_1000_s_per_image": f, "red_diff_100_s_per_image": f,
     "peak_mem_gib": {"b1": f, "b8": f}, ...}

The headline is the fastest measured setting, the same for both methods (bf16 autocast,
``torch.compile(mode="reduce-overhead")``, DAVI's noise drawn on the GPU); RED-Diff's seconds per
image are at batch 1, its number of steps times its measured seconds per step. ``default`` holds
the same figures for what ``infer.py`` runs without options (fp32, eager, noise drawn on the CPU).
Peak memory is a full fp16 training iteration without gradient checkpointing (with it: ``peak_mem_gib_checkpointing``).

    python benchmarks/gpu_summary.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from davi.cli.common import run_cli

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FASTEST = "speed_gpu_devnoise_compile_ro.json"
DEFAULT = "speed_gpu_eager.json"
MEMORY = "memory_gpu_fp16.json"


def _read(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def speed_figures(data: dict, dtype: str) -> dict:
    """DAVI s/image at batch 1 and 32, RED-Diff-N s/image at batch 1, from one speed run."""
    rows = {r["batch"]: r for r in data["rows"] if r["dtype"] == dtype}
    return {"davi_s_per_image_b1": rows[1]["davi"], "davi_s_per_image_b32": rows[32]["davi"],
            "red_diff_1000_s_per_image": rows[1]["rd1000"], "red_diff_100_s_per_image": rows[1]["rd100"],
            "speedup_1000_b1": rows[1]["speedup"], "speedup_100_b1": rows[1]["speedup"] / 10}


def summary() -> dict:
    fastest, default, memory = _read(FASTEST), _read(DEFAULT), _read(MEMORY)
    peak = {(r["ckpt"], r["batch"]): r["peak"] for r in memory["rows"]}
    return {"device": fastest["device"],
            "setting": "bf16 autocast, torch.compile reduce-overhead, DAVI noise drawn on the GPU",
            **speed_figures(fastest, "bf16"),
            "peak_mem_gib": {"b1": peak["off", 1], "b8": peak["off", 8]},
            "peak_mem_gib_checkpointing": {"b1": peak["on", 1], "b8": peak["on", 8]},
            "default": {"setting": "fp32, eager, DAVI noise drawn on the CPU (infer.py's default)",
                        **speed_figures(default, "fp32")},
            "sources": [FASTEST, DEFAULT, MEMORY],
            "command": "python benchmarks/gpu_summary.py"}


def main() -> None:
    from davi.io.atomic import write_json

    out = summary()
    write_json(RESULTS / "speed_gpu.json", out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(run_cli(main))
