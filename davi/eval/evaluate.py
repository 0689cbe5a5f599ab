"""Side-by-side evaluation of restoration methods on the same images, seeds and measurements.

Used by the main job (demo.py) and the benchmarks: every method sees the same ``y``; rows hold
PSNR, SSIM, the digit-classifier Fréchet distance (embedded default only; not FID), network
evaluations per image and seconds per image, and tables are written as Markdown.
"""

from __future__ import annotations

import time

import torch

from davi.io.atomic import write_text
from davi.solvers.methods import Method, restore_in_batches


def run_method(method: Method, y: torch.Tensor, batch_size: int, seed: int = 0,
               desc: str | None = None) -> tuple[torch.Tensor, float]:
    """(restorations (N, C, H, W), seconds per image) for one sample per image (the per-image seeds of
    :func:`davi.solvers.methods.restore_in_batches`)."""
    t0 = time.perf_counter()
    run = restore_in_batches(method, y, 1, seed, batch_size, desc=desc or method.name)
    return run.samples[0], (time.perf_counter() - t0) / y.shape[0]


def held_out_scores(method: Method, operator, data, images: int, batch_size: int = 100) -> dict:
    """score_restorations of ``method`` on the first ``images`` test images of ``data`` (a DataConfig),
    measured with noise seed 0, one sample per image (seed 0): the benchmarks' held-out protocol."""
    from davi.data.datasets import load_split
    from davi.eval.metrics import score_restorations

    x0 = load_split(data, "test").tensor(limit=images)
    y = operator.measure(x0, generator=torch.Generator().manual_seed(0))
    restored, _ = run_method(method, y, batch_size)
    return score_restorations(restored, x0, explain_absent=False)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format) e.g. ("psnr", "PSNR (dB)", "{:.2f}")."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key, "")
            cells.append(fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def publish_table(path, head: str, table: str) -> None:
    """Write a benchmark's Markdown table (with its header) atomically and print it."""
    write_text(path, head + table + "\n")
    print(table)
    print(f"wrote {path}")
