"""``davi restore``: restore measurements (or simulated degradations of clean images) with a mapper
export, RED-Diff or the lifted measurement; write mean / std / samples, the consistency table and
settings.json.

    davi restore --export davi/assets/mappers/sr4 --input mnist32:test --limit 16 --simulate sr --samples 4 --out outputs/sr4
    davi restore --export davi/assets/mappers/sr4 --input my_lowres/ --out outputs/mine
    davi restore ... --method red-diff --red-diff-steps 100
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from davi.cli.common import resolve_device, resolve_dtype
from davi.io.atomic import write_json, write_text

METHODS = ("davi", "red-diff", "lift")
HELP = "restore measurements (or simulated degradations of clean images)"


def _load_inputs(spec: str, channels: int, resolution: int, limit: int | None, trained_data: dict | None = None):
    """(names, images) from an image file, a folder, or '<data source>:<split>' (e.g. mnist32:test).

    For the data set the mapper was trained on, the split is the training run's (its ranges
    or hash fraction, from the export card), so 'test' means the images held out in training.
    """
    import torch

    from davi.config import DataConfig
    from davi.data.datasets import DataError, load_split
    from davi.io.images import list_images

    if ":" in spec and not Path(spec).exists():
        source, split = spec.rsplit(":", 1)
        data = DataConfig(source=source, resolution=resolution, channels=channels)
        if trained_data and trained_data.get("source") == source:
            for key in ("test_fraction", "train_range", "test_range", "image_column"):
                if key in trained_data:
                    setattr(data, key, trained_data[key])
        ds = load_split(data, split)
        n = len(ds) if limit is None else min(limit, len(ds))
        return [f"{split}_{i:05d}" for i in range(n)], ds.tensor(limit=n)
    files = list_images(spec)[: limit or None]
    converted = []
    images = [_read_input(f, channels, converted) for f in files]
    if converted:
        what = "RGB image(s) converted to grayscale (ITU-R 601 luma)" if channels == 1 else \
            "grayscale array(s) replicated to RGB"
        print(f"note: {len(converted)} {what} for the {channels}-channel mapper, e.g. {converted[0].name}",
              file=sys.stderr)
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise DataError(f"{spec}: images of different sizes {sorted(shapes)}; restore them in separate calls")
    root = Path(spec) if Path(spec).is_dir() else Path(spec).parent
    names = [str(f.relative_to(root).with_suffix("")).replace(os.sep, "__") for f in files]
    return names, torch.stack(images)


def _read_input(path: Path, channels: int, converted: list):
    """read_image, except that an RGB image given to a 1-channel mapper becomes grayscale, and a
    1-channel .npy array given to a 3-channel mapper is replicated (image files already are)."""
    from davi.data.datasets import DataError
    from davi.io.images import read_image

    try:
        return read_image(path, channels)
    except DataError:
        other = 3 if channels == 1 else 1
        try:
            image = read_image(path, other)
        except DataError:
            image = None
        if image is None or path.suffix.lower() == ".npy" and channels == 1:
            raise  # unreadable, or a colour measurement array (exact values: not ours to mix)
    converted.append(path)
    if channels == 1:  # the luma weights PIL's RGB -> L conversion uses
        return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)
    return image.expand(3, -1, -1).clone()


def _prior_of(args, card: dict, device):
    """The diffusion prior RED-Diff and refinement use: --prior, else the one the export was trained against."""
    from davi.models.prior import DiffusionPrior

    return DiffusionPrior.from_pretrained(args.prior or card["prior"]["identity"]).to(device)


def restore_timing(method, y, batch_size: int, batch_seconds: list[tuple[float, int]], samples: int):
    """(seconds per image and sample, batch size, how it was measured). The restore's own full
    batches after the first give it for free; with one batch, a cheap method is timed again
    (warm-up, then best of 3), and an expensive one (RED-Diff, refinement) reports its one batch,
    warm-up included, rather than run it twice more."""
    from davi.solvers.methods import Timing, time_method

    later = [(t, n) for t, n in batch_seconds[1:] if n == batch_size]
    if later:
        return Timing(statistics.median(t / n for t, n in later) / samples, batch_size), "median of later batches"
    if method.nfe_per_sample <= 10:
        return time_method(method, y, batch_size, repeats=3), "re-timed: warm-up, best of 3"
    seconds, n = batch_seconds[0]
    return Timing(seconds / n / samples, n), "the one batch, warm-up included"


def run(args) -> None:
    import torch

    from davi.builders import red_diff_settings
    from davi.data.datasets import DataError
    from davi.io.export import ExportError, load_export
    from davi.io.images import write_array, write_image
    from davi.solvers.consistency import (ConsistencyError, card_threshold, consistency_report, parse_refine,
                                  residual_statistic)
    from davi.solvers.methods import (REFINE, REFINE_STEPS, DaviMethod, LiftMethod, RedDiffMethod, RefinedDaviMethod,
                                Refiner)

    refine = parse_refine(args.refine)
    if refine is not None and args.method != "davi":
        raise ConsistencyError(f"--refine: refines DAVI samples; not available with --method {args.method}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype)
    if args.runtime == "onnx":
        if args.method != "davi":
            raise ExportError(f"--runtime onnx: only --method davi has an ONNX graph, not '{args.method}'")
        if args.device not in ("auto", "cpu") or dtype != torch.float32:
            raise ExportError("--runtime onnx runs on the CPU in fp32 (ONNX Runtime); drop --device/--dtype")
        device = torch.device("cpu")
    if dtype != torch.float32 and device.type != "cuda":
        raise ExportError(f"--dtype {args.dtype} needs a GPU; this run is on {device}")
    mapper, card, operator = load_export(args.export, device)
    try:
        threshold = card_threshold(card)
    except ConsistencyError as e:
        raise ExportError(f"{Path(args.export) / 'card.json'}: {e}") from None
    if refine == "auto" and threshold is None:
        raise ExportError(f"{Path(args.export) / 'card.json'}: no consistency threshold in the card, which "
                          f"--refine auto needs (use --refine K to refine every image)")
    c, r = card["channels"], card["resolution"]
    names, images = _load_inputs(args.input, c, r, args.limit, card.get("config", {}).get("data"))
    image_shape = (images.shape[0], c, r, r)
    if args.simulate:
        if args.simulate != card["task"]:
            raise ExportError(f"--simulate {args.simulate}: the export {args.export} was trained for "
                              f"'{card['task']}'")
        if tuple(images.shape) != image_shape:
            raise DataError(f"{args.input}: clean images must be {c}x{r}x{r}, got {tuple(images.shape[1:])}")
        g = torch.Generator().manual_seed(args.seed)
        reference = images.to(device)
        y = operator.measure(reference, generator=g)
    else:
        reference = None
        expected = tuple(operator.measurement_shape(image_shape))
        if tuple(images.shape) != expected:
            raise DataError(f"{args.input}: measurements for '{card['task']}' must be "
                            f"{expected[1]}x{expected[2]}x{expected[3]}, got {tuple(images.shape[1:])}")
        y = images.to(device)
    bad = [n for n, im in zip(names, y) if not torch.isfinite(im).all()]
    if bad:
        raise DataError(f"{bad[0]}: measurement contains NaN or infinite values")

    if args.method == "davi" and args.runtime == "onnx":
        from davi.io.onnx import OnnxDaviMethod

        method = OnnxDaviMethod(args.export, operator)
    elif args.method == "davi":
        method = DaviMethod(mapper, operator, dtype, noise_on_device=args.device_noise)
    elif args.method == "lift":
        method = LiftMethod(operator)
    else:
        prior = _prior_of(args, card, device)
        overrides = {k: v for k, v in (("num_steps", args.red_diff_steps), ("lr", args.red_diff_lr),
                                          ("lam", args.red_diff_lam)) if v is not None}
        settings = red_diff_settings(card.get("config", {}).get("red_diff", {}), **overrides)
        method = RedDiffMethod(prior, operator, progress=False, **settings)

    if refine is not None:
        refiner = Refiner(_prior_of(args, card, device), operator, steps=REFINE_STEPS if refine == "auto" else refine)
        method = RefinedDaviMethod(method, refiner, threshold if refine == "auto" else None)

    from tqdm.auto import tqdm

    samples = args.samples if method.stochastic else 1
    outs, first_stats, refined, batch_seconds = [], [], [], []
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(names), args.batch_size), desc=f"restoring ({method.name})",
                      disable=len(names) <= args.batch_size):
        yb = y[start: start + args.batch_size]
        seeds = [args.seed * 100003 + start + i for i in range(yb.shape[0])]
        tb = time.perf_counter()
        outs.append(method(yb, seeds, samples).cpu())
        batch_seconds.append((time.perf_counter() - tb, yb.shape[0]))
        if refine is not None:
            first_stats.append(method.last_statistic)
            refined.append(method.last_refined)
    wall = time.perf_counter() - t0
    restored = torch.cat(outs, dim=1)  # (K, N, C, H, W)
    # of the first written sample; a noiseless operator (sigma_y = 0) gives the residual no scale
    stat = residual_statistic(operator, restored[0].to(device), y).cpu() if operator.sigma_y > 0 else None
    timing, timed_how = restore_timing(method, y, args.batch_size, batch_seconds, samples)

    out = Path(args.out)
    mean = restored.mean(0)
    std = restored.std(0) if samples > 1 else torch.zeros_like(mean)
    std_scale = float(std.amax().clamp_min(1e-8))
    lifted = operator.lift(y).cpu()
    for i, name in enumerate(names):
        write_image(mean[i], out / "mean" / f"{name}.png")
        write_image(lifted[i], out / "lift" / f"{name}.png")
        if samples > 1:
            write_image(std[i] / std_scale * 2 - 1, out / "std" / f"{name}.png")
            for k in range(samples):
                write_image(restored[k, i], out / "samples" / f"{name}_{k}.png")
        if reference is not None:
            write_image(reference[i], out / "reference" / f"{name}.png")
            # the exact measurement (noise below 8-bit quantisation): feed it back with --input
            write_array(y[i], out / "measurement" / f"{name}.npy")
    settings = {
        "export": str(args.export), "input": args.input, "method": method.name, "task": card["task"],
        "simulate": bool(args.simulate), "seed": args.seed, "samples": samples, "images": len(names),
        "device": str(device), "dtype": args.dtype, "device_noise": args.device_noise, "runtime": args.runtime, "batch_size": args.batch_size,
        "network_evaluations_per_image": method.nfe_per_sample * samples,
        "wall_seconds": wall, "seconds_per_image_after_warmup": timing.seconds_per_image,
        "timing": timed_how,
        "std_png_scale": std_scale,
    }
    if args.method == "davi":
        from davi.io.model_card import objective

        settings["objective"] = objective(card)
    nfe = settings["network_evaluations_per_image"]
    if args.method == "davi" and stat is not None:
        if refine is None:
            table, summary = consistency_report(names, stat, threshold)
        else:
            refined = torch.cat(refined)
            table, summary = consistency_report(names, torch.cat(first_stats), threshold, refined, stat)
            summary["refine"] = {"requested": str(refine), "steps": refiner.steps, **REFINE}
            # refined images cost 1 + steps per sample, the others 1
            nfe = samples * (1 + refiner.steps * float(refined.float().mean()))
        settings["network_evaluations_per_image"] = nfe
        settings["consistency"] = summary
        write_text(out / "consistency.csv", table)
    write_json(out / "settings.json", settings)
    if args.method == "davi" and stat is None:
        print("note: the export's operator has sigma_y = 0: no consistency statistic", file=sys.stderr)
    elif args.method == "davi" and threshold is None:
        print(f"note: no consistency threshold in the card of {args.export}: statistic written to "
              f"consistency.csv without flags", file=sys.stderr)
    elif args.method == "davi" and summary["flagged"]:
        print(f"warning: {summary['flagged']} of {len(names)} image(s) exceed the export's consistency threshold "
              f"{threshold:.3g} (||A x - y||^2 / (M sigma_y^2)): likely unlike the training data, do not trust "
              f"the one-step answer" + ("; refined" if refine is not None else "; try --refine auto")
              + f" (see {out / 'consistency.csv'})", file=sys.stderr)
    if settings.get("objective") == "paired" and samples > 1:
        print(f"note: {args.export} was trained with the paired objective: point estimate: the spread is not a "
              f"posterior std (std/ shows sample spread only; davi.objective=sampler trains a posterior sampler)",
              file=sys.stderr)
    print(f"restored {len(names)} image(s) with {method.name} into {out} "
          f"({timing.seconds_per_image * 1000:.1f} ms/image at batch {timing.batch_size})")


def add_arguments(r) -> None:
    """The ``restore`` subcommand's flags."""
    r.add_argument("--export", required=True, help="mapper export folder (card.json + safetensors)")
    r.add_argument("--input", required=True, help="image file, folder, or '<source>:<split>' e.g. mnist32:test")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--simulate", default=None, metavar="TASK",
                   help="inputs are clean images: degrade them with the export's operator (seeded noise)")
    r.add_argument("--samples", type=int, default=4, help="posterior samples per image (mean + std map)")
    r.add_argument("--method", choices=METHODS, default="davi")
    r.add_argument("--prior", default=None, help="prior for red-diff (default: the one in the export card)")
    r.add_argument("--red-diff-steps", type=int, default=None, help="RED-Diff steps (default: the export's config)")
    r.add_argument("--red-diff-lr", type=float, default=None, help="RED-Diff Adam learning rate")
    r.add_argument("--red-diff-lam", type=float, default=None, help="RED-Diff regulariser weight lambda")
    r.add_argument("--refine", default=None, metavar="K|auto",
                   help="after DAVI, K RED-Diff steps warm-started from each sample; 'auto': only the images "
                        "whose consistency statistic exceeds the card's threshold (19 steps)")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--limit", type=int, default=None, help="restore only the first N inputs")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    r.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="bf16/fp16 on GPU only")
    r.add_argument("--device-noise", action="store_true",
                   help="draw each image's noise on --device (faster on a GPU; a seed's samples then depend "
                        "on the device type), not on the CPU")
    r.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="onnx: the export's mapper.onnx through ONNX Runtime (CPU; pip install 'davi[onnx]')")
