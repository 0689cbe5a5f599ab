"""Held-out scores of a training checkpoint's EMA mapper, cached beside the checkpoint.

    score_checkpoint(Path("runs/sr4/checkpoint-250"), images=200)
    # {"step": 250, "psnr": ..., "ssim": ..., "classifier_fd": ..., "kid": ..., "kid_std": ...}

The protocol is davi.eval.evaluate.held_out_scores': the first ``images`` test digits of the
checkpoint's data, measurement noise seed 0, one sample per image (seed 0).
"""

from __future__ import annotations

import json
from pathlib import Path


def score_checkpoint(checkpoint: Path, images: int) -> dict:
    """Scores of one checkpoint's EMA mapper on the first ``images`` test digits (cached beside it in
    ``heldout_<images>.json``), with the checkpoint's step."""
    from davi.builders import operator_from_config
    from davi.config import load_config
    from davi.eval.evaluate import held_out_scores
    from davi.io.atomic import write_json
    from davi.models.mapper import Mapper
    from davi.solvers.methods import DaviMethod

    checkpoint = Path(checkpoint)
    cache = checkpoint / f"heldout_{images}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    cfg = load_config(checkpoint / "config.yaml")
    operator = operator_from_config(cfg)
    mapper = Mapper.from_pretrained(str(checkpoint / "ema"), use_safetensors=True).eval()
    step = int(json.loads((checkpoint / "trainer_state.json").read_text())["step"])
    row = {"step": step, **held_out_scores(DaviMethod(mapper, operator), operator, cfg.data, images)}
    write_json(cache, row)
    return row
