"""infer.py: restore (simulated and real measurements, three methods), evaluate, export; bad inputs
give one line on stderr, a non-zero exit and no output files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from davi.config import Config
from davi.export import export_mapper, load_export, make_card
from davi.inference import DaviMethod
from davi.mapper import Mapper
from davi.operators import build_operator
from davi.prior import DiffusionPrior

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sr_export(tiny_prior_dir, tmp_path_factory):
    """An (untrained) SR x4 mapper export against the tiny prior."""
    cfg = Config()
    cfg.prior.path = str(tiny_prior_dir)
    prior = DiffusionPrior.from_pretrained(str(tiny_prior_dir))
    op = build_operator(cfg.operator, 32, 1)
    mapper = Mapper.from_prior_unet(prior.unet, h=0.1, tanh=False)
    return export_mapper(mapper, tmp_path_factory.mktemp("exp") / "sr", make_card(cfg, prior, op, 0))


class Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def infer(capsys):
    """infer.py's main() in-process (the CLI itself is run as a subprocess once, below)."""
    import infer as cli  # the repository root is on pytest's pythonpath (pyproject.toml)

    def run(*args):
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        return Result(code, capsys.readouterr().err)

    return run


def test_cli_process_exits_non_zero_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "infer.py"), "restore", "--export", str(tmp_path / "nope"),
                           "--input", "mnist32:test", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert_one_line_error(proc, "nope")


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_restore_simulated_digits_writes_samples_mean_std_and_settings(sr_export, tmp_path, infer):
    out = tmp_path / "out"
    proc = infer("restore", "--export", sr_export, "--input", "mnist32:test", "--limit", 5, "--simulate", "sr",
                 "--samples", 3, "--out", out, "--batch-size", 2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for sub, n in (("mean", 5), ("std", 5), ("samples", 15), ("reference", 5), ("measurement", 5), ("lift", 5)):
        assert len(list((out / sub).iterdir())) == n, sub
    settings = json.loads((out / "settings.json").read_text())
    assert settings["network_evaluations_per_image"] == 3 and settings["seconds_per_image_after_warmup"] > 0
    assert not list(out.rglob("*.tmp"))
    # the saved .npy measurements restore to the same mean as the simulation did
    out2 = tmp_path / "out2"
    proc = infer("restore", "--export", sr_export, "--input", out / "measurement", "--samples", 3, "--out", out2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = np.asarray(Image.open(out / "mean" / "test_00003.png"))
    b = np.asarray(Image.open(out2 / "mean" / "test_00003.png"))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("method,extra", [("lift", []), ("red-diff", ["--red-diff-steps", "3", "--prior", None])])
def test_baselines_run_through_the_same_cli(sr_export, tiny_prior_dir, tmp_path, method, extra, infer):
    extra = [tiny_prior_dir if e is None else e for e in extra]
    proc = infer("restore", "--export", sr_export, "--input", "mnist32:test", "--limit", 2, "--simulate", "sr",
                 "--method", method, "--out", tmp_path / "o", *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    settings = json.loads((tmp_path / "o" / "settings.json").read_text())
    assert settings["method"].startswith(method)
    assert settings["network_evaluations_per_image"] == (0 if method == "lift" else 3 * 4)


def test_restoration_does_not_depend_on_the_batch(sr_export):
    mapper, _, op = load_export(sr_export)
    torch.manual_seed(0)
    y = op.measure(torch.rand(4, 1, 32, 32) * 2 - 1)
    method = DaviMethod(mapper, op)
    together = method(y, [10, 11, 12, 13], 2)
    alone = torch.cat([method(y[i:i + 1], [10 + i], 2) for i in range(4)], dim=1)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_evaluate_reports_real_metrics_and_names_the_missing_ones(sr_export, tmp_path, infer):
    out = tmp_path / "out"
    assert infer("restore", "--export", sr_export, "--input", "mnist32:test", "--limit", 4, "--simulate", "sr",
                 "--samples", 2, "--out", out).returncode == 0
    proc = infer("evaluate", "--restored", out / "mean", "--reference", out / "reference")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert isinstance(metrics["psnr"], float) and isinstance(metrics["ssim"], float)
    assert metrics["images"] == 4
    for key in ("lpips_alex", "fid"):  # weights cannot be downloaded here: absent, never random
        assert isinstance(metrics[key], str) and "unavailable" in metrics[key]


def _digits(folder: Path, size: int, mode: str = "L", n: int = 2):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, (size, size), color=(128 if mode == "L" else (1, 2, 3))).save(folder / f"d{i}.png")
    return folder


def test_bad_inputs_fail_with_one_line_and_leave_no_output(sr_export, tmp_path, infer):
    out = tmp_path / "never"
    # a measurement of the wrong size for SR x4 (expects 8x8)
    proc = infer("restore", "--export", sr_export, "--input", _digits(tmp_path / "big", 32), "--out", out)
    assert_one_line_error(proc, "1x8x8", "(1, 32, 32)")
    # wrong channel count
    proc = infer("restore", "--export", sr_export, "--input", _digits(tmp_path / "rgb", 8, "RGB"), "--out", out)
    assert_one_line_error(proc, "d0.png", "3 channel")
    # a NaN in a raw measurement
    bad = tmp_path / "nan"
    bad.mkdir()
    arr = np.zeros((1, 8, 8), np.float32)
    arr[0, 3, 3] = np.nan
    np.save(bad / "m.npy", arr)
    proc = infer("restore", "--export", sr_export, "--input", bad, "--out", out)
    assert_one_line_error(proc, "m", "NaN")
    # a corrupt image
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "x.png").write_bytes(b"not a png at all")
    proc = infer("restore", "--export", sr_export, "--input", tmp_path / "corrupt", "--out", out)
    assert_one_line_error(proc, "x.png", "not a readable image")
    # a missing export, and a simulation for another task than the export's
    proc = infer("restore", "--export", tmp_path / "nope", "--input", "mnist32:test", "--out", out)
    assert_one_line_error(proc, "nope")
    proc = infer("restore", "--export", sr_export, "--input", "mnist32:test", "--limit", 2, "--simulate", "deblur",
                 "--out", out)
    assert_one_line_error(proc, "deblur", "'sr'")
    assert not out.exists()


def test_corrupt_export_is_named(sr_export, tmp_path, infer):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(sr_export, broken)
    (broken / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 100)
    proc = infer("restore", "--export", broken, "--input", "mnist32:test", "--limit", 1, "--simulate", "sr",
                 "--out", tmp_path / "o")
    assert_one_line_error(proc, "broken")
    (broken / "card.json").write_text("{not json")
    proc = infer("restore", "--export", broken, "--input", "mnist32:test", "--out", tmp_path / "o")
    assert_one_line_error(proc, "card.json", "JSON")
    assert not (tmp_path / "o").exists()
