"""Metric values against hand computations: PSNR, SSIM, the merged score_restorations, Markdown tables."""

from __future__ import annotations

import math

import pytest
import torch

from davi.eval.evaluate import markdown_table
from davi.eval.metrics import psnr, score_restorations, ssim


def test_psnr_is_per_image_on_a_data_range_of_two_with_clamping():
    target = torch.zeros(3, 1, 8, 8)
    pred = target.clone()
    pred[0] += 0.1  # mse 0.01: 10 log10(2^2 / 0.01) = 26.02 dB
    pred[1, :, :4] += 0.2  # half the pixels off by 0.2: mse 0.02
    pred[2] = 1.5  # clamped to 1 before scoring: mse 1 -> 10 log10(4) = 6.02 dB
    want = [10 * math.log10(4 / 0.01), 10 * math.log10(4 / 0.02), 10 * math.log10(4.0)]
    assert psnr(pred, target).tolist() == pytest.approx(want, abs=1e-4)


def test_ssim_of_flat_images_is_the_luminance_term():
    # For flat images only the luminance term is left: (2 mx my + C1) / (mx^2 + my^2 + C1), C1 = (0.01 * 2)^2
    # on the [-1, 1] range; mx = 0.02, my = 0 makes it C1 / (4e-4 + C1) = 0.5 (data range 1 would give 0.2).
    x, y = torch.full((1, 1, 16, 16), 0.02), torch.zeros(1, 1, 16, 16)
    assert ssim(x, y).item() == pytest.approx(0.5, abs=1e-3)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    assert ssim(img, img).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    wild = torch.where(img > 0.5, torch.full_like(img, 5.0), img)  # out of range: scored as clamped
    torch.testing.assert_close(ssim(wild, img), ssim(wild.clamp(-1, 1), img))
    assert (ssim(wild, img) < 1).all() and ssim(wild, img).shape == (2,)
    assert (ssim(img + 0.3 * torch.randn(2, 1, 16, 16, generator=g), img) < 0.9).all()


def test_score_restorations_averages_the_per_image_metrics_and_explains_the_absent_ones():
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(6, 1, 32, 32, generator=g) * 2 - 1
    restored = (reference + 0.1 * torch.randn(6, 1, 32, 32, generator=g)).clamp(-1, 1)
    out = score_restorations(restored, reference)
    assert out["psnr"] == pytest.approx(float(psnr(restored, reference).mean()), abs=1e-6)
    assert out["ssim"] == pytest.approx(float(ssim(restored, reference).mean()), abs=1e-6)
    assert out["classifier_fd"] > 0  # 1x32x32 digits: the classifier Frechet distance is there
    assert isinstance(out["fid"], str) and out["fid"]  # never a number computed with missing weights
    same = score_restorations(reference, reference)
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0) and same["classifier_fd"] < 1e-6
    # not 1x32x32 digits: no classifier figure at all; without explanations absent metrics are left out
    rgb = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    out = score_restorations(rgb, rgb.flip(0), explain_absent=False)
    assert "classifier_fd" not in out and "fid" not in out and set(out) >= {"psnr", "ssim"}


def test_markdown_table_formats_numbers_and_leaves_missing_cells_empty():
    rows = [{"name": "a", "x": 1.23456, "n": 3, "ok": True}, {"name": "b", "n": 10}]
    cols = [("name", "name", "{}"), ("x", "x (dB)", "{:.2f}"), ("n", "count", "{:>3}"), ("ok", "ok", "{:.1f}")]
    assert markdown_table(rows, cols) == (
        "| name | x (dB) | count | ok |\n"
        "|---|---|---|---|\n"
        "| a | 1.23 |   3 | True |\n"  # bools are printed as words, never formatted as numbers
        "| b |  |  10 |  |"
    )
