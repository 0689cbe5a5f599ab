"""Train a diffusion prior (job: prior) or a DAVI mapper (job: davi).

    accelerate launch train.py --config configs/sr4_mnist.yaml [key.sub=value ...] [--resume latest]
    python train.py --config configs/prior_mnist.yaml train.max_steps=100   # one process is fine too
"""

from __future__ import annotations

import argparse
import os
import sys

import davi  # noqa: F401  (torchvision shim before anything imports it)
from davi.cli.common import run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file in configs/")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint-N folder")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=200")
    args = p.parse_args(argv)

    def job():
        from davi.config import load_config
        from davi.training.recipes import get_recipe
        from davi.training.loop import train

        cfg = load_config(args.config, args.overrides)
        out = train(cfg, get_recipe(cfg.job), resume=args.resume)
        print(f"done: {out}")

    return run_cli(job)


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A rank of a multi-process CPU run was seen waiting forever at interpreter shutdown after
        # the run had written everything (cause not found); leave without the shutdown hooks.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)
