"""``davi restore``: restore measurements (or simulated degradations of clean images) with a mapper
export, RED-Diff or the lifted measurement; write mean / std / samples, the consistency table and
settings.json.

    davi restore --export davi/assets/mappers/sr4 --input mnist32:test --limit 16 --simulate sr --samples 4 --out outputs/sr4
    davi restore --export davi/assets/mappers/sr4 --input my_lowres/ --out outputs/mine
    davi restore ... --method red-diff --red-diff-steps 100
    davi restore --export davi/assets/mappers/family --input mnist32:test --simulate deblur --kernel-std 1.7 --sigma-y 0.08 --out outputs/fam
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from davi.cli.common import resolve_device, resolve_dtype
from davi.io.atomic import write_json, write_text

METHODS = ("davi", "red-diff", "lift", "dps", "diffpir", "ddrm")  # the last three: davi.baselines (deepinv)
HELP = "restore measurements (or simulated degradations of clean images)"


def _load_inputs(spec: str, channels: int, resolution: int, limit: int | None, trained_data: dict | None = None):
    """(names, images) from an image file, a folder, or '<data source>:<split>' (davi.data.inputs), with a
    note on stderr for files whose channel count was converted."""
    from davi.data.inputs import load_named_images

    loaded = load_named_images(spec, channels, resolution, limit, trained_data)
    if loaded.converted:
        what = "RGB image(s) converted to grayscale (ITU-R 601 luma)" if channels == 1 else \
            "grayscale array(s) replicated to RGB"
        print(f"note: {len(loaded.converted)} {what} for the {channels}-channel mapper, e.g. "
              f"{loaded.converted[0].name}", file=sys.stderr)
    return loaded.names, loaded.images


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


def _restorer(args):
    """The export's :class:`davi.Restorer` for the flags; flag combinations at fault are named."""
    import torch

    from davi.io.export import ExportError
    from davi.restorer import Restorer
    from davi.solvers.consistency import ConsistencyError

    if args.refine is not None and args.method != "davi":
        raise ConsistencyError(f"--refine: refines DAVI samples; not available with --method {args.method}")
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    if args.runtime == "onnx":
        if args.method != "davi":
            raise ExportError(f"--runtime onnx: only --method davi has an ONNX graph, not '{args.method}'")
        if args.device not in ("auto", "cpu") or dtype != torch.float32:
            raise ExportError("--runtime onnx runs on the CPU in fp32 (ONNX Runtime); drop --device/--dtype")
        device = torch.device("cpu")
    if dtype != torch.float32 and device.type != "cuda":
        raise ExportError(f"--dtype {args.dtype} needs a GPU; this run is on {device}")
    restorer = Restorer.from_pretrained(args.export, device, dtype, args.runtime, args.trust_remote_code,
                                        args.device_noise)
    if args.refine == "auto" and restorer.threshold is None:
        raise ExportError(f"{Path(args.export) / 'card.json'}: no consistency threshold in the card, which "
                          f"--refine auto needs (use --refine K to refine every image)")
    restorer = _member(args, restorer)
    if args.prior:
        from davi.models.prior import DiffusionPrior

        restorer.prior = DiffusionPrior.from_pretrained(args.prior).to(device)
    return restorer


# the operator flags of a family export's member (davi.operators.family), by the operator.* key each sets
MEMBER_FLAGS = {"scale": int, "kernel_std": float, "box_size": int, "drop_fraction": float}


def _member(args, restorer):
    """The restorer for the operator the flags name (--operator or --simulate, their settings, --sigma-y): a
    family export needs them; another export accepts only its own operator."""
    from davi.operators import OperatorError

    given = {k: getattr(args, k) for k in MEMBER_FLAGS if getattr(args, k) is not None}
    for item in args.operator_param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OperatorError(f"--operator-param {item!r}: expected KEY=VALUE")
        given[key] = _number(value)
    name = args.operator or args.simulate
    if restorer.family is None and not given and args.sigma_y is None and args.operator is None:
        return restorer  # --simulate is checked against the card's task in _measurements
    if restorer.family is not None and args.sigma_y is None:
        raise OperatorError(f"--sigma-y: a family export needs the measurement's noise level "
                            f"({restorer.family.describe()})")
    operator = None if name is None else {"name": name, **given}
    return restorer.with_operator(operator, args.sigma_y)


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _measurements(args, restorer):
    """(restorer at the inputs' size, names, y, clean references or None): the inputs as measurements, or
    degraded with --simulate."""
    import torch

    from davi.data.datasets import DataError
    from davi.io.export import ExportError

    card = restorer.card
    names, images = _load_inputs(args.input, card.channels, card.resolution, args.limit, card.trained_data)
    if images.shape[-2] != images.shape[-1]:
        raise DataError(f"{args.input}: images must be square, got {tuple(images.shape[1:])}")
    # the mapper is fully convolutional: inputs of another size get the operator rebuilt at that size
    restorer = restorer.at_size(images.shape[-1] if args.simulate else restorer.image_side(images))
    if restorer.operator.resolution != card.resolution:
        side = restorer.operator.resolution
        print(f"note: restoring {side}x{side} images with a mapper trained on {card.resolution}x{card.resolution} "
              f"(its networks are fully convolutional)", file=sys.stderr)
    image_shape = restorer.image_shape(images.shape[0])
    if args.simulate:
        if args.simulate != card.task and args.simulate != restorer.operator.name:
            raise ExportError(f"--simulate {args.simulate}: the export {args.export} was trained for '{card.task}'")
        if tuple(images.shape) != image_shape:
            raise DataError(f"{args.input}: clean images must be {image_shape[1]}x{image_shape[2]}x{image_shape[3]}, "
                            f"got {tuple(images.shape[1:])}")
        reference = images.to(restorer.device)
        y = restorer.operator.measure(reference, generator=torch.Generator().manual_seed(args.seed))
        return restorer, names, y, reference
    expected = tuple(restorer.operator.measurement_shape(image_shape))
    if tuple(images.shape) != expected:
        raise DataError(f"{args.input}: measurements for '{card.task}' must be "
                        f"{expected[1]}x{expected[2]}x{expected[3]}, got {tuple(images.shape[1:])}")
    bad = [n for n, im in zip(names, images) if not torch.isfinite(im).all()]
    if bad:
        raise DataError(f"{bad[0]}: measurement contains NaN or infinite values")
    return restorer, names, images.to(restorer.device), None


def _baseline(args, restorer):
    """The --method red-diff / lift / dps / diffpir / ddrm method (RED-Diff with the export's tuned settings and
    the flags'; DPS, DiffPIR and DDRM through deepinv at its defaults, on the export's prior and operator:
    davi.baselines, ``pip install -e .[baselines]``)."""
    from davi.builders import red_diff_settings
    from davi.solvers.methods import LiftMethod, RedDiffMethod

    if args.method == "lift":
        return LiftMethod(restorer.operator)
    if args.method in ("dps", "diffpir", "ddrm"):
        import davi.baselines as baselines
        from davi.config import ConfigError

        try:  # no deepinv (the extra named), or DDRM on an operator without an SVD: one line, exit 2
            return baselines.baseline_method(args.method, restorer.prior, restorer.operator)
        except (baselines.BaselineError, ValueError) as e:
            raise ConfigError(f"--method {args.method}: {e}") from None
    flags = {"num_steps": args.red_diff_steps, "lr": args.red_diff_lr, "lam": args.red_diff_lam}
    settings = red_diff_settings(restorer.card.red_diff, **flags)
    return RedDiffMethod(restorer.prior, restorer.operator, progress=False, **settings)


def _restore(args, restorer, y):
    """(Restoration, the method that made it) for --method and --refine."""
    from davi.restorer import Restoration
    from davi.solvers.methods import restore_in_batches

    if args.method == "davi":
        out = restorer(y, args.samples, args.seed, args.refine, args.batch_size)
        method = restorer.one_step_method() if args.refine is None else restorer.refining_method(args.refine)
        return out, method
    method = _baseline(args, restorer)
    samples = args.samples if method.stochastic else 1
    run = restore_in_batches(method, y, samples, args.seed, args.batch_size)
    return Restoration(run.samples, network_evaluations=method.nfe_per_sample * samples,
                       batch_seconds=run.batch_seconds), method


def _write_images(out: Path, names, restoration, y, lifted, reference) -> float:
    """mean/, lift/, std/ and samples/ (K > 1), reference/ and measurement/ (simulated); returns the
    scale of the std PNGs (their white)."""
    from davi.io.images import write_array, write_image

    samples = restoration.samples.shape[0]
    mean, std = restoration.mean, restoration.std
    std_scale = float(std.amax().clamp_min(1e-8))
    for i, name in enumerate(names):
        write_image(mean[i], out / "mean" / f"{name}.png")
        write_image(lifted[i], out / "lift" / f"{name}.png")
        if samples > 1:
            write_image(std[i] / std_scale * 2 - 1, out / "std" / f"{name}.png")
            for k in range(samples):
                write_image(restoration.samples[k, i], out / "samples" / f"{name}_{k}.png")
        if reference is not None:
            write_image(reference[i], out / "reference" / f"{name}.png")
            # the exact measurement (noise below 8-bit quantisation): feed it back with --input
            write_array(y[i], out / "measurement" / f"{name}.npy")
    return std_scale


def _consistency(args, restorer, names, restoration, method, out: Path) -> dict | None:
    """The consistency summary (and consistency.csv) of a DAVI restore; None for baselines or sigma_y = 0."""
    from davi.solvers.consistency import consistency_report
    from davi.solvers.methods import REFINE

    if args.method != "davi" or restoration.consistency is None:
        return None
    threshold = restorer.threshold
    if args.refine is None:
        table, summary = consistency_report(names, restoration.consistency, threshold)
    else:
        table, summary = consistency_report(names, restoration.one_step_consistency, threshold,
                                            restoration.refined, restoration.consistency)
        summary["refine"] = {"requested": str(args.refine), "steps": method.refiner.steps, **REFINE}
    write_text(out / "consistency.csv", table)
    return summary


def _notes(args, restorer, summary, n: int, out: Path) -> None:
    """What the user should know about the answer, on stderr."""
    threshold = restorer.threshold
    if args.method == "davi" and restorer.operator.sigma_y <= 0:
        print("note: the export's operator has sigma_y = 0: no consistency statistic", file=sys.stderr)
    elif args.method == "davi" and threshold is None:
        print(f"note: no consistency threshold in the card of {args.export}: statistic written to "
              f"consistency.csv without flags", file=sys.stderr)
    elif args.method == "davi" and summary["flagged"]:
        print(f"warning: {summary['flagged']} of {n} image(s) exceed the export's consistency threshold "
              f"{threshold:.3g} (||A x - y||^2 / (M sigma_y^2)): likely unlike the training data, do not trust "
              f"the one-step answer" + ("; refined" if args.refine is not None else "; try --refine auto")
              + f" (see {out / 'consistency.csv'})", file=sys.stderr)
    if args.method == "davi" and restorer.card.objective == "paired" and args.samples > 1:
        print(f"note: {args.export} was trained with the paired objective: point estimate: the spread is not a "
              f"posterior std (std/ shows sample spread only; davi.objective=sampler trains a posterior sampler)",
              file=sys.stderr)


def run(args) -> None:
    from davi.io.model_card import objective
    from davi.solvers.consistency import parse_refine

    parse_refine(args.refine)  # a bad --refine fails before anything loads
    restorer = _restorer(args)
    restorer, names, y, reference = _measurements(args, restorer)
    t0 = time.perf_counter()
    restoration, method = _restore(args, restorer, y)
    wall = time.perf_counter() - t0
    samples = restoration.samples.shape[0]
    timing, timed_how = restore_timing(method, y, args.batch_size, restoration.batch_seconds, samples)
    out = Path(args.out)
    std_scale = _write_images(out, names, restoration, y, restorer.operator.lift(y).cpu(), reference)
    settings = {
        "export": str(args.export), "input": args.input, "method": method.name, "task": restorer.card.task,
        "operator": restorer.operator.describe(), "sigma_y": restorer.operator.sigma_y,
        "simulate": bool(args.simulate), "seed": args.seed, "samples": samples, "images": len(names),
        "device": str(restorer.device), "dtype": args.dtype, "device_noise": args.device_noise,
        "runtime": args.runtime, "batch_size": args.batch_size,
        "network_evaluations_per_image": restoration.network_evaluations,
        "wall_seconds": wall, "seconds_per_image_after_warmup": timing.seconds_per_image, "timing": timed_how,
        "std_png_scale": std_scale,
    }
    if args.method == "davi":
        settings["objective"] = objective(restorer.card.to_dict())
    summary = _consistency(args, restorer, names, restoration, method, out)
    if summary is not None:
        settings["consistency"] = summary
    elif args.refine is not None:  # sigma_y = 0: no statistic, but the refinement still happened
        from davi.solvers.methods import REFINE

        settings["refine"] = {"requested": str(args.refine), "steps": method.refiner.steps,
                              "refined": int(restoration.refined.sum()), **REFINE}
    write_json(out / "settings.json", settings)
    _notes(args, restorer, summary, len(names), out)
    print(f"restored {len(names)} image(s) with {method.name} into {out} "
          f"({timing.seconds_per_image * 1000:.1f} ms/image at batch {timing.batch_size})")


def add_arguments(r) -> None:
    """The ``restore`` subcommand's flags."""
    r.add_argument("--export", required=True, help="mapper export folder (card.json + safetensors)")
    r.add_argument("--input", required=True, help="image file, folder, or '<source>:<split>' e.g. mnist32:test")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--simulate", default=None, metavar="TASK",
                   help="inputs are clean images: degrade them with the export's operator (seeded noise)")
    r.add_argument("--operator", default=None, metavar="NAME",
                   help="a family export: the member that measured the inputs (default: --simulate's)")
    r.add_argument("--sigma-y", type=float, default=None, help="a family export: the measurement noise std")
    for key, kind in MEMBER_FLAGS.items():
        r.add_argument(f"--{key.replace('_', '-')}", type=kind, default=None, help=f"the member's operator.{key}")
    r.add_argument("--operator-param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other operator.* setting of the member (repeatable)")
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
    r.add_argument("--trust-remote-code", action="store_true",
                   help="allow an export whose card names its operator by import path ('module:Class'): "
                        "loading it imports and runs that module")
    r.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="onnx: the export's mapper.onnx through ONNX Runtime (CPU; pip install 'davi[onnx]')")
