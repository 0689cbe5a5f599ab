"""``davi onnx``: add mapper.onnx to an existing export, checked against PyTorch (pip install 'davi[onnx]').

    davi onnx --export davi/assets/mappers/sr4
"""

from __future__ import annotations

from pathlib import Path

HELP = "add mapper.onnx to an existing export (checked against PyTorch)"


def add_arguments(o) -> None:
    """The ``onnx`` subcommand's flags."""
    o.add_argument("--export", required=True, help="mapper export folder")


def run(args) -> None:
    from davi.io.onnx import export_onnx

    path = export_onnx(args.export)
    print(f"wrote {path} (inputs y, z; output x_hat; dynamic batch) and refreshed {Path(args.export) / 'README.md'}")
