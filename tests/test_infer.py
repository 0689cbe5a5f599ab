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
from davi.io.export import export_mapper, load_export, make_card
from davi.io.images import to_uint8
from davi.solvers.methods import DaviMethod
from davi.models.mapper import Mapper
from davi.operators import build_operator
from davi.models.prior import DiffusionPrior

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


@pytest.mark.slow  # a fresh interpreter importing torch: ~8 s
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
    # mean/ is the per-pixel mean of the samples written beside it (up to 8-bit rounding; pixels where a
    # sample was clipped at 0 or 255 are left out: the mean is taken before clipping)
    checked = 0
    for f in sorted((out / "mean").iterdir()):
        samples = np.stack([_png(out / "samples" / f"{f.stem}_{k}.png") for k in range(3)])
        inside = ((samples > 0) & (samples < 255)).all(0)
        checked += inside.sum()
        assert np.abs(samples.mean(0) - _png(f))[inside].max() <= 1.0 + 1e-9, f.name  # two roundings of <= 0.5
        assert samples.std(0)[inside].mean() > 0.5  # the samples differ: the check is not trivial
    assert checked > 0.2 * 5 * 32 * 32
    # the saved .npy measurements restore to the same mean as the simulation did
    out2 = tmp_path / "out2"
    proc = infer("restore", "--export", sr_export, "--input", out / "measurement", "--samples", 3, "--out", out2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = np.asarray(Image.open(out / "mean" / "test_00003.png"))
    b = np.asarray(Image.open(out2 / "mean" / "test_00003.png"))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("method,extra", [("lift", []), ("red-diff", ["--red-diff-steps", "3", "--red-diff-lr", "0.01",
                                                                      "--prior", None])])
def test_baselines_run_through_the_same_cli(sr_export, tiny_prior_dir, tmp_path, method, extra, infer):
    extra = [tiny_prior_dir if e is None else e for e in extra]
    proc = infer("restore", "--export", sr_export, "--input", "mnist32:test", "--limit", 2, "--simulate", "sr",
                 "--method", method, "--out", tmp_path / "o", *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    settings = json.loads((tmp_path / "o" / "settings.json").read_text())
    assert settings["method"].startswith(method)
    assert settings["network_evaluations_per_image"] == (0 if method == "lift" else 3 * 4)
    # lift/ (every method) and the lift method's mean/ are op.lift(y) of the saved exact measurements;
    # RED-Diff's result is closer to its measurement than lift(y) is (it starts at pinv(y), which is
    # exactly consistent for SR, and its data term keeps it there; at a small lr, as 3 steps on a random
    # prior at lr 0.25 just scatter it)
    _, _, op = load_export(sr_export)
    for f in sorted((tmp_path / "o" / "measurement").iterdir()):
        y = torch.from_numpy(np.load(f))[None].float()
        lifted = to_uint8(op.lift(y)[0])
        assert np.array_equal(_png(tmp_path / "o" / "lift" / f"{f.stem}.png"), lifted)
        restored = _png(tmp_path / "o" / "mean" / f"{f.stem}.png")
        if method == "lift":
            assert np.array_equal(restored, lifted)
        else:
            residual = lambda img: (op(torch.from_numpy(img / 127.5 - 1)[None, None].float()) - y).norm()  # noqa: E731
            assert residual(restored) < 0.8 * residual(lifted), (residual(restored), residual(lifted))


@pytest.mark.parametrize("noise_on_device", [False, True], ids=["cpu-noise", "device-noise"])
def test_restoration_does_not_depend_on_the_batch(sr_export, noise_on_device):
    mapper, _, op = load_export(sr_export)
    torch.manual_seed(0)
    y = op.measure(torch.rand(4, 1, 32, 32) * 2 - 1)
    method = DaviMethod(mapper, op, noise_on_device=noise_on_device)
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
    # PSNR from the PNGs with numpy: per image 10 log10(255^2 / mse) on the 8-bit values, then averaged
    per_image = []
    for f in sorted((out / "reference").iterdir()):
        mse = ((_png(out / "mean" / f.name) - _png(f)) ** 2).mean()
        per_image.append(10 * np.log10(255.0 ** 2 / mse))
    assert metrics["psnr"] == pytest.approx(np.mean(per_image), abs=1e-3)
    assert 0 < metrics["ssim"] < 0.99
    # an image against itself: SSIM 1
    proc = infer("evaluate", "--restored", out / "reference", "--reference", out / "reference", "--out",
                 tmp_path / "self.json", "--no-classifier")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "self.json").read_text())["ssim"] == pytest.approx(1.0, abs=1e-6)
    for key in ("lpips_alex", "fid"):  # weights cannot be downloaded here: absent, never random
        assert isinstance(metrics[key], str) and "unavailable" in metrics[key]


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64)


def _digits(folder: Path, size: int, mode: str = "L", n: int = 2):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, (size, size), color=(128 if mode == "L" else (1, 2, 3))).save(folder / f"d{i}.png")
    return folder


def test_measurements_of_another_size_restore_images_of_the_matching_size(sr_export, tmp_path, infer):
    """The mapper is fully convolutional: 16x16 SR x4 measurements give 64x64 restorations (with a note)."""
    proc = infer("restore", "--export", sr_export, "--input", _digits(tmp_path / "big", 16), "--out", tmp_path / "o",
                 "--samples", "1")
    assert proc.returncode == 0, proc.stderr
    assert "64x64" in proc.stderr and "trained on 32x32" in proc.stderr
    assert Image.open(next((tmp_path / "o" / "mean").glob("*.png"))).size == (64, 64)


def test_bad_inputs_fail_with_one_line_and_leave_no_output(sr_export, tmp_path, infer):
    out = tmp_path / "never"
    # a measurement that is not square, and clean images of a size the mapper's network cannot take
    (tmp_path / "wide").mkdir()
    Image.new("L", (12, 8), color=128).save(tmp_path / "wide" / "d0.png")
    proc = infer("restore", "--export", sr_export, "--input", tmp_path / "wide", "--out", out)
    assert_one_line_error(proc, "must be square", "(1, 8, 12)")
    proc = infer("restore", "--export", sr_export, "--input", _digits(tmp_path / "odd", 30), "--simulate", "sr",
                 "--out", out)
    assert_one_line_error(proc, "30x30 images")  # the tiny test UNet takes even sides; SR x4 needs 4 | side
    # wrong channel count: a colour measurement array (an RGB image file is converted to gray with a note,
    # tests/test_refine.py; exact arrays are not mixed)
    (tmp_path / "rgb").mkdir()
    np.save(tmp_path / "rgb" / "d0.npy", np.zeros((3, 8, 8), np.float32))
    proc = infer("restore", "--export", sr_export, "--input", tmp_path / "rgb", "--out", out)
    assert_one_line_error(proc, "d0.npy", "3 channel")
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


def test_restore_timing_reuses_the_restore_and_never_reruns_an_expensive_method():
    from davi.cli.restore import restore_timing

    class Counting:
        calls = 0

        def __init__(self, nfe):
            self.nfe_per_sample = nfe

        def __call__(self, y, seeds, num_samples=1):
            Counting.calls += 1
            return y.unsqueeze(0)

    y = torch.zeros(8, 1, 4, 4)
    timing, how = restore_timing(Counting(1000), y, 4, [(9.0, 4), (2.0, 4), (4.0, 4)], samples=2)
    assert (timing.seconds_per_image, timing.batch_size) == (3.0 / 4 / 2, 4) and "later" in how
    timing, how = restore_timing(Counting(1000), y, 8, [(8.0, 8)], samples=1)
    assert timing.seconds_per_image == 1.0 and "warm-up included" in how and Counting.calls == 0
    timing, how = restore_timing(Counting(1), y, 8, [(8.0, 8)], samples=1)
    assert Counting.calls == 4 and timing.seconds_per_image < 1.0  # cheap: warm-up + best of 3
