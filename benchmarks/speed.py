"""Seconds per image: DAVI's one-step restoration against RED-Diff's per-step cost, at 256 x 256.

Both methods are the library's, run as ``infer.py`` runs them, on the same prior-sized network
(random weights: speed does not depend on them), device, dtype and memory layout:

* **DAVI**: :class:`davi.solvers.methods.DaviMethod` -- lift, per-image noise, ONE network evaluation
  ``I_phi(lift(y) + h z, T - 1)``, clamp;
* **RED-Diff**: :class:`davi.solvers.methods.RedDiffMethod` (:class:`davi.solvers.red_diff.RedDiff`) run for
  ``--red-diff-steps`` steps; each step is one prior evaluation (no gradient) + the data-fit
  gradient through ``A`` + one Adam step on the estimate. RED-Diff-N costs N such steps, so
  ``RED-Diff-1000 = 1000 x (measured seconds per step)``; steps are measured, not assumed.

Both draw their noise per image on the CPU (results do not depend on batch composition), as in
``infer.py``. bf16/fp16 run under ``torch.autocast`` with fp32 weights (DAVI through
``DaviMethod``'s dtype, as ``infer.py --dtype`` does; RED-Diff with its whole step under autocast).
Timing is :func:`davi.eval.timing.median_time`: on CUDA every timing is bracketed by
``torch.cuda.synchronize()``; each figure is the median of ``--repeats`` timed runs after
``--warmup`` untimed ones (which absorb cuDNN autotuning and ``torch.compile``). Loading and
building are never timed. fp32 is strict fp32 (TF32 off) unless ``--tf32``.

Architectures (:mod:`davi.eval.timing`): ``ffhq256`` (DPS's FFHQ DDPM, 93.6M parameters),
``imagenet256`` (guided-diffusion's unconditional ImageNet model, 552.8M) and ``small`` (1.5M, for
quick CPU runs: its numbers say nothing about the real scale).

    python benchmarks/speed.py                                   # CUDA if present, ffhq256, batch 1 8 32
    python benchmarks/speed.py --channels-last --compile         # the fast path on a GPU
    python benchmarks/speed.py --arch imagenet256 --dtypes bf16 --batch-sizes 1 8 32
    python benchmarks/speed.py --device cpu --arch small --batch-sizes 1 8   # < 1 min on a CPU

Prints a Markdown table and writes the numbers to benchmarks/results/speed_<device>.json (``--out``)
with the table rendered beside it (``.md``), by ``common.publish``; the README's 256 x 256
speed table is rendered from ``speed_cpu_ffhq256.json`` (``render_speed_256``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.eval.timing import ARCHS, device_description, median_time, random_prior, random_unet
from common import table
from davi.cli.common import resolve_device, resolve_dtype, run_cli
from davi.eval.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("fp32", "bf16", "fp16")
TASKS = ("sr", "box_inpaint", "deblur", "random_inpaint", "denoise")


def make_davi_fn(mapper, operator, y, dtype_name: str, noise_on_device: bool = False):
    """One DAVI restoration of the batch y (one sample per image), as infer.py runs it."""
    from davi.solvers.methods import DaviMethod

    method = DaviMethod(mapper, operator, resolve_dtype(dtype_name), noise_on_device)
    seeds = list(range(y.shape[0]))
    return lambda: method(y, seeds)


def make_red_diff_fn(prior, operator, y, device, dtype_name: str, steps: int, lr: float = 0.25, lam: float = 0.25):
    """``steps`` RED-Diff steps on the batch y (davi.solvers.red_diff.RedDiff through RedDiffMethod)."""
    import torch

    from davi.solvers.methods import RedDiffMethod

    method = RedDiffMethod(prior, operator, steps=steps, lr=lr, lam=lam)
    seeds = list(range(y.shape[0]))
    cast = (contextlib.nullcontext if dtype_name == "fp32" else
            lambda: torch.autocast(device_type=device.type, dtype=resolve_dtype(dtype_name)))

    def run():
        with cast():
            return method(y, seeds)

    return run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--arch", default="ffhq256", choices=ARCHS)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=None,
                   help="default: fp32 bf16 fp16 on CUDA; fp32 bf16 on CPU (CPU fp16 autocast is ~100x slower)")
    p.add_argument("--channels-last", action="store_true", help="channels_last weights and inputs")
    p.add_argument("--compile", action="store_true", help="torch.compile the mapper's and the prior's UNet")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default | max-autotune | ...)")
    p.add_argument("--tf32", action="store_true", help="CUDA: let fp32 convolutions/matmuls use TF32 (Ampere+)")
    p.add_argument("--device-noise", action="store_true",
                   help="draw DAVI's per-image noise on the device (infer.py --device-noise), not the CPU")
    p.add_argument("--task", default="sr", choices=TASKS, help="operator of the measurement (SR x4 by default)")
    p.add_argument("--red-diff-steps", type=int, default=None,
                   help="RED-Diff steps per timed run (seconds per step = run / steps); default 5 on CUDA, 1 on CPU")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 3 on CUDA, 1 on CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs, median reported (default 10 CUDA, 5 CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None,
                   help="results JSON, the .md written beside it (default benchmarks/results/speed_<device>.json)")
    args = p.parse_args(argv)
    if min(args.batch_sizes) < 1:
        p.error("--batch-sizes must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)

    import torch

    from davi.config import OperatorConfig
    from davi.models.mapper import Mapper
    from davi.operators import build_operator
    from common import publish

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    dtypes = args.dtypes or (["fp32", "bf16", "fp16"] if cuda else ["fp32", "bf16"])
    if cuda and "bf16" in dtypes and not torch.cuda.is_bf16_supported():
        print("note: this GPU has no bf16 support; skipping bf16")
        dtypes = [d for d in dtypes if d != "bf16"]
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    repeats = args.repeats if args.repeats is not None else (10 if cuda else 5)
    rd_steps = args.red_diff_steps or (5 if cuda else 1)
    if repeats < 1 or rd_steps < 1 or warmup < 0:
        raise SystemExit("--repeats and --red-diff-steps must be >= 1, --warmup >= 0")
    if args.compile and warmup < 1:
        warmup = 1  # the first call compiles
    if cuda:
        torch.backends.cudnn.benchmark = True
        # fp32 means fp32 unless --tf32 (then the fp32 rows say "fp32 (tf32)"); bf16/fp16 are their own rows.
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32

    unet = random_unet(args.arch, args.seed)
    n_params = sum(p.numel() for p in unet.parameters())
    res, c = unet.config.sample_size, unet.config.in_channels
    mapper = Mapper.from_prior_unet(unet, h=0.1, tanh=False).eval().requires_grad_(False).to(device)
    prior = random_prior(unet).to(device)
    if args.channels_last:
        mapper.net.to(memory_format=torch.channels_last)
        prior.unet.to(memory_format=torch.channels_last)
    if args.compile:
        # One static graph per (batch size, dtype): no dynamic-shape kernels, and no silent fall-back
        # to eager once dynamo's default limit of 8 recompilations per function is reached.
        import torch._dynamo

        for name in ("cache_size_limit", "recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
        mapper.net = torch.compile(mapper.net, mode=args.compile_mode, dynamic=False)
        prior.unet = torch.compile(prior.unet, mode=args.compile_mode, dynamic=False)
    operator = build_operator(OperatorConfig(name=args.task), res, c).to(device)

    rows = []
    layout = "channels_last" if args.channels_last else "contiguous"
    for dtype_name in dtypes:
        for bs in args.batch_sizes:
            g = torch.Generator().manual_seed(args.seed + bs)
            x0 = (torch.rand((bs, c, res, res), generator=g) * 2 - 1).to(device)
            y = operator.measure(x0, generator=g)
            if args.channels_last:
                y = y.contiguous(memory_format=torch.channels_last)
            label = "fp32 (tf32)" if dtype_name == "fp32" and cuda and args.tf32 else dtype_name
            row = {"arch": args.arch, "dtype": label, "batch": bs, "layout": layout,
                   "compiled": args.compile_mode if args.compile else "no",
                   "noise": "device" if args.device_noise else "cpu"}
            try:
                t_davi = median_time(make_davi_fn(mapper, operator, y, dtype_name, args.device_noise), device, warmup, repeats)
                t_run = median_time(make_red_diff_fn(prior, operator, y, device, dtype_name, rd_steps),
                                    device, warmup, repeats)
            except torch.cuda.OutOfMemoryError:
                row.update(davi="OOM", step="OOM")
                rows.append(row)
                torch.cuda.empty_cache()
                print(f"{dtype_name} batch {bs}: out of memory")
                continue
            davi_img = t_davi / bs
            step_img = t_run / rd_steps / bs
            row.update(davi=davi_img, step=step_img, step_over_davi=step_img / davi_img,
                       rd100=100 * step_img, rd1000=1000 * step_img, speedup=1000 * step_img / davi_img,
                       davi_ips=1.0 / davi_img)
            rows.append(row)
            print(f"{dtype_name} batch {bs}: DAVI {davi_img * 1e3:.2f} ms/img, RED-Diff step {step_img * 1e3:.2f} "
                  f"ms/img -> RED-Diff-1000 {1000 * step_img:.2f} s/img, x{1000 * step_img / davi_img:.0f}",
                  flush=True)

    head = (f"# Restoration speed, {res}x{res}, {device_description(device)}\n\n"
            f"Network: `{args.arch}` UNet2DModel, {n_params / 1e6:.1f}M parameters, random weights "
            f"({'a quick-check size, not the real scale' if args.arch == 'small' else 'the published prior size'}). "
            f"Task `{args.task}`. torch {torch.__version__}.\n"
            f"Median of {repeats} timed runs after {warmup} warm-up run(s); RED-Diff timed over {rd_steps} "
            f"consecutive step(s) per run and divided: RED-Diff-N = N x (seconds per step). "
            f"bf16/fp16 = torch.autocast with fp32 weights.")
    command = " ".join(["python", "benchmarks/speed.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"speed_{device.type}.json"
    publish(out.with_suffix(".json"), {"command": command, "head": head, "device": device_description(device),
                                       "resolution": res, "arch": args.arch, "params": n_params, "rows": rows},
            render_speed)


# ----------------------------------------------------------------------------------------------
# the tables: speed_*.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
SPEED_COLUMNS = [("arch", "arch", "{}"), ("dtype", "dtype", "{}"), ("batch", "batch", "{}"),
                 ("layout", "layout", "{}"), ("compiled", "compiled", "{}"), ("noise", "DAVI noise drawn on", "{}"),
                 ("davi", "DAVI s/img (1 NFE)", "{:.4g}"), ("davi_ips", "DAVI img/s", "{:.4g}"),
                 ("step", "RED-Diff s/img per step", "{:.4g}"), ("step_over_davi", "step / DAVI", "{:.2f}"),
                 ("rd100", "RED-Diff-100 s/img", "{:.4g}"), ("rd1000", "RED-Diff-1000 s/img", "{:.4g}"),
                 ("speedup", "RED-Diff-1000 / DAVI", "{:.0f}")]


def render_speed(data: dict) -> str:
    """benchmarks/speed.py: seconds per image of DAVI and per RED-Diff step, per dtype and batch size."""
    return markdown_table([{"noise": "cpu", **r} for r in data["rows"]], SPEED_COLUMNS)


@table("speed_256", "speed_cpu_ffhq256.json")
def render_speed_256(data: dict) -> str:
    """The README's 256 x 256 speed table: the batch-1 rows of benchmarks/speed.py at the prior's size."""
    rows = [{**r, "dtype": r["dtype"] + ("" if r["dtype"].startswith("fp32") else " (autocast)")}
            for r in data["rows"] if r["batch"] == 1]
    where = f"{data['resolution']}x{data['resolution']}, {data['device']}"
    return markdown_table(rows, [("dtype", where, "{}"), ("davi", "DAVI s/image (1 NFE)", "{:.4g}"),
                                 ("step", "RED-Diff s/step", "{:.4g}"), ("speedup", "RED-Diff-1000 / DAVI", "{:.0f}x")])


@table("speed_256_params", "speed_cpu_ffhq256.json", inline=True)
def render_speed_256_params(data: dict) -> str:
    return f"{data['params'] / 1e6:.1f}M"


SPEED_GPU_FILES = ("speed_gpu_eager.json", "speed_gpu_channels_last.json", "speed_gpu_compile.json",
                   "speed_gpu_compile_ro.json", "speed_gpu_devnoise.json", "speed_gpu_devnoise_compile.json",
                   "speed_gpu_devnoise_compile_ro.json")


def _gpu_setting(row: dict) -> str:
    compiled = "eager" if row["compiled"] == "no" else f"compile {row['compiled']}"
    layout = ", channels_last" if row["layout"] == "channels_last" else ""
    return f"{row['dtype']}, {compiled}{layout}, noise on {'GPU' if row.get('noise') == 'device' else 'CPU'}"


@table("speed_gpu_all", *SPEED_GPU_FILES)
def render_speed_gpu_all(*runs: dict) -> str:
    """Every GPU speed row (benchmarks/speed.py), one line per setting and batch size."""
    rows = [{**r, "setting": _gpu_setting(r), "lease": run["machine"].split("(")[1].split(":")[0],
             "davi_ms": 1e3 * r["davi"], "step_ms": 1e3 * r["step"], "speedup100": r["speedup"] / 10}
            for run in runs for r in run["rows"]]
    return markdown_table(rows, [("setting", "setting", "{}"), ("lease", "machine", "{}"), ("batch", "batch", "{}"),
                                 ("davi_ms", "DAVI ms/image", "{:.2f}"), ("step_ms", "RED-Diff ms/step/image", "{:.2f}"),
                                 ("speedup", "RED-Diff-1000 / DAVI", "{:.0f}x"),
                                 ("speedup100", "RED-Diff-100 / DAVI", "{:.0f}x")])


@table("speed_gpu", "speed_gpu_eager.json", "speed_gpu_devnoise.json", "speed_gpu_devnoise_compile_ro.json")
def render_speed_gpu(default: dict, device_noise: dict, fastest: dict) -> str:
    """The README's GPU speed table: infer.py's default, the eager half-precision path and the fastest."""
    picks = [(default, "fp32"), (device_noise, "bf16"), (fastest, "bf16")]
    rows = []
    for run, dtype in picks:
        by_batch = {r["batch"]: r for r in run["rows"] if r["dtype"] == dtype}
        b1, b32 = by_batch[1], by_batch[32]
        rows.append({"setting": _gpu_setting(b1), "b1": 1e3 * b1["davi"], "b32": 1e3 * b32["davi"],
                     "rd1000": b1["rd1000"], "x1000": b1["speedup"], "x100": b1["speedup"] / 10})
    return markdown_table(rows, [("setting", "setting (both methods)", "{}"), ("b1", "DAVI ms/image, batch 1", "{:.1f}"),
                                 ("b32", "DAVI ms/image, batch 32", "{:.1f}"),
                                 ("rd1000", "RED-Diff-1000 s/image, batch 1", "{:.1f}"),
                                 ("x1000", "RED-Diff-1000 / DAVI", "{:.0f}x"), ("x100", "RED-Diff-100 / DAVI", "{:.0f}x")])


if __name__ == "__main__":
    sys.exit(run_cli(main))
