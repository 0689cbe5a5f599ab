"""The photo benchmark's pure rules (benchmarks/photos.py): noise-level conversions, the timestep that
matches a noise level, the whole-photo crop rule and the tuning photos' spread."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import photos


def test_sigma_conversions():
    assert photos.unit_sigma(0.05) == pytest.approx(0.025)  # [-1, 1] -> [0, 1] halves a std
    assert photos.model_sigma(25) == pytest.approx(50 / 255)  # [0, 255] -> [-1, 1]
    # the two agree: a [0, 255] std, taken to [-1, 1], then to [0, 1], is s / 255
    for s in photos.DENOISE_SIGMAS:
        assert photos.unit_sigma(photos.model_sigma(s)) == pytest.approx(s / 255)
    # and they are what the pixels do: z = x + s n on [-1, 1] has std s / 2 on [0, 1]
    n = torch.randn(200_000, generator=torch.Generator().manual_seed(0)).double()
    assert float(((n * 0.05 + 1) / 2).std()) == pytest.approx(photos.unit_sigma(0.05), rel=0.01)


def test_matching_timestep_is_the_nearest_noise_level():
    from davi.models.prior import build_scheduler

    ab = build_scheduler().alphas_cumprod.double()
    sigma_t = ((1 - ab) / ab).sqrt()
    for s255 in photos.DENOISE_SIGMAS:
        s = photos.model_sigma(s255)
        t = photos.matching_timestep(ab, s)
        assert 0 < t < len(ab) - 1
        assert sigma_t[t - 1] <= s * 1.01 and sigma_t[t + 1] >= s * 0.99  # a neighbour on each side
        assert abs(math.log(sigma_t[t] / s)) <= min(abs(math.log(sigma_t[t - 1] / s)), abs(math.log(sigma_t[t + 1] / s)))
        assert abs(float(sigma_t[t]) / s - 1) < 0.01
    assert photos.matching_timestep(ab, float(sigma_t[400])) == 400  # exact levels map to themselves
    assert photos.matching_timestep(ab, 1e-6) == 0 and photos.matching_timestep(ab, 1e6) == len(ab) - 1


def test_one_step_denoise_scaling_is_exact_for_a_perfect_eps():
    """A prior whose eps is the true noise returns x exactly: x_t = sqrt(ab) (x + sigma_t n) is the forward process."""
    from davi.models.prior import Schedule, build_scheduler

    x = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    n = torch.randn(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    class Oracle:
        schedule = Schedule(build_scheduler().alphas_cumprod)

        def eps(self, x_t, t):
            ab = float(self.schedule.alphas_cumprod[t[0]])
            return (x_t - math.sqrt(ab) * x) / math.sqrt(1 - ab)

    t0 = 123
    ab = float(Oracle.schedule.alphas_cumprod[t0])
    s = math.sqrt((1 - ab) / ab)
    out, t = photos.one_step_denoise(Oracle(), (x + s * n), s)
    assert t == t0
    assert torch.allclose(out, x.clamp(-1, 1), atol=1e-9)


@pytest.mark.parametrize("size, expect", [((451, 300), ((385, 256), (64, 0, 320, 256))),
                                          ((300, 451), ((256, 385), (0, 64, 256, 320))),
                                          ((256, 256), ((256, 256), (0, 0, 256, 256))),
                                          ((380, 254), ((383, 256), (63, 0, 319, 256)))])
def test_crop_box(size, expect):
    assert photos.crop_box(*size, 256) == expect


def test_square_photo_is_the_library_rule(tmp_path):
    """square_photo = resize the shorter side to 256, centre crop: bitwise davi's whole-image loader."""
    from PIL import Image

    from davi.data.datasets import load_image_file

    rng = np.random.default_rng(0)
    for w, h in ((451, 300), (300, 513), (256, 256)):
        path = tmp_path / f"p{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        ours = photos.square_photo(path, 256)
        assert ours.shape == (3, 256, 256)
        assert torch.equal(ours, load_image_file(path, 256, 3))
    # the crop is the centre: a wide photo whose left and right quarters are black and centre white
    arr = np.zeros((256, 512, 3), np.uint8)
    arr[:, 128:384] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    assert photos.square_photo(tmp_path / "wide.png").min() == 1.0


def test_tune_indices_spread():
    assert photos.tune_indices(43, 8) == [0, 6, 12, 18, 24, 30, 36, 42]
    assert photos.tune_indices(43, 1) == [0]
    assert len(photos.tune_indices(43, 43)) == 43
    with pytest.raises(ValueError):
        photos.tune_indices(43, 44)


def test_missing_extra_is_one_line(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "bm3d":
            raise ImportError("No module named 'bm3d'", name="bm3d")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(SystemExit) as e:
        photos.require_photos_extra()
    assert "bm3d" in str(e.value) and "pip install 'davi[photos]'" in str(e.value) and "\n" not in str(e.value)


def test_merge_files_each_section_and_its_tuning(tmp_path):
    """A baselines run's rows land beside the others' under their task, its tunings under tuning/<task>/<name>,
    RED-Diff's under tuning/<task>/red_diff; rows of sections not in this run are left as they were."""
    from types import SimpleNamespace

    out = tmp_path / "photos.json"
    out.write_text('{"sr4": {"lift": {"psnr": 1.0}}, "tuning": {"sr4": {"red_diff": {"lr": 0.1}}}}')
    label = {"prior": "p", "step": 3, "weights": "ema", "digest": "d"}
    sections = {"baselines": {"tasks": {"sr4": {"ddrm": {"psnr": 2.0}, "ddrm_default": {"psnr": 1.5},
                                                "tuning:ddrm": {"choice": {"eta": 1.0}}}}, **label}}
    data = photos.merge(SimpleNamespace(out=str(out)), sections)
    assert data["sr4"] == {"lift": {"psnr": 1.0}, "ddrm": {"psnr": 2.0}, "ddrm_default": {"psnr": 1.5}}
    assert data["tuning"]["sr4"] == {"red_diff": {"lr": 0.1}, "ddrm": {"choice": {"eta": 1.0}}}
    assert data["baselines_prior"] == label and "baselines" in data["commands"]


def test_baselines_without_deepinv_is_one_line(monkeypatch):
    from types import SimpleNamespace

    from davi import baselines

    def missing():
        raise baselines.BaselineError("the DPS / DiffPIR / DDRM baselines need deepinv 0.5.0: pip install -e .[baselines]")

    monkeypatch.setattr(baselines, "require_deepinv", missing)
    with pytest.raises(SystemExit) as e:
        photos.field_baselines(SimpleNamespace())
    assert "pip install -e .[baselines]" in str(e.value) and "\n" not in str(e.value)
