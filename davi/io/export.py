"""Export and load a trained mapper: a folder that infer.py and downstream apps use without
the training config.

    <export>/config.json                          Mapper config (UNet config, h, tanh, schedule)
    <export>/diffusion_pytorch_model.safetensors  the EMA weights
    <export>/card.json                            operator + parameters, sigma_y, h, resolution,
                                                  channels, prior identity and hash, steps, config
    <export>/README.md                            Hugging Face model card (davi/io/model_card.py)

Written atomically (temp folder + rename): a kill leaves the previous export or none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from davi.io.atomic import replace_folder, temp_folder_for
from davi.io.card import CARD, ExportCard, ExportError, read_card
from davi.io.model_card import write_model_card

CARD_VERSION = 1
__all__ = ["CARD", "CARD_VERSION", "ExportError", "export_mapper", "read_card", "load_export", "make_card",
           "export_checkpoint", "export_float16"]


def make_card(cfg, prior, operator, step: int, family=None) -> dict[str, Any]:
    """What a user of the export needs besides the weights: the operator, noise, prior and run; for a
    ``family`` run also the family and the conditioning (its ``operator`` is then one member: run_operator)."""
    if family is not None:
        return {**make_card(cfg, prior, operator, step), "task": "family", "family": family.params(),
                "condition": cfg.mapper.condition}
    return {
        "task": cfg.operator.name,
        "operator": operator.params(),
        "sigma_y": operator.sigma_y,
        "h": cfg.mapper.h,
        "tanh": cfg.mapper.tanh,
        "noise_channels": cfg.mapper.noise_channels,  # z has channels + noise_channels channels
        "resolution": cfg.data.resolution,
        "channels": cfg.data.channels,
        "prior": {"identity": prior.identity, "digest": prior.digest},
        "steps": step,
        "objective": cfg.davi.objective,  # paired: a point estimator; sampler: posterior samples
        "config": cfg.to_dict(),
    }


def export_mapper(mapper, out_dir: str | Path, card: ExportCard | dict[str, Any], half: bool = False) -> Path:
    """Write the export folder atomically: the weights (float32, or float16 with ``half``) as
    safetensors, card.json (``card``: an ExportCard or the dict of :func:`make_card`) and README.md
    (the model card)."""
    card = card.to_dict() if isinstance(card, ExportCard) else card
    tmp = temp_folder_for(out_dir)
    (mapper.half() if half else mapper.float()).save_pretrained(str(tmp), safe_serialization=True)
    mapper.float()  # .half() works in place: the caller's mapper goes on in float32
    card = {"format": "davi-mapper", "version": CARD_VERSION, **card}
    (tmp / CARD).write_text(json.dumps(card, indent=2))
    write_model_card(tmp, card)  # README.md: the Hugging Face model card, so the folder can be pushed as it is
    return replace_folder(tmp, out_dir)


def load_export(export_dir: str | Path, device: str | torch.device = "cpu", trust_remote_code: bool = False):
    """(mapper in eval mode, card dict, operator) from an export folder; ExportError on any defect.

    An operator the card names by import path (``"module:Class"``) is code outside this package:
    importing it runs that module, so it is refused unless ``trust_remote_code=True`` (the Hugging
    Face convention; checked before any weights are read). The typed way in is
    :class:`davi.Restorer` / :class:`davi.ExportCard`.
    """
    from davi.models.mapper import Mapper
    from davi.operators import OperatorError, operator_from_params

    card = read_card(export_dir)
    typed = ExportCard.from_dict(card, str(Path(export_dir) / CARD))
    try:
        operator = operator_from_params(typed.operator, trust_remote_code=trust_remote_code)
    except OperatorError as e:
        raise ExportError(f"{Path(export_dir) / CARD}: bad operator ({e})") from None
    weights = Path(export_dir) / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise ExportError(f"{weights}: missing mapper weights")
    try:
        mapper = Mapper.from_pretrained(str(export_dir), use_safetensors=True)
    except Exception as e:
        raise ExportError(f"{export_dir}: cannot load mapper weights ({e.__class__.__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if mapper.config.noise_channels != typed.noise_channels:
        raise ExportError(f"{Path(export_dir) / CARD}: noise_channels {typed.noise_channels} but the weights "
                          f"have {mapper.config.noise_channels}")
    # float() also undoes float16 storage of shipped weights
    return mapper.float().to(device).eval().requires_grad_(False), card, operator.to(device)


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Export the EMA mapper stored in a DAVI training checkpoint (``checkpoint-N/ema``, safetensors)."""
    from davi.builders import prior_from_config
    from davi.config import ConfigError, load_config
    from davi.builders import run_operator
    from davi.models.mapper import Mapper

    ckpt = Path(checkpoint)
    state_file, cfg_file, ema_dir = ckpt / "trainer_state.json", ckpt / "config.yaml", ckpt / "ema"
    for f in (state_file, cfg_file, ema_dir / "diffusion_pytorch_model.safetensors"):
        if not f.is_file():
            raise ExportError(f"{f}: missing (not a DAVI training checkpoint)")
    try:
        cfg = load_config(cfg_file)
    except ConfigError as e:
        raise ExportError(str(e)) from None
    if cfg.job != "davi":
        raise ExportError(f"{cfg_file}: job is '{cfg.job}', not a DAVI mapper run")
    try:
        step = int(json.loads(state_file.read_text())["step"])
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(f"{state_file}: unreadable ({e.__class__.__name__})") from None
    try:
        mapper = Mapper.from_pretrained(str(ema_dir), use_safetensors=True)
    except Exception as e:
        raise ExportError(f"{ema_dir}: cannot load the EMA mapper ({e.__class__.__name__})") from None
    prior = prior_from_config(cfg)  # for the card's prior identity and digest
    operator, family = run_operator(cfg)
    return export_mapper(mapper, out_dir, make_card(cfg, prior, operator, step, family))


def export_float16(export_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy an export with float16 weights (half the size), for shipping. The card says so; restoring
    casts back to float32, so an evaluation of the copy measures exactly what is shipped."""
    mapper, _, _ = load_export(export_dir, trust_remote_code=True)  # our own export, being copied
    card = {k: v for k, v in read_card(export_dir).items() if k not in ("format", "version")}
    return export_mapper(mapper, out_dir, {**card, "shipped_dtype": "float16"}, half=True)
