"""Restore images with a trained mapper (or the baselines), evaluate restorations, export mappers.
The same subcommands as the installed `davi` command (`davi restore ...`).

    # degrade clean test digits with the export's operator, then restore them (4 samples each)
    python infer.py restore --export davi/assets/mappers/sr4 --input mnist32:test --limit 16 \\
        --simulate sr --samples 4 --out outputs/sr4
    # restore your own measurements (images of the measurement's size, e.g. 8x8 for SR x4)
    python infer.py restore --export davi/assets/mappers/sr4 --input my_lowres/ --out outputs/mine
    # the same images through RED-Diff or the lifted measurement
    python infer.py restore ... --method red-diff --red-diff-steps 100
    # metrics of restorations against references (matched by file name)
    python infer.py evaluate --restored outputs/sr4/mean --reference outputs/sr4/reference
    # export the EMA mapper of a training checkpoint
    python infer.py export --checkpoint runs/sr4_mnist/checkpoint-1000 --out exports/sr4
"""

from __future__ import annotations

import sys

import davi  # noqa: F401  (torchvision shim before anything imports it)
from davi.cli.main import COMMANDS, run_commands

SUBCOMMANDS = ("restore", "evaluate", "export", "onnx", "card")


def main(argv: list[str] | None = None) -> int:
    return run_commands({name: COMMANDS[name] for name in SUBCOMMANDS}, argv, prog="infer.py",
                        description=__doc__, invocation="python infer.py")


if __name__ == "__main__":
    sys.exit(main())
