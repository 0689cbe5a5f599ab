"""Train a diffusion prior (job: prior) or a DAVI mapper (job: davi). The same as `davi train`.

    accelerate launch train.py --config configs/sr4_mnist.yaml [key.sub=value ...] [--resume latest]
    python train.py --config configs/prior_mnist.yaml train.max_steps=100   # one process is fine too
"""

from __future__ import annotations

import sys

import davi  # noqa: F401  (torchvision shim before anything imports it)
from davi.cli import train
from davi.cli.main import run_one


def main(argv: list[str] | None = None) -> int:
    # in a multi-process launch (WORLD_SIZE > 1) each rank leaves through os._exit after the run:
    # davi.cli.train.finish, the workaround for a rank seen hanging at interpreter shutdown
    return run_one(train, argv, prog="train.py", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
