"""``davi evaluate``: metrics of restorations against references, matched by file name.

    davi evaluate --restored outputs/sr4/mean --reference outputs/sr4/reference
"""

from __future__ import annotations

from pathlib import Path

HELP = "PSNR/SSIM (+LPIPS/FID when their weights are on disk) vs references"


def add_arguments(e) -> None:
    """The ``evaluate`` subcommand's flags."""
    e.add_argument("--restored", required=True)
    e.add_argument("--reference", required=True)
    e.add_argument("--channels", type=int, default=1, choices=(1, 3))
    e.add_argument("--out", default=None, help="metrics JSON (default: beside the restored folder)")
    e.add_argument("--no-classifier", action="store_true", help="skip the digit-classifier Frechet distance")


def _paired_images(restored_dir, reference_dir, channels: int):
    """(names, restored (N, C, H, W), reference (N, C, H, W)) of the file names both folders hold."""
    import torch

    from davi.data.datasets import DataError
    from davi.io.images import list_images, read_image

    restored_files = {f.stem: f for f in list_images(restored_dir)}
    reference_files = {f.stem: f for f in list_images(reference_dir)}
    common = sorted(set(restored_files) & set(reference_files))
    if not common:
        raise DataError(f"{restored_dir}: no file names in common with {reference_dir}")
    first = read_image(reference_files[common[0]], 3 if channels == 3 else 1)
    c = first.shape[0]
    restored = torch.stack([read_image(restored_files[n], c) for n in common])
    reference = torch.stack([read_image(reference_files[n], c) for n in common])
    if restored.shape != reference.shape:
        raise DataError(f"{restored_dir}: restorations {tuple(restored.shape[1:])} and references "
                        f"{tuple(reference.shape[1:])} differ in shape")
    return common, restored, reference


def run(args) -> None:
    from davi.eval.metrics import score_restorations
    from davi.io.atomic import write_json

    common, restored, reference = _paired_images(args.restored, args.reference, args.channels)
    results = score_restorations(restored, reference, classifier=not args.no_classifier)
    results["images"] = len(common)
    out = Path(args.out) if args.out else Path(args.restored).parent / "metrics.json"
    write_json(out, results)
    for k, v in results.items():
        print(f"{k:>28}: {v}")
    print(f"wrote {out}")
