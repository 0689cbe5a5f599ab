"""The consistency statistic r = ||A x - y||^2 / (M sigma_y^2): about 1 for the true image on every
operator, large for a wrong one; its calibrated threshold goes into the export card and back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from davi.config import Config, OperatorConfig, load_config
from davi.solvers.consistency import (STATISTIC, ConsistencyError, calibrate_consistency, card_threshold,
                              consistency_report, parse_refine, residual_statistic, with_consistency)
from davi.io.card import ExportCard
from davi.io.export import export_mapper, make_card, read_card
from davi.solvers.methods import DaviMethod
from davi.models.mapper import Mapper
from davi.operators import build_operator
from davi.models.prior import DiffusionPrior

ROOT = Path(__file__).resolve().parents[1]
RES = 32
OPERATORS = [("deblur", {}), ("sr", {"scale": 4}), ("box_inpaint", {}), ("random_inpaint", {"drop_fraction": 0.7}),
             ("denoise", {})]


def clean_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, RES, RES, generator=g) * 2 - 1


@pytest.mark.parametrize("name,kw", OPERATORS, ids=[o[0] for o in OPERATORS])
def test_true_image_gives_about_one_and_a_wrong_image_much_more(name, kw):
    op = build_operator(OperatorConfig(name=name, sigma_y=0.05, **kw), RES, 1)
    x = clean_images(64)
    y = op.measure(x, generator=torch.Generator().manual_seed(1))
    r = residual_statistic(op, x, y)
    assert r.shape == (64,) and r.dtype == torch.float64
    # chi-square over M entries / M: mean 1, sd sqrt(2/M) per image, sqrt(2/(64 M)) for the batch mean.
    m = op(x).flatten(1).shape[1] if name not in ("box_inpaint", "random_inpaint") else \
        int(op(torch.ones(1, 1, RES, RES)).sum())
    assert abs(float(r.mean()) - 1) < 4 * (2 / (64 * m)) ** 0.5, (name, float(r.mean()), m)
    # Unobserved pixels do not count: changing them leaves r as it is.
    if name in ("box_inpaint", "random_inpaint"):
        hidden = 1 - op(torch.ones(1, 1, RES, RES))
        torch.testing.assert_close(residual_statistic(op, x + 5 * hidden, y), r)
    # Another image (or the truth off by 0.1 everywhere) is far from consistent.
    assert (residual_statistic(op, x.flip(0), y) > 5).all()
    assert (residual_statistic(op, x + 0.1, y) > 3).all()


def test_noiseless_operator_has_no_statistic():
    op = build_operator(OperatorConfig(name="denoise", sigma_y=0.0), RES, 1)
    with pytest.raises(ConsistencyError, match="sigma_y = 0"):
        residual_statistic(op, clean_images(1), clean_images(1))


@pytest.fixture(scope="module")
def tiny_export(tiny_prior_dir, tmp_path_factory):
    cfg = Config()
    cfg.prior.path = str(tiny_prior_dir)
    prior = DiffusionPrior.from_pretrained(str(tiny_prior_dir))
    op = build_operator(cfg.operator, RES, 1)
    mapper = Mapper.from_prior_unet(prior.unet, h=0.1, tanh=False).eval()
    return mapper, op, make_card(cfg, prior, op, 0), tmp_path_factory.mktemp("exp")


def test_calibration_is_written_to_the_card_and_read_back(tiny_export):
    mapper, op, card, folder = tiny_export
    images = clean_images(40, seed=3)
    method = DaviMethod(mapper, op)
    entry = calibrate_consistency(method, op, images, source="test images", batch_size=16)
    assert entry["statistic"] == STATISTIC and entry["n"] == 40 and entry["source"] == "test images"
    q = entry["quantiles"]
    assert q["0.5"] <= q["0.9"] <= q["0.99"] and entry["threshold"] == pytest.approx(q["0.99"])
    # The threshold is the 99th percentile of the per-image statistics, whatever the batch size.
    again = calibrate_consistency(method, op, images, source="test images", batch_size=7)
    assert again["threshold"] == pytest.approx(entry["threshold"], rel=1e-5)
    out = export_mapper(mapper, folder / "with", {**card, "consistency": entry})
    back = read_card(out)
    assert json.loads((out / "card.json").read_text())["consistency"]["threshold"] == entry["threshold"]
    assert card_threshold(back) == pytest.approx(entry["threshold"])
    assert card_threshold(ExportCard.from_dict(back)) == pytest.approx(entry["threshold"])
    # No entry: no threshold (infer.py says so in one line); a broken entry is a named error.
    assert card_threshold({**card}) is None
    with pytest.raises(ConsistencyError, match="threshold"):
        card_threshold({"consistency": {**entry, "threshold": -1}})
    with pytest.raises(ConsistencyError, match="statistic"):
        card_threshold({"consistency": {**entry, "statistic": "other"}})


def test_refine_values():
    assert parse_refine(None) is None and parse_refine("auto") == "auto" and parse_refine("5") == 5
    for bad in ("0", "-3", "x", "2.5", "1001", ""):
        with pytest.raises(ConsistencyError) as e:
            parse_refine(bad)
        assert "\n" not in str(e.value) and "--refine" in str(e.value)


def test_report_rows_and_summary():
    stat = torch.tensor([0.9, 3.0, 1.2], dtype=torch.float64)
    table, summary = consistency_report(["a", "b", "c"], stat, 2.0)
    lines = table.strip().splitlines()
    assert lines[0] == f"name,{STATISTIC},flagged" and lines[2] == "b,3,1" and lines[1] == "a,0.9,0"
    assert summary["flagged"] == 1 and summary["threshold"] == 2.0 and summary["images"] == 3
    table, summary = consistency_report(["a", "b", "c"], stat, None, torch.tensor([0, 1, 0]).bool(),
                                        torch.tensor([0.9, 1.1, 1.2]))
    assert summary["flagged"] is None and summary["refined"] == 1 and table.splitlines()[2] == "b,3,,1,1.1"


def test_training_export_carries_the_threshold_from_held_out_test_images(tiny_prior_dir, tmp_path):
    from accelerate import Accelerator

    from davi.training.recipes.davi import davi_recipe

    cfg = load_config(ROOT / "configs" / "sr4_mnist.yaml", [f"prior.path={tiny_prior_dir}",
                                                           f"train.output_dir={tmp_path}"])
    recipe = davi_recipe(cfg, Accelerator(cpu=True))
    mapper = recipe.networks["mapper"].eval()
    recipe.finish(mapper, tmp_path, 0)
    entry = read_card(tmp_path / "export")["consistency"]
    assert entry["source"] == "mnist32:test[500:1000]" and entry["n"] == 500 and entry["threshold"] > 0
    # fewer calibration images, or none (davi.calibration_images)
    for n, expected in ((40, "mnist32:test[500:540]"), (0, None)):
        cfg.davi.calibration_images = n
        recipe = davi_recipe(cfg, Accelerator(cpu=True))
        recipe.finish(recipe.networks["mapper"].eval(), tmp_path / str(n), 0)
        entry = read_card(tmp_path / str(n) / "export").get("consistency")
        assert (entry["source"], entry["n"]) == (expected, n) if expected else entry is None
    # data that cannot be loaded: the export is still written, without a threshold (and a note)
    op = build_operator(cfg.operator, RES, 1)
    card = {k: v for k, v in read_card(tmp_path / "export").items() if k != "consistency"}
    card["config"] = {**card["config"], "data": {"source": str(tmp_path / "no_such_folder")}}
    assert "consistency" not in with_consistency(card, DaviMethod(mapper, op), op)
    typed = ExportCard.from_dict(card)  # an ExportCard in, an ExportCard out
    assert with_consistency(typed, DaviMethod(mapper, op), op) == typed
    assert card_threshold(typed) is None
