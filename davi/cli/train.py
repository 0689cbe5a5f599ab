"""``davi train``: train a diffusion prior (job: prior) or a DAVI mapper (jobs: davi, unpaired).

    davi train --config configs/sr4_mnist.yaml [key.sub=value ...] [--resume latest]
    accelerate launch train.py --config configs/sr4_mnist.yaml train.max_steps=5000   # devices, DDP, precision
    accelerate launch -m davi train --config configs/sr4_mnist.yaml                   # the same, installed
"""

from __future__ import annotations

import os
import sys

HELP = "train a diffusion prior (job: prior) or a DAVI mapper (job: davi, unpaired) from a YAML config"


def add_arguments(p) -> None:
    """The ``train`` subcommand's flags."""
    p.add_argument("--config", required=True, help="YAML file in configs/")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint-N folder")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=200")


def run(args) -> None:
    from davi.config import load_config

    cfg = load_config(args.config, args.overrides)  # a bad config stops here, before torch is imported

    from davi.training.loop import train
    from davi.training.recipes import get_recipe

    out = train(cfg, get_recipe(cfg.job), resume=args.resume)
    print(f"done: {out}")


def finish(code: int) -> int:
    """The exit status; in a multi-process launch, leave now instead of returning.

    A rank of a multi-process CPU run was seen waiting forever at interpreter shutdown after the run
    had written everything (cause not found), so such a rank leaves without the shutdown hooks."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    return code
