"""The controlled distribution shifts of davi/eval/shifts.py: deterministic, in range, each doing what its
name says, level 2 stronger than level 1."""

from __future__ import annotations

import pytest
import torch

from davi.eval.shifts import LEVELS, SHIFTS, apply_shift, shift_names


def digits(n: int = 8) -> torch.Tensor:
    """Bright strokes on a -1 background, like the bundled digits: a ring and a bar, at a few offsets."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    out = []
    for i in range(n):
        cx, cy = 15.5 + (i % 3) - 1, 15.5 + (i % 2)
        ring = ((((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() - 7).abs() < 1.5).float()
        bar = ((xx - cx).abs() < 1.5).float() * ((yy - cy).abs() < 9).float()
        out.append((ring if i % 2 else torch.maximum(ring, bar)) * 2 - 1)
    return torch.stack(out).unsqueeze(1)


def mass_centre(x: torch.Tensor) -> torch.Tensor:
    w = (x + 1).flatten(1)
    idx = torch.arange(32.0)
    cy = ((x + 1).sum(3).flatten(1) * idx).sum(1) / w.sum(1)
    cx = ((x + 1).sum(2).flatten(1) * idx).sum(1) / w.sum(1)
    return torch.stack([cx, cy], 1)


def test_every_shift_is_deterministic_in_range_and_changes_the_image():
    x = digits()
    assert len(shift_names()) == len(SHIFTS) * len(LEVELS) == 14
    for name in shift_names():
        a, b = apply_shift(x, name), apply_shift(x, name)
        assert a.shape == x.shape and torch.equal(a, b), name
        assert a.min() >= -1 and a.max() <= 1, name
        assert (a - x).abs().amax(dim=(1, 2, 3)).min() > 0.2, name
    assert torch.equal(apply_shift(x, "none"), x)


@pytest.mark.parametrize("shift", list(SHIFTS))
def test_level_two_is_further_from_the_original(shift):
    x = digits()
    d1, d2 = ((apply_shift(x, f"{shift}-{lv}") - x).pow(2).mean() for lv in LEVELS)
    assert d2 > d1 > 0, (shift, float(d1), float(d2))


def test_shifts_do_what_their_names_say():
    x = digits()
    ink = lambda im: float((im + 1).sum())  # noqa: E731
    assert ink(apply_shift(x, "thicken-1")) > 1.3 * ink(x) and ink(apply_shift(x, "thin-1")) < 0.7 * ink(x)
    assert ink(apply_shift(x, "blur-1")) == pytest.approx(ink(x), rel=0.02)  # blurring moves ink, keeps it
    assert ink(apply_shift(x, "rotate-2")) == pytest.approx(ink(x), rel=0.05)
    assert ink(apply_shift(x, "scale-1")) == pytest.approx(1.25**2 * ink(x), rel=0.1)
    # translation moves the centre of mass by (3, 3) and (6, 6) pixels
    for lv, d in ((1, 3.0), (2, 6.0)):
        moved = mass_centre(apply_shift(x, f"translate-{lv}")) - mass_centre(x)
        torch.testing.assert_close(moved, torch.full_like(moved, d), atol=0.3, rtol=0)
    # rotation is about the image centre: a digit centred there stays centred, its bar leaves the vertical
    centred = x[4:5]  # the ring and bar at (15.5, 15.5)
    rotated = apply_shift(centred, "rotate-2")
    torch.testing.assert_close(mass_centre(rotated), mass_centre(centred), atol=0.2, rtol=0)
    column = lambda im: float((im[..., 2:30, 14:18] + 1).sum())  # noqa: E731  (ink on the vertical bar)
    assert column(rotated) < 0.8 * column(centred)
    # inverted contrast: the background becomes bright
    torch.testing.assert_close(apply_shift(x, "invert-2"), -x)
    assert float(apply_shift(x, "invert-1")[0, 0, 0, 0]) == 0.5


def test_unknown_shift_is_a_one_line_error():
    for bad in ("thicken", "thicken-3", "warp-1"):
        with pytest.raises(ValueError) as e:
            apply_shift(digits(1), bad)
        assert "\n" not in str(e.value) and bad in str(e.value)


def test_measurement_density_and_typicality_flags():
    """davi.eval.detection (benchmarks/ood_statistics.py): PPCA likelihood, nearest-neighbour distance, AUROC
    and the two-sided test."""
    from ood_statistics import flagger

    from davi.eval.detection import MeasurementDensity, auroc

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(4, 64, generator=g)
    train = torch.randn(2000, 4, generator=g) @ basis + 0.05 * torch.randn(2000, 64, generator=g)
    held = torch.randn(300, 4, generator=g) @ basis + 0.05 * torch.randn(300, 64, generator=g)
    off = held + 2 * torch.randn(300, 64, generator=g)  # leaves the 4-d subspace
    faint = 0.05 * held  # inside the subspace but far less spread than the data: too typical
    density = MeasurementDensity(train, k=4)
    cal = {"ppca16": density.ppca(held), "knn5": density.knn(held)}
    assert auroc(density.ppca(off), cal["ppca16"]) > 0.99 and auroc(density.knn(off), cal["knn5"]) > 0.99
    assert auroc(density.ppca(faint), cal["ppca16"]) < 0.05  # below 0.5: more typical than the data
    assert abs(auroc(cal["ppca16"], cal["ppca16"]) - 0.5) < 1e-9
    one_sided, two_sided = flagger("ppca16", cal, 0.02), flagger("ppca16 two-sided", cal, 0.02)
    assert not one_sided({"ppca16": density.ppca(faint)}).any()
    assert two_sided({"ppca16": density.ppca(faint)}).float().mean() > 0.9
    assert abs(float(two_sided(cal).float().mean()) - 0.02) < 0.01  # its nominal rate on the calibration data


@pytest.mark.parametrize("cfg", [dict(name="sr", scale=4), dict(name="deblur", kernel_size=3, kernel_std=1.0),
                                 dict(name="box_inpaint", box_size=16)], ids=lambda c: c["name"])
def test_low_dimensional_residuals_are_noise_sized_at_the_truth_and_see_added_ink(cfg):
    """davi.eval.detection: at the clean image, the mean residual is |N(0, 1)| and the pooled
    residual ~1 per degree of freedom; ink added everywhere moves the mean residual by c sqrt(M) / sigma."""
    from davi.config import OperatorConfig
    from davi.eval.detection import low_dimensional_residuals
    from davi.solvers.consistency import measured_mask
    from davi.operators import build_operator

    op = build_operator(OperatorConfig(sigma_y=0.05, **cfg), 32, 1)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(400, 1, 32, 32, generator=g) * 2 - 1
    y = op.measure(x0, generator=g)
    at_truth = low_dimensional_residuals(op, x0, y)
    assert abs(float(at_truth["mean residual"].mean()) - (2 / torch.pi) ** 0.5) < 0.08  # E|N(0, 1)|
    assert abs(float(at_truth["pooled residual"].mean()) - 1) < 0.05
    m = measured_mask(op, y).expand_as(y).flatten(1).sum(1)
    inked = low_dimensional_residuals(op, x0 + 0.02, y)["mean residual"]
    want = 0.02 * m.sqrt() / 0.05  # A(x + c) - A x = c on every measured entry (A keeps constants)
    assert float((inked - want).abs().median()) < 1.0


def test_a_run_of_some_tasks_keeps_the_other_tasks_rows(tmp_path):
    """benchmarks/ood.py --tasks deblur: the sr4 / box rows of the published file stay (in task order) when they
    were measured the same way, and are dropped when the protocol (head) differs."""
    import importlib
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    ood = importlib.import_module("ood")
    out = tmp_path / "ood.json"
    out.write_text(json.dumps({"head": "h", "summary": {}, "sr4/none": {"a": 1}, "deblur/none": {"a": 2},
                               "box/none": {"a": 3}}))
    merged = ood.with_other_tasks({"deblur/none": {"a": 9}}, out, "h", ["deblur"])
    assert merged == {"sr4/none": {"a": 1}, "deblur/none": {"a": 9}, "box/none": {"a": 3}}
    assert list(merged) == ["sr4/none", "deblur/none", "box/none"]
    assert ood.with_other_tasks({"deblur/none": {"a": 9}}, out, "another protocol", ["deblur"]) == {
        "deblur/none": {"a": 9}}
