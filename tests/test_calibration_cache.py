"""benchmarks/calibration.py's per-(task, method) cache answers only for the weights it measured."""

from __future__ import annotations

import argparse

import calibration


def test_digit_coverage_is_recomputed_when_the_shipped_weights_change(tmp_path, monkeypatch):
    mappers, work = tmp_path / "mappers", tmp_path / "work"
    (mappers / "sr4").mkdir(parents=True)
    work.mkdir()
    weights = mappers / "sr4" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"first")
    monkeypatch.setattr(calibration, "MAPPERS", mappers)
    computed = []
    monkeypatch.setattr(calibration, "test_problem", lambda task, n: computed.append(task) or (None, None, None))
    monkeypatch.setattr(calibration, "mapper_draws", lambda *a: None)
    monkeypatch.setattr(calibration, "coverage_of", lambda draws, x0, hidden=None: {"all": {"cov50": 0.5}})
    args = argparse.Namespace(images=4, red_diff_images=4, samples=8, red_diff_steps=100)

    first = calibration.digit_coverage("sr4", "paired", args, work)
    assert calibration.digit_coverage("sr4", "paired", args, work) == first and len(computed) == 1  # cached
    weights.write_bytes(b"re-shipped")
    calibration.digit_coverage("sr4", "paired", args, work)
    assert len(computed) == 2
    args.samples = 16  # another K: another measurement
    calibration.digit_coverage("sr4", "paired", args, work)
    assert len(computed) == 3
