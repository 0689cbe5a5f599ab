"""The benchmarks' shared plumbing: where results go, how a run is published, the table registry.

Every benchmark writes its numbers with ``publish`` (the JSON and a ``.md`` beside it, rendered by
the benchmark's own render function) and registers the tables that documents quote with
``@table("name", "file.json")``; benchmarks/readme_tables.py collects the registry by importing the
benchmarks and rewrites the marked blocks. Nothing here measures anything: what a user would call
lives in ``davi.eval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from davi.io.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Table:
    """A document table: the JSON file(s) in benchmarks/results/ it is rendered from, and how."""

    sources: tuple[str, ...]  # JSON files in benchmarks/results/
    render: Callable[..., str]  # render(*parsed_jsons) -> Markdown
    inline: bool = False  # rendered inside a sentence (no blank lines around it)


TABLES: dict[str, Table] = {}


def table(name: str, *sources: str, inline: bool = False):
    """Register ``render`` as the document table ``name``, rendered from ``sources``."""

    def register(render: Callable[..., str]) -> Callable[..., str]:
        if name in TABLES and TABLES[name].render is not render:
            raise ValueError(f"table {name!r} is registered twice")
        TABLES[name] = Table(tuple(sources), render, inline)
        return render

    return register


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


def log(*parts) -> None:
    print(*parts, flush=True)


def span(values: list[float], fmt: str) -> str:
    """``lo-hi`` of ``values`` in ``fmt``, or one value when both ends print alike."""
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def met(n_met: int, n: int) -> str:
    return "met on all" if n_met == n else ("**not met** on any" if n_met == 0 else f"met on {n_met}")


def batched(fn, y, seeds: list[int], batch: int):
    """``fn(y_batch, seeds_batch)`` over ``y`` in batches of ``batch``, concatenated."""
    import torch

    return torch.cat([fn(y[i: i + batch], seeds[i: i + batch]) for i in range(0, y.shape[0], batch)])


def shift_protocol_arguments(p: argparse.ArgumentParser) -> None:
    """The options that fix which shifted digits are measured and how (ood.py, ood_statistics.py)."""
    from davi.eval.tasks import DIGIT_TASKS

    p.add_argument("--tasks", nargs="*", default=list(DIGIT_TASKS), choices=DIGIT_TASKS)
    p.add_argument("--images", type=int, default=100, help="test digits 0..N-1 per shift (N <= 500)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
