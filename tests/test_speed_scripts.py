"""The 256x256 benchmark scripts run end to end on a CPU, and every 256 config loads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _table_rows(text: str) -> list[list[str]]:
    """Data rows of the first Markdown table in ``text`` (header and separator dropped)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, text
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _header(text: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("|"))
    return [c.strip() for c in line.strip("|").split("|")]


def _run(args: list[str], timeout: int) -> None:
    proc = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_speed_script_cpu(tmp_path):
    out = tmp_path / "speed.md"
    _run([str(ROOT / "benchmarks" / "speed.py"), "--device", "cpu", "--arch", "small", "--batch-sizes", "1",
          "--repeats", "1", "--threads", "1", "--out", str(out)], timeout=120)
    text = out.read_text()
    head = _header(text)
    rows = _table_rows(text)
    assert {r[head.index("dtype")] for r in rows} == {"fp32", "bf16"}
    for r in rows:
        assert r[head.index("batch")] == "1"
        davi = float(r[head.index("DAVI s/img (1 NFE)")])
        step = float(r[head.index("RED-Diff s/img per step")])
        assert davi > 0 and step > 0
        # Two independent timings: one network evaluation (DAVI) against one network evaluation plus an
        # Adam step (a RED-Diff step). Same order: timing the wrong thing (a no-op, the whole run, a
        # missing division by the steps or the batch) falls outside. (The RED-Diff-N columns are N x the
        # step by definition, so they are not re-checked here.)
        assert 0.2 < step / davi < 5


@pytest.mark.slow
def test_memory_script_cpu(tmp_path):
    out = tmp_path / "memory.md"
    _run([str(ROOT / "benchmarks" / "memory.py"), "--device", "cpu", "--arch", "small", "--batch-sizes", "1",
          "--threads", "1", "--out", str(out)], timeout=150)
    text = out.read_text()
    assert "ESTIMATE" in text  # a CPU figure never passes for a GPU measurement
    head = _header(text)
    rows = {r[head.index("grad ckpt")]: r for r in _table_rows(text)}
    assert set(rows) == {"off", "on"}
    peak = {k: float(r[head.index("peak (GiB)")]) for k, r in rows.items()}
    for r in rows.values():
        assert r[head.index("batch / GPU")] == "1"
        assert float(r[head.index("resident before (GiB)")]) > 0
        assert float(r[head.index("s / iteration")]) > 0
        assert "ESTIMATE" in r[head.index("how")]
    assert 0 < peak["on"] < peak["off"]  # checkpointing trades activations for recomputation
    # The static part is stated from the parameter count.
    assert re.search(r"static state .*: \d+\.\d+ GiB", text)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*256.yaml")), ids=lambda p: p.name)
def test_256_configs_load(path):
    from davi.config import load_config

    cfg = load_config(path)
    assert cfg.job == "davi"
    assert cfg.data.resolution == 256 and cfg.data.channels == 3
    assert cfg.prior.path.startswith("weights/")
    assert cfg.train.mixed_precision in ("fp16", "bf16")


def test_256_configs_cover_both_datasets():
    names = {p.name for p in (ROOT / "configs").glob("*256.yaml")}
    assert {"sr4_ffhq256.yaml", "box_ffhq256.yaml", "deblur_ffhq256.yaml",
            "sr4_imagenet256.yaml", "box_imagenet256.yaml"} <= names


@pytest.mark.parametrize("name", ["multi_gpu.yaml", "cpu_2proc.yaml"])
def test_accelerate_configs_parse(name):
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "accelerate" / name).read_text())
    assert cfg["num_processes"] >= 2 and cfg["distributed_type"] == "MULTI_GPU"
