"""Peak memory of one DAVI training iteration at 256 x 256, batch 1..8, with and without gradient checkpointing.

One iteration is the trainer's own (``davi.training.loop.run_iteration`` on the recipe that ``cfg.job`` names,
from a config, default ``configs/sr4_ffhq256.yaml``, then the EMA step): for DAVI the mapper forward
(its graph kept), the score network's DSM forward + backward + clip + AdamW step, then the IKL (teacher
forward and score forward, no gradients) + consistency + regression, the mapper backward + clip + AdamW
step, with the non-finite guard and ``train.grad_accum`` micro-batches, and the EMA update.
Networks are prior-sized with random weights (``--arch``, :mod:`davi.eval.timing`); memory does not
depend on the weights. One warm-up iteration runs first so that AdamW's moments exist, then one is
measured:

* **CUDA (measured)**: ``torch.cuda.max_memory_allocated`` around the measured iteration after
  ``reset_peak_memory_stats``; "resident" is ``memory_allocated`` before it (weights of teacher, mapper
  and score network, both AdamW moments, the EMA copy). ``max_memory_reserved`` (the caching
  allocator's footprint, what ``nvidia-smi`` roughly shows) is reported beside it. Default precision
  fp16 (the reference setting), via accelerate exactly as in training.
* **CPU (ESTIMATE)**: there is no allocator counter. The points run in a child process started with
  glibc's mmap threshold fixed at 64 KiB (so freed tensors leave the resident set at once); each
  reports the resident-set high-water mark (``VmHWM`` in ``/proc/self/status``, reset before the
  measured iteration through ``/proc/self/clear_refs``) minus the RSS the process had, libraries
  loaded, before any network was built. The warm-up is by default one zero-gradient AdamW step per
  network (``--cpu-warmup prime``: the moments exist, as after a real iteration, at half the time;
  ``--cpu-warmup iteration`` runs a full one). Batch sizes that were not run are extrapolated along
  the straight line through the measured ones (memory is affine in the batch size). These are CPU
  figures standing in for GPU ones: the same tensors, but CPU kernels' own temporaries instead of
  cuDNN workspaces and the CUDA caching allocator. Labelled ESTIMATE in the table.

The static part is also counted exactly from the parameter count (no run needed): fp32 weights of
three networks + two AdamW moments for two + the EMA copy = 4 bytes x 10 x parameters
(32 x parameters bytes resident between iterations, + 4 x parameters for the gradients of the
network being stepped).

    python benchmarks/memory.py                                        # CUDA: ffhq256, batch 1..8, fp16
    python benchmarks/memory.py --arch imagenet256 --batch-sizes 1 2 4
    python benchmarks/memory.py --device cpu --arch small              # CPU estimate: batch 1, 2 run, 3..8 extrapolated

Prints a Markdown table and writes the numbers to benchmarks/results/memory_<device>.json (``--out``)
with the table rendered beside it (``.md``), by ``common.publish``; the README's 256 x 256
peak-memory figures are rendered from ``memory_cpu_ffhq256.json`` (``render_memory_256_peak``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import davi  # noqa: F401  (torchvision shim before diffusers)
from davi.eval.timing import ARCHS, count_parameters, device_description, random_prior, random_unet
from common import table
from davi.cli.common import resolve_device, run_cli
from davi.eval.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]

GIB = 1024**3
WORKER_TAG = "MEMORY_POINT "


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_config(args, batch_size: int, checkpointing: bool):
    from davi.config import load_config

    return load_config(args.config, [
        f"train.batch_size={batch_size}", f"train.gradient_checkpointing={str(checkpointing).lower()}",
        f"train.mixed_precision={args.mixed_precision}", "log.num_val=1", "log.num_samples=1", "log.progress=false",
    ])


def measure_point(args, accelerator, prior, batch_size: int, checkpointing: bool,
                  baseline_kib: int | None = None) -> dict:
    """Build the recipe, warm up (see --cpu-warmup), run one measured iteration; memory in bytes.

    The iteration is the trainer's own: :func:`davi.training.loop.run_iteration` (the recipe's updates with
    backward, clipping, the non-finite guard and AdamW steps, over ``train.grad_accum`` micro-batches),
    then the EMA step, as :func:`davi.training.loop.train` runs them. CPU figures are RSS above
    ``baseline_kib``, the process's RSS before any network was built.
    """
    import itertools
    from collections import defaultdict

    import torch

    from davi.training.recipes import get_recipe
    from davi.training.loop import make_ema, prepare_networks, run_iteration

    device = accelerator.device
    cuda = device.type == "cuda"
    cfg = make_config(args, batch_size, checkpointing)
    tc = cfg.train
    c, r = cfg.data.channels, cfg.data.resolution

    val = torch.rand(1, c, r, r) * 2 - 1
    recipe = get_recipe(cfg.job)(cfg, accelerator, prior=prior, val_images=val)
    nets, opts = prepare_networks(accelerator, recipe, tc)
    ema_net = accelerator.unwrap_model(nets[recipe.ema_network])
    ema = make_ema(accelerator, ema_net, tc.ema_decay)
    g = torch.Generator().manual_seed(0)
    batches = itertools.repeat({"image": torch.rand((batch_size, c, r, r), generator=g) * 2 - 1})
    timings = defaultdict(float)

    def iteration(step: int) -> None:
        run_iteration(accelerator, recipe, nets, opts, batches, tc, step, timings)
        ema.step(ema_net.parameters())

    def prime_optimizers() -> None:
        """Create AdamW's moments with zero gradients (a zero update): the warm-up's state, without its time."""
        for k, net in recipe.networks.items():
            for p in net.parameters():
                p.grad = torch.zeros_like(p)
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)

    out = {"batch": batch_size, "checkpointing": checkpointing,
           "params": sum(p.numel() for p in prior.unet.parameters())}
    try:
        if cuda or args.cpu_warmup == "iteration":
            iteration(0)  # warm-up: AdamW moments are created at the first step
        else:
            prime_optimizers()
        if cuda:
            gc.collect()
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device)
        else:
            resident = (_proc_status_kib("VmRSS") - baseline_kib) * 1024
            out["hwm_reset"] = _reset_hwm()
        t0 = time.perf_counter()
        iteration(1)
        if cuda:
            torch.cuda.synchronize(device)
        out["seconds"] = time.perf_counter() - t0
        if cuda:
            out["peak"] = torch.cuda.max_memory_allocated(device)
            out["reserved"] = torch.cuda.max_memory_reserved(device)
        else:
            out["peak"] = (_proc_status_kib("VmHWM") - baseline_kib) * 1024
        out["resident"] = resident
    except torch.cuda.OutOfMemoryError:
        out["oom"] = True
    finally:
        del recipe, nets, opts, ema, ema_net, batches
        accelerator.free_memory()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return out


def make_accelerator(args):
    """A fresh Accelerator per point: make_ema registers the EMA with it for checkpointing, and a
    reused one would keep every earlier point's EMA alive."""
    from accelerate import Accelerator

    from davi.config import load_config

    return Accelerator(cpu=args.device == "cpu", mixed_precision=args.mixed_precision,
                       gradient_accumulation_steps=load_config(args.config).train.grad_accum)


def run_points(args, points: list[tuple[bool, int]], emit=None) -> list[dict]:
    """Measure (checkpointing, batch) points in this process, one after the other."""
    import diffusers.training_utils  # noqa: F401  (import everything before the CPU baseline is taken)
    from diffusers import DDPMScheduler, UNet2DModel  # noqa: F401

    import davi.training.recipes  # noqa: F401
    import davi.training.loop  # noqa: F401

    make_accelerator(args)  # the first one sets up the process state (and the CUDA context)
    gc.collect()
    baseline_kib = None if args.device == "cuda" else _proc_status_kib("VmRSS")
    prior = random_prior(random_unet(args.arch, args.seed))
    out = []
    for ckpt, bs in points:
        m = measure_point(args, make_accelerator(args), prior, bs, ckpt, baseline_kib)
        out.append(m)
        if emit is not None:
            emit(m)
    return out


def run_worker(args) -> None:
    """CPU: every point in this fresh process (started with a fixed mmap threshold); tagged JSON lines."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    points = [(ck == "on", int(b)) for ck, b in (p.split(":") for p in args.worker_points.split(","))]
    run_points(args, points, emit=lambda m: print(WORKER_TAG + json.dumps(m), flush=True))


def run_cpu_points(args, points: list[tuple[bool, int]]) -> list[dict]:
    """Run the points in a child process whose glibc returns freed tensors to the OS at once."""
    spec = ",".join(f"{'on' if ck else 'off'}:{b}" for ck, b in points)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--device", "cpu", "--arch", args.arch,
           "--config", str(args.config), "--mixed-precision", args.mixed_precision, "--seed", str(args.seed),
           "--cpu-warmup", args.cpu_warmup, "--worker-points", spec]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0",
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    out = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) as proc:
        for line in proc.stdout:
            if line.startswith(WORKER_TAG):
                m = json.loads(line[len(WORKER_TAG):])
                out.append(m)
                print(point_line(m), flush=True)
        err = proc.stderr.read()
    if proc.returncode != 0 or len(out) != len(points):
        raise SystemExit(f"the CPU measurement process failed (exit {proc.returncode}):\n{err[-3000:]}")
    return out


def point_line(m: dict) -> str:
    state = "out of memory" if m.get("oom") else f"peak {m['peak'] / GIB:.3f} GiB, {m['seconds']:.2f} s/iter"
    return f"batch {m['batch']}, gradient checkpointing {'on' if m['checkpointing'] else 'off'}: {state}"


def extrapolate(measured: list[dict], batch_sizes: list[int]) -> list[dict]:
    """Least-squares line through the measured (batch, peak) and (batch, seconds) points, for the batch
    sizes not run. The resident state does not grow with the batch: the largest measured point's is kept."""
    pts = sorted((m for m in measured if "peak" in m), key=lambda m: m["batch"])
    if len({m["batch"] for m in pts}) < 2:
        return []
    n = len(pts)
    xs = [m["batch"] for m in pts]
    mx = sum(xs) / n
    fits = {}
    for key in ("peak", "seconds"):
        ys = [m[key] for m in pts]
        my = sum(ys) / n
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        fits[key] = (slope, my - slope * mx)
    out = []
    for b in batch_sizes:
        if b in set(xs):
            continue
        row = {"batch": b, "checkpointing": pts[0]["checkpointing"], "extrapolated": True,
               "resident": pts[-1]["resident"]}
        for key, (slope, icpt) in fits.items():
            row[key] = icpt + slope * b
        out.append(row)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--arch", default="ffhq256", choices=ARCHS)
    p.add_argument("--config", default=str(ROOT / "configs" / "sr4_ffhq256.yaml"),
                   help="DAVI config whose objective is run (its data/prior paths are not used)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None,
                   help="batch sizes to run (default 1..8 on CUDA; 1 2 on CPU)")
    p.add_argument("--extrapolate-to", type=int, default=8,
                   help="CPU: extrapolate the measured points to every batch size up to this one (0: off)")
    p.add_argument("--checkpointing", choices=("both", "off", "on"), default="both",
                   help="gradient checkpointing (unet.enable_gradient_checkpointing) of mapper and score net")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None,
                   help="default fp16 on CUDA (the reference setting), no on CPU")
    p.add_argument("--cpu-warmup", choices=("prime", "iteration"), default="prime",
                   help="CPU: create AdamW's moments with one zero-gradient step (prime, fast) or run a full "
                        "warm-up iteration first (iteration); CUDA always runs a full warm-up iteration")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None,
                   help="results JSON, the .md written beside it (default benchmarks/results/memory_<device>.json)")
    p.add_argument("--worker-points", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch_sizes and min(args.batch_sizes) < 1:
        p.error("--batch-sizes must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)

    import torch

    from common import publish

    args.device = resolve_device(args.device).type
    cuda = args.device == "cuda"
    if args.mixed_precision is None:
        args.mixed_precision = "fp16" if cuda else "no"
    if not cuda and args.mixed_precision == "fp16":
        raise SystemExit("--mixed-precision fp16 needs CUDA (accelerate refuses fp16 on CPU); use no or bf16")
    if args.worker_points is not None:
        run_worker(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    batch_sizes = args.batch_sizes or (list(range(1, 9)) if cuda else [1, 2])
    variants = {"both": [False, True], "off": [False], "on": [True]}[args.checkpointing]
    points = [(ck, bs) for ck in variants for bs in batch_sizes]
    if cuda:
        measured = run_points(args, points, emit=lambda m: print(point_line(m), flush=True))
    else:
        measured = run_cpu_points(args, points)
    n_params = measured[0]["params"] if measured else count_parameters(args.arch)
    rows = []
    for ckpt in variants:
        mine = [m for m in measured if m["checkpointing"] == ckpt]
        extra = []
        if not cuda and args.extrapolate_to:
            extra = extrapolate(mine, list(range(1, args.extrapolate_to + 1)))
        for m in sorted(mine + extra, key=lambda m: m["batch"]):
            row = {"batch": m["batch"], "ckpt": "on" if ckpt else "off", "precision": args.mixed_precision}
            if m.get("oom"):
                row.update(how="OOM", peak="OOM")
            else:
                if cuda:
                    how = "measured: cuda.max_memory_allocated"
                elif m.get("extrapolated"):
                    how = "ESTIMATE: extrapolated (line through the CPU points)"
                else:
                    how = ("ESTIMATE: CPU RSS high-water" if m.get("hwm_reset", True)
                           else "ESTIMATE: CPU RSS high-water (lifetime, incl. warm-up)")
                row.update(how=how, resident=m["resident"] / GIB, peak=m["peak"] / GIB,
                           act=(m["peak"] - m["resident"]) / GIB, seconds=m["seconds"])
                if "reserved" in m:
                    row["reserved"] = m["reserved"] / GIB
            rows.append(row)

    static = 32 * n_params
    dev = torch.device(args.device)
    kind = ("MEASURED on the GPU" if cuda else
            "**ESTIMATE** from CPU resident-set sizes (not GPU memory; see benchmarks/memory.py)")
    head = (f"# Peak memory of one DAVI training iteration, 256x256, {device_description(dev)}\n\n"
            f"{kind}. Network `{args.arch}`: {n_params / 1e6:.1f}M parameters x 3 (teacher, mapper, score net), "
            f"random weights; objective of `{Path(args.config).name}`; mixed precision `{args.mixed_precision}`. "
            f"One full iteration: mapper fwd (graph kept), score-net DSM fwd+bwd+AdamW, teacher fwd + score fwd "
            f"(IKL), mapper bwd+AdamW, EMA. Exact static state between iterations (fp32 weights x3, AdamW moments "
            f"x2 for 2 nets, EMA): {static / GIB:.3f} GiB; +{4 * n_params / GIB:.3f} GiB of gradients while a "
            f"network is stepped. torch {torch.__version__}.")
    command = " ".join(["python", "benchmarks/memory.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"memory_{dev.type}.json"
    publish(out.with_suffix(".json"), {"command": command, "head": head, "device": device_description(dev),
                                       "arch": args.arch, "params": n_params, "rows": rows}, render_memory)


# ----------------------------------------------------------------------------------------------
# the tables: memory_*.json -> Markdown (the registered ones go into the documents: readme_tables.py)
# ----------------------------------------------------------------------------------------------
def render_memory(data: dict) -> str:
    """benchmarks/memory.py: peak memory of one training iteration per batch size and checkpointing;
    the allocator's reserved memory where it was measured (CUDA)."""
    reserved = [("reserved", "max reserved (GiB)", "{:.3f}")] if any("reserved" in r for r in data["rows"]) else []
    return markdown_table(data["rows"], [
        ("batch", "batch / GPU", "{}"), ("ckpt", "grad ckpt", "{}"), ("precision", "precision", "{}"),
        ("resident", "resident before (GiB)", "{:.3f}"), ("peak", "peak (GiB)", "{:.3f}"),
        ("act", "peak - resident (GiB)", "{:.3f}"), *reserved, ("seconds", "s / iteration", "{:.3f}"),
        ("how", "how", "{}")])


@table("memory_256_peak", "memory_cpu_ffhq256.json", inline=True)
def render_memory_256_peak(data: dict) -> str:
    """Batch-1 peak of benchmarks/memory.py at the prior's size, without and with gradient checkpointing."""
    peak = {r["ckpt"]: r["peak"] for r in data["rows"] if r["batch"] == 1}
    return f"{peak['off']:.1f} GiB, {peak['on']:.1f} GiB with gradient checkpointing"


@table("memory_gpu", "memory_gpu_fp16.json", "memory_gpu_bf16.json")
def render_memory_gpu(fp16: dict, bf16: dict) -> str:
    """Peak GPU memory of one DAVI training iteration (benchmarks/memory.py on CUDA), per batch size."""
    peak = {(run["rows"][0]["precision"], r["ckpt"], r["batch"]): r["peak"] for run in (fp16, bf16) for r in run["rows"]}
    rows = [{"batch": b, **{f"{p}_{c}": peak[p, c, b] for p in ("fp16", "bf16") for c in ("off", "on")}}
            for b in sorted({k[2] for k in peak})]
    return markdown_table(rows, [("batch", "batch / GPU", "{}"), ("fp16_off", "fp16 (GiB)", "{:.2f}"),
                                 ("fp16_on", "fp16 + grad ckpt (GiB)", "{:.2f}"), ("bf16_off", "bf16 (GiB)", "{:.2f}"),
                                 ("bf16_on", "bf16 + grad ckpt (GiB)", "{:.2f}")])


if __name__ == "__main__":
    sys.exit(run_cli(main))
