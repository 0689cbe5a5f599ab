"""Mapper exports and checkpoint exports: the round trip, and every defect a one-line ExportError."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from davi.config import Config
from davi.io.export import ExportError, export_checkpoint, export_mapper, load_export, make_card, read_card
from davi.models.mapper import Mapper
from davi.operators import build_operator
from davi.models.prior import DiffusionPrior

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def setup(tiny_prior_dir):
    cfg = Config()
    cfg.prior.path = str(tiny_prior_dir)
    cfg.mapper.h = 0.2
    prior = DiffusionPrior.from_pretrained(str(tiny_prior_dir))
    op = build_operator(cfg.operator, 32, 1)
    torch.manual_seed(0)
    mapper = Mapper.from_prior_unet(prior.unet, h=cfg.mapper.h, tanh=False)
    return cfg, prior, op, mapper


@pytest.fixture
def export(setup, tmp_path):
    cfg, prior, op, mapper = setup
    return export_mapper(mapper, tmp_path / "exp", make_card(cfg, prior, op, 12))


def _one_line(e: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_round_trip(setup, export):
    _, prior, op, mapper = setup
    loaded, card, loaded_op = load_export(export)
    assert card["format"] == "davi-mapper" and card["steps"] == 12 and card["h"] == 0.2
    assert card["prior"]["digest"] == prior.digest and loaded_op.params() == op.params()
    x, z = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.restore(x, z), mapper.restore(x, z))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


@pytest.mark.parametrize("key", ["operator", "resolution", "channels", "h"])
def test_card_missing_a_key(export, key):
    card = json.loads((export / "card.json").read_text())
    del card[key]
    (export / "card.json").write_text(json.dumps(card))
    with pytest.raises(ExportError) as e:
        load_export(export)
    _one_line(e, "card.json", f"missing key '{key}'")


def test_card_absent_or_not_json(export, tmp_path):
    with pytest.raises(ExportError) as e:
        read_card(tmp_path / "nowhere")
    _one_line(e, "nowhere", "no such mapper export folder")
    (export / "card.json").write_text("{not json")
    with pytest.raises(ExportError) as e:
        read_card(export)
    _one_line(e, "card.json", "not valid JSON")
    (export / "card.json").unlink()
    with pytest.raises(ExportError) as e:
        read_card(export)
    _one_line(e, "card.json", "missing (not a DAVI mapper export)")


def test_bad_operator_in_the_card(export):
    card = json.loads((export / "card.json").read_text())
    card["operator"] = {**card["operator"], "name": "no_such_operator"}
    (export / "card.json").write_text(json.dumps(card))
    with pytest.raises(ExportError) as e:
        load_export(export)
    _one_line(e, "card.json", "bad operator", "no_such_operator")


def test_missing_or_corrupt_weights(export):
    (export / WEIGHTS).write_bytes(b"\x00" * 64)
    with pytest.raises(ExportError) as e:
        load_export(export)
    _one_line(e, str(export), "cannot load mapper weights")
    (export / WEIGHTS).unlink()
    with pytest.raises(ExportError) as e:
        load_export(export)
    _one_line(e, WEIGHTS, "missing mapper weights")


@pytest.fixture
def checkpoint(setup, tmp_path):
    """A DAVI training checkpoint as the trainer writes it: trainer_state.json, config.yaml, ema/."""
    cfg, _, _, mapper = setup
    ckpt = tmp_path / "checkpoint-7"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 7}))
    (ckpt / "config.yaml").write_text(cfg.to_yaml())
    mapper.save_pretrained(str(ckpt / "ema"), safe_serialization=True)
    return ckpt


def test_export_checkpoint_writes_a_loadable_export(setup, checkpoint, tmp_path):
    _, _, _, mapper = setup
    out = export_checkpoint(checkpoint, tmp_path / "exp")
    loaded, card, _ = load_export(out)
    assert card["steps"] == 7
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.restore(x, x), mapper.restore(x, x))


@pytest.mark.parametrize("missing", ["trainer_state.json", "config.yaml", f"ema/{WEIGHTS}"])
def test_export_checkpoint_missing_file(checkpoint, tmp_path, missing):
    (checkpoint / missing).unlink()
    with pytest.raises(ExportError) as e:
        export_checkpoint(checkpoint, tmp_path / "exp")
    _one_line(e, missing, "missing (not a DAVI training checkpoint)")
    assert not (tmp_path / "exp").exists()


def test_export_checkpoint_of_a_prior_run_or_broken_state(setup, checkpoint, tmp_path):
    cfg, _, _, _ = setup
    (checkpoint / "config.yaml").write_text(cfg.to_yaml().replace("job: davi", "job: prior"))
    with pytest.raises(ExportError) as e:
        export_checkpoint(checkpoint, tmp_path / "exp")
    _one_line(e, "config.yaml", "job is 'prior', not a DAVI mapper run")
    (checkpoint / "config.yaml").write_text(cfg.to_yaml())
    (checkpoint / "trainer_state.json").write_text(json.dumps({"steps": 7}))
    with pytest.raises(ExportError) as e:
        export_checkpoint(checkpoint, tmp_path / "exp")
    _one_line(e, "trainer_state.json", "unreadable (KeyError)")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 7}))
    (checkpoint / "ema" / WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(ExportError) as e:
        export_checkpoint(checkpoint, tmp_path / "exp")
    _one_line(e, "ema", "cannot load the EMA mapper")
    assert not (tmp_path / "exp").exists()


def test_an_export_killed_between_its_two_renames_is_recovered(setup, export):
    """replace_folder renames the old export to <name>.old, then the new one into place: a kill in
    between leaves only <name>.old, which the next reader puts back."""
    shutil.move(str(export), str(export.with_name(export.name + ".old")))
    assert not export.exists()
    _, card, _ = load_export(export)
    assert card["steps"] == 12 and export.is_dir() and not export.with_name(export.name + ".old").exists()


def test_export_float16_stores_half_weights_and_loads_them_as_float32(setup, export, tmp_path):
    from safetensors.torch import load_file

    from davi.io.export import export_float16

    out = export_float16(export, tmp_path / "shipped")
    stored = load_file(str(out / WEIGHTS))
    assert stored and all(t.dtype == torch.float16 for t in stored.values())
    mapper, card, _ = load_export(out)
    original, _, _ = load_export(export)
    assert card["shipped_dtype"] == "float16" and card["steps"] == read_card(export)["steps"]
    for (name, p), q in zip(mapper.named_parameters(), original.parameters()):
        assert p.dtype == torch.float32 and torch.equal(p, q.half().float()), name
