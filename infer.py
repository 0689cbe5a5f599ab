"""Restore images with a trained mapper (or the baselines), evaluate restorations, export mappers.

    # degrade clean test digits with the export's operator, then restore them (4 samples each)
    python infer.py restore --export davi/assets/mappers/sr4 --input mnist32:test --limit 16 \
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

import argparse
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before anything imports it)
from davi.io.atomic import write_json
from davi.cli import restore
from davi.cli.common import run_cli





def cmd_evaluate(args) -> None:
    import torch

    from davi.data.datasets import DataError
    from davi.io.images import list_images, read_image
    from davi.eval.metrics import score_restorations

    restored_files = {f.stem: f for f in list_images(args.restored)}
    reference_files = {f.stem: f for f in list_images(args.reference)}
    common = sorted(set(restored_files) & set(reference_files))
    if not common:
        raise DataError(f"{args.restored}: no file names in common with {args.reference}")
    first = read_image(reference_files[common[0]], 3 if args.channels == 3 else 1)
    c = first.shape[0]
    restored = torch.stack([read_image(restored_files[n], c) for n in common])
    reference = torch.stack([read_image(reference_files[n], c) for n in common])
    if restored.shape != reference.shape:
        raise DataError(f"{args.restored}: restorations {tuple(restored.shape[1:])} and references "
                        f"{tuple(reference.shape[1:])} differ in shape")
    results = score_restorations(restored, reference, classifier=not args.no_classifier)
    results["images"] = len(common)
    out = Path(args.out) if args.out else Path(args.restored).parent / "metrics.json"
    write_json(out, results)
    for k, v in results.items():
        print(f"{k:>28}: {v}")
    print(f"wrote {out}")


def cmd_export(args) -> None:
    from davi.io.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} -> {out}")
    if args.onnx:
        cmd_onnx(argparse.Namespace(export=out))


def cmd_onnx(args) -> None:
    from davi.io.onnx import export_onnx

    path = export_onnx(args.export)
    print(f"wrote {path} (inputs y, z; output x_hat; dynamic batch) and refreshed {Path(args.export) / 'README.md'}")


def cmd_card(args) -> None:
    from davi.io.export import read_card
    from davi.io.model_card import metrics_from_results, write_model_card

    metrics = metrics_from_results(args.results, *args.row) if args.results else None
    print(f"wrote {write_model_card(args.export, read_card(args.export), metrics)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("restore", help=restore.HELP)
    restore.add_arguments(r)
    e = sub.add_parser("evaluate", help="PSNR/SSIM (+LPIPS/FID when their weights are on disk) vs references")
    e.add_argument("--restored", required=True)
    e.add_argument("--reference", required=True)
    e.add_argument("--channels", type=int, default=1, choices=(1, 3))
    e.add_argument("--out", default=None, help="metrics JSON (default: beside the restored folder)")
    e.add_argument("--no-classifier", action="store_true", help="skip the digit-classifier Frechet distance")
    x = sub.add_parser("export", help="export the EMA mapper of a training checkpoint")
    x.add_argument("--checkpoint", required=True, help="a checkpoint-N folder of a DAVI run")
    x.add_argument("--out", required=True)
    x.add_argument("--onnx", action="store_true", help="also write mapper.onnx (pip install 'davi[onnx]')")
    o = sub.add_parser("onnx", help="add mapper.onnx to an existing export (checked against PyTorch)")
    o.add_argument("--export", required=True, help="mapper export folder")
    c = sub.add_parser("card", help="(re)write an export's README.md model card, optionally with measured metrics")
    c.add_argument("--export", required=True, help="mapper export folder")
    c.add_argument("--results", default=None, help="a benchmark results JSON, e.g. benchmarks/results/tasks.json")
    c.add_argument("--row", nargs=2, metavar=("TASK", "METHOD"), help="the results row with the metrics")
    args = p.parse_args(argv)
    if getattr(args, "samples", 1) < 1:
        p.error("--samples must be >= 1")
    if args.command == "card" and bool(args.results) != bool(args.row):
        p.error("--results and --row go together")
    commands = {"restore": restore.run, "evaluate": cmd_evaluate, "export": cmd_export, "onnx": cmd_onnx,
                "card": cmd_card}
    return run_cli(lambda: commands[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
