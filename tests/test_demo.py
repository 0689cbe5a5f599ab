"""demo.py (the main job) end to end at toy size: train, export, restore, and write its figures."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.slow  # trains the shipped-size mapper for two steps and scores three methods: ~15 s
def test_demo_writes_grid_table_and_results_that_agree(tmp_path):
    import demo  # the repository root is on pytest's pythonpath (pyproject.toml)

    from davi.config import DataConfig
    from davi.data.datasets import load_split
    from davi.io.export import load_export, read_card
    from davi.eval.metrics import psnr

    out = tmp_path / "demo"
    argv = ["--steps", "2", "--images", "4", "--out", str(out), "train.batch_size=2", "log.image_every=0",
            "log.progress=false", "log.num_val=2"]
    assert demo.main(argv) == 0
    results = json.loads((out / "results_sr4.json").read_text())
    assert results["command"] == "python demo.py " + " ".join(argv)
    assert results["task"] == "sr4" and results["images"] == 4 and results["steps"] == 2
    assert 0 < results["train_seconds"] <= results["seconds"]
    rows = {r["method"]: r for r in results["rows"]}
    shipped = f"DAVI, shipped ({read_card(demo.SHIPPED / 'sr4')['steps']} steps)"
    assert list(rows) == ["lift(y)", "DAVI, this run (2 steps)", shipped]
    # the metrics table is the JSON's numbers, and the lift row is PSNR(lift(y), x0) computed here
    md = (out / "metrics_sr4.md").read_text()
    for name, r in rows.items():
        assert f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} |" in md
    x0 = load_split(DataConfig(), "test").tensor(limit=4)
    _, _, op = load_export(out / "run_sr4" / "export")
    y = op.measure(x0, generator=torch.Generator().manual_seed(0))
    assert rows["lift(y)"]["psnr"] == pytest.approx(float(psnr(op.lift(y), x0).mean()), abs=1e-4)
    assert rows[shipped]["psnr"] > rows["lift(y)"]["psnr"] + 2  # the shipped mapper restores
    assert (out / "grid_sr4.png").is_file() and not list(out.rglob("*.tmp"))
