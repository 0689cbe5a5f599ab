"""Expensive per-image results computed in chunks, cached on disk, resumed after a kill.

``run_in_chunks(folder, key, n, chunk_size, compute)`` fills ``folder`` with
``chunk-<start>-<stop>.safetensors`` files, one per ``chunk_size`` images, each written atomically
(davi/io/atomic.py) with ``key`` (a JSON-able dict: what was computed, on which inputs, with which
settings; or ``key(start, stop)``, e.g. with a digest of that chunk's own inputs) in its metadata. A chunk whose stored key differs from ``key`` -- another measurement
set, setting or seed -- is recomputed, never reused. ``compute(start, stop)`` returns the tensor of
images ``start .. stop-1``; it is called only for the chunks not on disk, in order, so a killed run
loses at most the chunk in progress.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from davi.io.atomic import write_file

TENSOR = "result"


def digest(tensor: torch.Tensor) -> str:
    """A short content hash of a tensor (dtype, shape and bytes): identifies a measurement set."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _chunk_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"chunk-{start:05d}-{stop:05d}.safetensors"


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def load_chunk(path: Path, key: dict) -> torch.Tensor | None:
    """The chunk's tensor if ``path`` exists and was computed under ``key``; else None."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != _key_text(key):
                return None
            return f.get_tensor(TENSOR).clone()
    except (SafetensorError, OSError, ValueError):
        return None  # unreadable: recompute it


def save_chunk(path: Path, tensor: torch.Tensor, key: dict) -> None:
    from safetensors.torch import save_file

    write_file(path, lambda tmp: save_file({TENSOR: tensor.detach().cpu().contiguous()}, str(tmp),
                                           metadata={"key": _key_text(key)}))


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    if n < 1 or chunk_size < 1:
        raise ValueError(f"chunks: need n >= 1 and chunk_size >= 1, got {n}, {chunk_size}")
    return [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]


Key = dict | Callable[[int, int], dict]  # one key for every chunk, or key(start, stop) per chunk


def _key_of(key: Key, a: int, b: int) -> dict:
    return key(a, b) if callable(key) else key


def cached_result(folder: str | Path, key: Key, n: int, chunk_size: int) -> torch.Tensor | None:
    """All ``n`` images if every chunk is on disk under ``key``; else None (nothing is computed)."""
    parts = [load_chunk(_chunk_path(Path(folder), a, b), _key_of(key, a, b)) for a, b in chunk_bounds(n, chunk_size)]
    return None if any(p is None for p in parts) else torch.cat(parts)


def run_in_chunks(folder: str | Path, key: Key, n: int, chunk_size: int,
                  compute: Callable[[int, int], torch.Tensor],
                  on_chunk: Callable[[int, int, bool], None] | None = None) -> torch.Tensor:
    """The (n, ...) result, from disk where cached under ``key``, else computed chunk by chunk.

    ``on_chunk(start, stop, computed)`` is called after each chunk (e.g. to log progress)."""
    folder = Path(folder)
    parts = []
    for a, b in chunk_bounds(n, chunk_size):
        path, chunk_key = _chunk_path(folder, a, b), _key_of(key, a, b)
        part = load_chunk(path, chunk_key)
        computed = part is None
        if computed:
            part = compute(a, b)
            if part.shape[0] != b - a:
                raise ValueError(f"chunks: compute({a}, {b}) returned {part.shape[0]} rows, expected {b - a}")
            save_chunk(path, part, chunk_key)
        parts.append(part)
        if on_chunk is not None:
            on_chunk(a, b, computed)
    return torch.cat(parts)
