"""Add the consistency threshold (davi/solvers/consistency.py) to mapper exports' card.json.

For each export: its DAVI samples' measurement-consistency statistic on held-out test images
500-999 of the data set it was trained on (test images 0-499 stay unseen, for the false-alarm
rate of benchmarks/ood.py), the 99th percentile as the threshold. card.json is rewritten
(atomically) and the model card README.md with it; the weights are not touched, and their hash
is checked before and after.

    python scripts/calibrate_consistency.py davi/assets/mappers/sr4 davi/assets/mappers/deblur davi/assets/mappers/box
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.cli.common import run_cli


def calibrate(export: Path, quantile: float, seed: int) -> dict:
    from davi.io.atomic import write_json
    from davi.solvers.consistency import calibrate_consistency, calibration_images
    from davi.io.card import ExportCard
    from davi.io.export import ExportError, load_export
    from davi.solvers.methods import DaviMethod
    from davi.models.prior import safetensors_digest
    from davi.io.model_card import write_model_card

    before = safetensors_digest(export)
    mapper, _, operator = load_export(export)
    images, source = calibration_images(ExportCard.read(export))
    entry = calibrate_consistency(DaviMethod(mapper, operator), operator, images, source=source, seed=seed,
                                  quantile=quantile)
    if safetensors_digest(export) != before:  # checked before the card is touched
        raise ExportError(f"{export}: weights changed while calibrating")
    # the file as written (its keys and their order), with the entry added
    raw = {**json.loads((export / "card.json").read_text()), "consistency": entry}
    write_json(export / "card.json", raw)
    write_model_card(export, raw)  # the hub card shows the threshold too (its measured metrics are kept)
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exports", nargs="+", type=Path)
    p.add_argument("--quantile", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=12345, help="measurement noise and DAVI seeds")
    args = p.parse_args(argv)

    def job():
        for export in args.exports:
            e = calibrate(export, args.quantile, args.seed)
            print(f"{export}: threshold {e['threshold']:.4f} (q{args.quantile:g} of {e['n']} images of "
                  f"{e['source']}; median {e['quantiles']['0.5']:.4f})")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
