"""Copy a trained prior (a run's EMA `prior/` folder) into the package as the embedded default.

Weights are stored as float16 safetensors (half the size; DiffusionPrior computes in the
caller's dtype), with the scheduler config and a training record beside them.

    python scripts/ship_prior.py runs/prior_mnist/prior --seconds 5400
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.cli.common import run_cli

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("prior", help="a diffusers prior folder (unet/ + scheduler/)")
    p.add_argument("--out", default=str(ROOT / "davi" / "assets" / "prior_mnist32"))
    p.add_argument("--seconds", type=float, default=None, help="training wall time to record")
    args = p.parse_args()

    import torch

    from davi.models.prior import load_unet_and_scheduler, save_prior

    unet, scheduler, _, _ = load_unet_and_scheduler(args.prior)
    record = {}
    src = Path(args.prior) / "training.json"
    if src.is_file():
        record = json.loads(src.read_text())
    record.update({"source": str(args.prior), "stored_dtype": "float16"})
    if args.seconds is not None:
        record["wall_seconds"] = args.seconds
    save_prior(unet.to(torch.float16), scheduler, args.out, extra=record)
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    sys.exit(run_cli(main))
