"""``davi export``: export the EMA mapper of a DAVI training checkpoint (safetensors + card.json + README.md).

    davi export --checkpoint runs/sr4_mnist/checkpoint-1000 --out exports/sr4 [--onnx]
"""

from __future__ import annotations

import argparse

HELP = "export the EMA mapper of a training checkpoint"


def add_arguments(x) -> None:
    """The ``export`` subcommand's flags."""
    x.add_argument("--checkpoint", required=True, help="a checkpoint-N folder of a DAVI run")
    x.add_argument("--out", required=True)
    x.add_argument("--onnx", action="store_true", help="also write mapper.onnx (pip install 'davi[onnx]')")


def run(args) -> None:
    from davi.cli import onnx
    from davi.io.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} -> {out}")
    if args.onnx:
        onnx.run(argparse.Namespace(export=out))
