"""The 256x256 benchmark scripts run end to end on a CPU, and every 256 config loads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import common
from memory import render_memory
from speed import render_speed

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _run(args: list[str], timeout: int) -> None:
    proc = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_speed_script_cpu(tmp_path):
    out = tmp_path / "speed.json"
    _run([str(ROOT / "benchmarks" / "speed.py"), "--device", "cpu", "--arch", "small", "--batch-sizes", "1",
          "--repeats", "5", "--warmup", "1", "--threads", "1", "--out", str(out)], timeout=600)
    data = json.loads(out.read_text())
    # the .md beside the JSON is the JSON rendered (what the README's tables are made from)
    assert out.with_suffix(".md").read_text() == common.results_markdown(data, render_speed)
    assert data["command"].endswith(f"--out {out}") and data["params"] > 0
    rows = data["rows"]
    assert {r["dtype"] for r in rows} == {"fp32", "bf16"}
    for r in rows:
        assert r["batch"] == 1
        davi, step = r["davi"], r["step"]
        assert davi > 0 and step > 0
        # Two independent timings, each the median of 5 runs after a warm-up (one run on a loaded machine
        # is a guess): one network evaluation (DAVI) against one network evaluation plus its backward and
        # an Adam step (a RED-Diff step). Same order: timing the wrong thing (a no-op, the whole run, a
        # missing division by the steps or the batch) falls outside. (The RED-Diff-N columns are N x the
        # step by definition, so they are not re-checked here.)
        assert 0.2 < step / davi < 5


@pytest.mark.slow
def test_memory_script_cpu(tmp_path):
    out = tmp_path / "memory.json"
    _run([str(ROOT / "benchmarks" / "memory.py"), "--device", "cpu", "--arch", "small", "--batch-sizes", "1",
          "--threads", "1", "--out", str(out)], timeout=600)
    data = json.loads(out.read_text())
    text = out.with_suffix(".md").read_text()
    assert text == common.results_markdown(data, render_memory)
    assert "ESTIMATE" in text  # a CPU figure never passes for a GPU measurement
    rows = {r["ckpt"]: r for r in data["rows"]}
    assert len(data["rows"]) == 2 and set(rows) == {"off", "on"}  # one batch size: nothing to extrapolate
    for r in rows.values():
        assert r["batch"] == 1 and r["resident"] > 0 and r["seconds"] > 0
        assert r["how"].startswith("ESTIMATE")
    assert 0 < rows["on"]["peak"] < rows["off"]["peak"]  # checkpointing trades activations for recomputation
    # The static part is stated from the parameter count.
    assert re.search(r"static state .*: \d+\.\d+ GiB", text)


@pytest.mark.parametrize("name, render", [("speed_cpu", render_speed), ("speed_cpu_ffhq256", render_speed),
                                          ("memory_cpu", render_memory), ("memory_cpu_ffhq256", render_memory)])
def test_results_markdown_is_rendered_from_its_json(name, render):
    data = json.loads((common.RESULTS / f"{name}.json").read_text())
    assert common.results_markdown(data, render) == (common.RESULTS / f"{name}.md").read_text()


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
