"""davi.io.chunks: chunked results are cached under a key, recomputed when it changes, resumed after a kill."""

from __future__ import annotations

import pytest
import torch

from davi.io.chunks import cached_result, digest, run_in_chunks


def _compute(calls):
    def compute(a, b):
        calls.append((a, b))
        return torch.arange(a, b, dtype=torch.float32)[:, None] * 2

    return compute


def test_cached_chunks_are_reused_and_match_a_fresh_run(tmp_path):
    calls = []
    first = run_in_chunks(tmp_path, {"k": 1}, 7, 3, _compute(calls))
    assert calls == [(0, 3), (3, 6), (6, 7)]
    assert torch.equal(first, torch.arange(7.0)[:, None] * 2)
    calls.clear()
    assert torch.equal(run_in_chunks(tmp_path, {"k": 1}, 7, 3, _compute(calls)), first)
    assert calls == []
    assert torch.equal(cached_result(tmp_path, {"k": 1}, 7, 3), first)


def test_a_changed_key_is_detected_and_recomputed(tmp_path):
    run_in_chunks(tmp_path, {"lr": 0.1}, 6, 3, _compute([]))
    assert cached_result(tmp_path, {"lr": 0.2}, 6, 3) is None
    calls = []
    run_in_chunks(tmp_path, {"lr": 0.2}, 6, 3, _compute(calls))
    assert calls == [(0, 3), (3, 6)]


def test_per_chunk_keys_recompute_only_the_chunk_whose_inputs_changed(tmp_path):
    y = torch.randn(6, 2)
    key = lambda y: (lambda a, b: {"y": digest(y[a:b])})  # noqa: E731
    run_in_chunks(tmp_path, key(y), 6, 3, _compute([]))
    y2 = y.clone()
    y2[4] += 1
    calls = []
    run_in_chunks(tmp_path, key(y2), 6, 3, _compute(calls))
    assert calls == [(3, 6)]


def test_a_killed_run_resumes_at_the_missing_chunk(tmp_path):
    def dies_at_second(a, b):
        if a == 3:
            raise KeyboardInterrupt
        return _compute([])(a, b)

    with pytest.raises(KeyboardInterrupt):
        run_in_chunks(tmp_path, {"k": 1}, 9, 3, dies_at_second)
    assert cached_result(tmp_path, {"k": 1}, 9, 3) is None  # incomplete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk-00000-00003.safetensors"]  # no temp file left
    calls = []
    out = run_in_chunks(tmp_path, {"k": 1}, 9, 3, _compute(calls))
    assert calls == [(3, 6), (6, 9)]
    assert torch.equal(out, torch.arange(9.0)[:, None] * 2)


def test_a_corrupt_chunk_is_recomputed(tmp_path):
    run_in_chunks(tmp_path, {"k": 1}, 3, 3, _compute([]))
    (tmp_path / "chunk-00000-00003.safetensors").write_bytes(b"not safetensors")
    calls = []
    run_in_chunks(tmp_path, {"k": 1}, 3, 3, _compute(calls))
    assert calls == [(0, 3)]
