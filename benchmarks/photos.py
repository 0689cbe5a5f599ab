"""The photo comparison (issue 29): 256x256 held-out photographs, the photo prior against BM3D, classical
restorers, RED-Diff with the photo prior, and DAVI's photo mappers, side by side.

**Protocol.** The photo set's 17 test photos (davi/assets/photos, manifest split; no training sees them), each
brought to 256x256 by the library's whole-image rule (davi.data.datasets): the shorter side resized to 256
(Pillow bicubic), then the centre 256x256 crop (``square_photo``; the same rule for the train photos used for
tuning). Pixels in [-1, 1]. Operators at 256 px with sigma_y 0.05 on [-1, 1], their settings read from
configs/{sr4,deblur,box}_photos.yaml (the ONE place; the photo mappers train from the same files): SR x4 (4x4
average pooling, 64 -> 256), Gaussian deblurring (61 px, std 3 px: the paper's blur at 256 px), a centred
32x32 box. Test measurements use noise seed 0, tuning measurements noise seed 1 on ``--tune-photos`` train
photos spread over the sorted train list (``tune_indices``). Scores on [0, 1] pixels (x01 = (x + 1) / 2,
clipped): PSNR, and SSIM from torchmetrics (Gaussian window 11, std 1.5, data range 1); seconds per image are
CPU seconds of one thread (time.process_time), the load average recorded beside them.

Sections (each merges into benchmarks/results/photos.json, leaving the others as they are):

* ``--prior-denoise``: the prior's one-step denoiser against ``bm3d.bm3d_rgb`` at sigma 15 / 25 / 50 on
  [0, 255]. The noisy photo is z = x + s n on [-1, 1] with s = 2 sigma / 255 (the same z, as
  (z + 1) / 2 with std sigma / 255, goes to BM3D). The prior sees x_t = sqrt(ab_t) z at the t whose
  sigma_t = sqrt((1 - ab_t) / ab_t) is nearest s on a log scale (``matching_timestep``): then x_t =
  sqrt(ab_t) x + sqrt(ab_t) s n is the forward process at t up to the ratio s / sigma_t (recorded, within
  0.5%), and its denoiser is x0 = (x_t - sqrt(1 - ab_t) eps(x_t, t)) / sqrt(ab_t).
* ``--classical``: lift(y) (the operator's own lift), bicubic for SR (skimage.transform.resize, order 3),
  Wiener (skimage.restoration.wiener; its balance tuned on the train photos), unsupervised Wiener and
  BM3D deblurring (bm3d.bm3d_deblurring at sigma = sigma_y / 2 on [0, 1], ``unit_sigma``) for the blur (the
  three FFT deconvolvers see y reflect-padded by the kernel radius, the operator's own boundary rule, and
  are cropped back), biharmonic inpainting (skimage.restoration.inpaint_biharmonic) for the box.
* ``--red-diff``: RED-Diff-100 / 1000 with the photo prior (``--prior``), lr / lambda tuned per task on the
  train photos with davi.eval.tuning's widening grid (RED-Diff-``--grid-steps``), restorations in resumable
  chunks (davi.io.chunks) under ``--work-dir``; RED-Diff-1000 on the first ``--red-diff-1000-images`` test
  photos (about 400 s per image here). Seconds per image from ``--time-steps`` timed steps, scaled.
* ``--baselines``: the field's baselines through deepinv (davi.baselines) with the photo prior, tuned per task
  on the RED-Diff tuning photos with the digits' grid rule, each at its tuned settings and at deepinv's
  defaults (``<name>_default``); DiffPIR and DDRM by default, DPS with ``--baseline-methods dps`` (1000 steps
  with a backward pass each: on the first ``--dps-images`` test photos). Seconds per image from
  ``--baseline-time-steps`` timed steps, scaled.
* ``--mappers``: DAVI paired and sampler (davi.Restorer.from_pretrained(export).at_size(256)), the sampler's
  90% interval coverage of the true pixels from ``--cov-samples`` samples per photo. An export that does not
  exist prints "pending: no photo mapper at <path>" and the rows stay pending.

    python benchmarks/photos.py --prior-denoise --prior runs/prior_photos/checkpoint-2100   # prior vs BM3D
    python benchmarks/photos.py --classical                                                  # classical rows
    python benchmarks/photos.py --red-diff --prior davi/assets/priors/photos                 # hours; resumable
    python benchmarks/photos.py --baselines --prior davi/assets/priors/photos                # DiffPIR, DDRM; hours
    python benchmarks/photos.py --mappers                                                    # DAVI rows
    python benchmarks/photos.py --report                                                     # re-render the tables
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

# one thread for BLAS too (before numpy loads it): timings are one thread's, and the machine is shared
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
import numpy as np
import torch
from common import RESULTS, ROOT, command_line, log, publish, table

torch.set_num_threads(1)

SIZE = 256
TASKS = ("sr4", "deblur", "box")
CONFIGS = {task: ROOT / "configs" / f"{task}_photos.yaml" for task in TASKS}  # the operators' ONE place
DENOISE_SIGMAS = (15, 25, 50)  # on [0, 255]
TEST_NOISE_SEED, TRAIN_NOISE_SEED = 0, 1
DEFAULT_PRIOR = ROOT / "davi" / "assets" / "priors" / "photos"
PRIOR_RUN = ROOT / "runs" / "prior_photos"
MAPPERS = ROOT / "davi" / "assets" / "mappers"
OUT = RESULTS / "photos.json"
EXTRA = "pip install 'davi[photos]'"
# rows per task, in table order (issue 29's method keys)
FIELD = ("diffpir", "diffpir_default", "ddrm", "ddrm_default", "dps", "dps_default")  # --baselines (issue 31)
METHODS = {"sr4": ("lift", "bicubic", "red_diff_100", "red_diff_1000", *FIELD, "davi", "davi_sampler"),
           "deblur": ("lift", "wiener", "unsupervised_wiener", "bm3d", "red_diff_100", "red_diff_1000", *FIELD,
                      "davi", "davi_sampler"),
           "box": ("lift", "biharmonic", "red_diff_100", "red_diff_1000", *FIELD, "davi", "davi_sampler")}
WIENER_BALANCES = (0.003, 0.01, 0.03, 0.1)  # the starting grid, widened x3 while the best is on an edge


# ----------------------------------------------------------------------------------------------
# pure rules (tests/test_photos_benchmark.py)
# ----------------------------------------------------------------------------------------------
def unit_sigma(sigma_y: float) -> float:
    """A noise std on [-1, 1] pixels as a std on [0, 1] pixels (x01 = (x + 1) / 2): sigma_y / 2. The ONE
    conversion every classical restorer's noise level goes through."""
    return sigma_y / 2.0


def model_sigma(sigma255: float) -> float:
    """A noise std given on [0, 255] (the denoising convention) as a std on the model's [-1, 1]: 2 s / 255."""
    return 2.0 * sigma255 / 255.0


def matching_timestep(alphas_cumprod: torch.Tensor, sigma: float) -> int:
    """The t whose sigma_t = sqrt((1 - ab_t) / ab_t) is nearest ``sigma`` on a log scale: x_t = sqrt(ab_t) (x +
    sigma n) is then the forward process at t up to the ratio sigma / sigma_t."""
    ab = alphas_cumprod.double()
    sigma_t = ((1 - ab) / ab).sqrt()
    return int((sigma_t.log() - math.log(sigma)).abs().argmin())


def crop_box(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The whole-image rule: ((resized width, height), (left, top, right, bottom) of the centre crop). The shorter
    side becomes ``size`` (the longer one rounded, never below ``size``), then the centre ``size`` square is cut,
    half a pixel up-left when the margin is odd."""
    s = size / min(width, height)
    w, h = max(size, round(width * s)), max(size, round(height * s))
    left, top = (w - size) // 2, (h - size) // 2
    return (w, h), (left, top, left + size, top + size)


def square_photo(path: str | Path, size: int = SIZE) -> torch.Tensor:
    """(3, size, size) in [-1, 1]: ``crop_box``'s resize (Pillow bicubic) and centre crop of an RGB photo."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        (w, h), box = crop_box(*img.size, size)
        if img.size != (size, size):
            img = img.resize((w, h), Image.BICUBIC).crop(box)
        arr = np.array(img, dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def tune_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``n`` sorted train photos (the first and, for k > 1, the last)."""
    if not 1 <= k <= n:
        raise ValueError(f"tune photos: need 1 <= k <= {n}, got {k}")
    return [0] if k == 1 else sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clipped."""
    return ((x.double() + 1) / 2).clamp(0, 1)


def hwc(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) on [-1, 1] -> (H, W, 3) float64 on [0, 1], NOT clipped (a noisy measurement stays as measured)."""
    return ((x.double() + 1) / 2).permute(1, 2, 0).numpy()


def from_hwc(a: np.ndarray) -> torch.Tensor:
    """(H, W, 3) on [0, 1] -> (3, H, W) float32 on [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).permute(2, 0, 1).float() * 2 - 1


def scores(restored: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per-image PSNR and SSIM on [0, 1] (torchmetrics; SSIM's Gaussian window 11, std 1.5, data range 1)."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    a, b = to_unit(restored).float(), to_unit(truth).float()
    p = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    s = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none", kernel_size=11, sigma=1.5)
    return {"psnr": [round(float(v), 4) for v in p], "ssim": [round(float(v), 5) for v in s]}


def require_photos_extra():
    """(skimage, bm3d) or a one-line SystemExit naming the extra."""
    try:
        import bm3d
        import skimage
        import skimage.restoration
        import skimage.transform
    except ImportError as e:
        raise SystemExit(f"error: the classical photo restorers need scikit-image and bm3d ({e.name} is missing): "
                         f"{EXTRA}") from None
    if not hasattr(np, "trapz"):  # bm4d 4.2.5 (under bm3d 4.0.3's deblurring) calls np.trapz, gone in NumPy 2.4
        np.trapz = np.trapezoid
    return skimage, bm3d


# ----------------------------------------------------------------------------------------------
# data, operators, prior
# ----------------------------------------------------------------------------------------------
def photo_files(split: str) -> list[Path]:
    from davi.config import DataConfig
    from davi.data.patches import split_files

    return split_files(DataConfig(source="photos", resolution=SIZE, channels=3), split)


def photos(split: str, indices: list[int] | None = None) -> tuple[torch.Tensor, list[str]]:
    files = photo_files(split)
    files = files if indices is None else [files[i] for i in indices]
    return torch.stack([square_photo(f) for f in files]), [f.name for f in files]


def operator(task: str, size: int = SIZE):
    """The task's operator at ``size`` px from configs/<task>_photos.yaml."""
    from davi.config import load_config
    from davi.operators import build_operator

    cfg = load_config(CONFIGS[task])
    return build_operator(cfg.operator, size, cfg.data.channels)


def measure(op, x: torch.Tensor, seed: int) -> torch.Tensor:
    return op.measure(x, generator=torch.Generator().manual_seed(seed))


def newest_checkpoint(run: Path = PRIOR_RUN) -> Path | None:
    found = [p for p in run.glob("checkpoint-*") if (p / "ema").is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def default_prior() -> Path:
    if DEFAULT_PRIOR.is_dir():
        return DEFAULT_PRIOR
    ckpt = newest_checkpoint()
    if ckpt is None:
        raise SystemExit(f"error: no photo prior at {DEFAULT_PRIOR} and no checkpoint under {PRIOR_RUN}: pass --prior")
    return ckpt


def load_prior(path: str | Path):
    """(DiffusionPrior, label). ``path``: a prior folder (diffusers, as exported) or a training checkpoint
    folder (checkpoint-N: its EMA UNet in ema/, its schedule from the run's config.yaml, its step)."""
    from davi.builders import prior_from_config  # noqa: F401  (the same import path the trainer uses)
    from davi.config import load_config
    from davi.models.prior import (
        DiffusionPrior,
        build_scheduler,
        load_unet_and_scheduler,
    )

    path = Path(path)
    if (path / "trainer_state.json").is_file():
        cfg = load_config(path / "config.yaml")
        if cfg.job != "prior":
            raise SystemExit(f"error: {path}: a '{cfg.job}' checkpoint, not a prior's")
        unet, _, _, digest = load_unet_and_scheduler(str(path / "ema"))
        step = int(json.loads((path / "trainer_state.json").read_text())["step"])
        prior = DiffusionPrior(unet, build_scheduler(cfg.prior), str(path), digest)
        return prior, {"prior": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), "step": step,
                       "weights": "EMA", "digest": digest}
    prior = DiffusionPrior.from_pretrained(str(path))
    record = path / "training.json"
    step = json.loads(record.read_text()).get("step") if record.is_file() else None
    return prior, {"prior": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), "step": step,
                   "weights": "exported", "digest": prior.digest}


# ----------------------------------------------------------------------------------------------
# prior vs BM3D
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def one_step_denoise(prior, z: torch.Tensor, sigma: float) -> tuple[torch.Tensor, int]:
    """(x0 on [-1, 1], t): the prior's one-step denoiser of z = x + sigma n at the matching t."""
    t = matching_timestep(prior.schedule.alphas_cumprod, sigma)
    ab = float(prior.schedule.alphas_cumprod[t])
    x_t = math.sqrt(ab) * z
    eps = prior.eps(x_t, torch.full((z.shape[0],), t, dtype=torch.long))
    return ((x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1), t


def cached_json(path: Path, key: dict, compute):
    from davi.io.atomic import write_json

    if path.is_file() and (c := json.loads(path.read_text())).get("key") == key:
        return c["value"]
    value = compute()
    write_json(path, {"key": key, "value": value})
    return value


def prior_denoise(args) -> dict:
    from davi.io.chunks import digest

    _, bm3d = require_photos_extra()
    prior, label = load_prior(args.prior or default_prior())
    x, names = held_out_photos(args)
    n = len(x)
    work = Path(args.work_dir) / "denoise"
    out = {}
    for s255 in args.sigmas:
        s = model_sigma(s255)
        g = torch.Generator().manual_seed(1000 + s255)
        z = x + s * torch.randn(x.shape, generator=g)
        rows = {"prior": [], "bm3d": []}
        times = {"prior": [], "bm3d": []}
        for i in range(n):
            t0 = time.process_time()
            x0, t = one_step_denoise(prior, z[i: i + 1], s)
            times["prior"].append(time.process_time() - t0)
            rows["prior"].append(scores(x0, x[i: i + 1])["psnr"][0])

            def run_bm3d(i=i, z=z, s255=s255):
                t0 = time.process_time()
                d = bm3d.bm3d_rgb(hwc(z[i]), s255 / 255.0)  # std on [0, 1]: (z + 1) / 2 has std s / 2 = s255 / 255
                return {"psnr": scores(from_hwc(np.clip(d, 0, 1))[None], x[i: i + 1])["psnr"][0],
                        "seconds": time.process_time() - t0}

            b = cached_json(work / f"bm3d_s{s255}_{names[i]}.json", {"z": digest(z[i]), "version": 1}, run_bm3d)
            rows["bm3d"].append(b["psnr"])
            times["bm3d"].append(b["seconds"])
            log(f"denoise sigma {s255} {names[i]}: prior {rows['prior'][-1]:.2f} dB, BM3D {b['psnr']:.2f} dB")
        ab = float(prior.schedule.alphas_cumprod[t])
        out[str(s255)] = {"prior": round(float(np.mean(rows["prior"])), 3), "bm3d": round(float(np.mean(rows["bm3d"])), 3),
                          "images": n, "t": t, "sigma_t_over_sigma": round(math.sqrt((1 - ab) / ab) / s, 5),
                          "s_per_image": {k: round(float(np.mean(v)), 3) for k, v in times.items()},
                          "per_image": {k: dict(zip(names, v)) for k, v in rows.items()}}
        log(f"denoise sigma {s255}: prior {out[str(s255)]['prior']:.2f} dB (t {t}), BM3D {out[str(s255)]['bm3d']:.2f} dB")
    return {"denoise": out, **label, "load_average": round(os.getloadavg()[1], 1),
            "bm3d_version": getattr(bm3d, "__version__", "4.0.3")}


# ----------------------------------------------------------------------------------------------
# classical restorers
# ----------------------------------------------------------------------------------------------
def padded(deconvolve, y: np.ndarray, pad: int) -> np.ndarray:
    """``deconvolve`` on y reflect-padded by ``pad`` px (the operator's boundary rule), cropped back."""
    yp = np.pad(y, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return deconvolve(yp)[pad:-pad, pad:-pad]


def classical_restore(task: str, name: str, op, y: torch.Tensor, settings: dict | None = None, seed: int = 0):
    """One measurement y (C, h, w) on [-1, 1] restored by a classical method; (3, 256, 256) on [-1, 1]."""
    _, bm3d = require_photos_extra()
    from skimage import restoration, transform

    if name == "lift":
        return op.lift(y[None])[0].clamp(-1, 1)
    y01 = hwc(y)
    if name == "bicubic":
        out = transform.resize(y01, (SIZE, SIZE, 3), order=3, mode="reflect", anti_aliasing=False)
    elif name == "biharmonic":
        hole = op.mask[0, 0].numpy() == 0
        out = restoration.inpaint_biharmonic(y01, hole, channel_axis=-1)
    elif task == "deblur":
        psf, pad = op.kernel.numpy(), op.pads[0]
        if name == "wiener":
            deconv = lambda a: np.stack([restoration.wiener(a[..., c], psf, settings["balance"], clip=False)
                                         for c in range(3)], -1)
        elif name == "unsupervised_wiener":
            deconv = lambda a: np.stack([restoration.unsupervised_wiener(a[..., c], psf, clip=False,
                                                                         rng=seed * 10 + c)[0] for c in range(3)], -1)
        elif name == "bm3d":
            # per channel: bm3d 4.0.3's deblurring fails on an (H, W, 3) stack (its second stage's shape check)
            deconv = lambda a: np.stack([bm3d.bm3d_deblurring(a[..., c], unit_sigma(op.sigma_y), psf)
                                         for c in range(3)], -1)
        else:
            raise ValueError(name)
        out = padded(deconv, y01, pad)
    else:
        raise ValueError(f"{task}: no classical method {name!r}")
    return from_hwc(np.clip(out, 0, 1))


CLASSICAL = {"sr4": ("lift", "bicubic"), "deblur": ("lift", "wiener", "unsupervised_wiener", "bm3d"),
             "box": ("lift", "biharmonic")}


def run_classical(task, name, op, y, x, settings=None, work: Path | None = None) -> dict:
    """Scores and CPU seconds of ``name`` restoring every y; with ``work``, each photo's restoration and seconds
    are cached there (keyed by the measurement's digest and the settings): a killed run resumes."""
    from davi.io.chunks import digest, load_chunk, save_chunk

    per, secs = [], []
    for i in range(len(y)):
        key = {"v": 1, "y": digest(y[i]), "settings": settings or {}}
        path = None if work is None else work / task / name / f"{i:02d}.safetensors"
        cached = None if path is None else load_chunk(path, key)
        if cached is not None:
            per.append(cached[0])
            secs.append(json.loads(path.with_suffix(".json").read_text())["seconds"])
            continue
        t0 = time.process_time()
        per.append(classical_restore(task, name, op, y[i], settings, seed=i))
        secs.append(time.process_time() - t0)
        if path is not None:
            from davi.io.atomic import write_json

            save_chunk(path, per[-1][None], key)
            write_json(path.with_suffix(".json"), {"seconds": secs[-1]})
            log(f"{task} {name}: photo {i} restored ({secs[-1]:.1f} CPU s)")
    sc = scores(torch.stack(per), x)
    return {"psnr": round(float(np.mean(sc["psnr"])), 3), "ssim": round(float(np.mean(sc["ssim"])), 4),
            "s_per_image": round(float(np.mean(secs)), 3), "cov90": None, "images": len(y),
            **({"settings": settings} if settings else {}), "per_image_psnr": sc["psnr"]}


def tune_wiener(op, args) -> dict:
    """Wiener's balance of best mean PSNR on the tuning train photos (noise seed 1), davi.eval.grid_search's
    widening rule in one dimension (davi.eval.tuning.bounded_search)."""
    from davi.eval.tuning import bounded_search

    files = photo_files("train")
    xt, names = photos("train", tune_indices(len(files), args.tune_photos))
    yt = measure(op, xt, TRAIN_NOISE_SEED)
    found = bounded_search(lambda p: {"psnr": float(np.mean(scores(torch.stack([classical_restore(
        "deblur", "wiener", op, yt[i], p) for i in range(len(yt))]), xt)["psnr"]))},
        {"balance": WIENER_BALANCES}, bounds={"balance": (0.0, math.inf)},
        on_widen=lambda axes: log(f"wiener: best at an edge, widened to {axes}"))
    log(f"wiener: balance {found.choice['balance']} (train PSNR {max(r['psnr'] for r in found.rows()):.2f} dB)")
    return {"balance": found.choice["balance"], "interior": found.interior, "train_photos": names,
            "grid": [{k: round(v, 4) for k, v in r.items()} for r in found.rows()]}


def held_out_photos(args):
    """(images, names) of the first ``--images`` test photos (all by default)."""
    x, names = photos("test")
    n = args.images or len(x)
    return x[:n], names[:n]


def classical(args) -> dict:
    require_photos_extra()
    x, _ = held_out_photos(args)
    n = len(x)
    out, tuning = {}, {}
    for task in args.tasks:
        op = operator(task)
        y = measure(op, x, TEST_NOISE_SEED)
        out[task] = {}
        for name in CLASSICAL[task]:
            if args.classical_methods and name not in args.classical_methods:
                continue
            settings = None
            if name == "wiener":
                tuning["wiener"] = tune_wiener(op, args)
                settings = {"balance": tuning["wiener"]["balance"]}
            out[task][name] = run_classical(task, name, op, y, x, settings, Path(args.work_dir) / "classical")
            r = out[task][name]
            log(f"{task} {name}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}, {r['s_per_image']:.2f} s / image")
    return {"tasks": out, "tuning": tuning, "images": n, "load_average": round(os.getloadavg()[1], 1)}


# ----------------------------------------------------------------------------------------------
# RED-Diff with the photo prior
# ----------------------------------------------------------------------------------------------
def red_diff(args) -> dict:
    from davi.eval.tuning import (
        GRID_LAMS,
        GRID_LRS,
        search_summary,
        widen_until_interior,
    )
    from davi.io.chunks import digest, run_in_chunks
    from davi.solvers.methods import RedDiffMethod

    prior, label = load_prior(args.prior or default_prior())
    x, _ = photos("test")
    files = photo_files("train")
    xt, tnames = photos("train", tune_indices(len(files), args.red_diff_tune_photos))
    work = Path(args.work_dir) / "red_diff"
    pkey = label["digest"] or label["prior"]
    out = {}
    for task in args.tasks:
        op = operator(task)
        y, yt = measure(op, x, TEST_NOISE_SEED), measure(op, xt, TRAIN_NOISE_SEED)

        def grid_point(lr, lam, task=task, op=op, yt=yt):
            key = {"v": 1, "prior": pkey, "y": digest(yt), "steps": args.grid_steps, "lr": lr, "lam": lam}

            def compute():
                t0 = time.time()
                restored = RedDiffMethod(prior, op, steps=args.grid_steps, lr=lr, lam=lam)(yt, list(range(len(yt))))[0]
                sc = scores(restored, xt)
                log(f"red-diff grid {task} lr {lr:g} lam {lam:g}: {np.mean(sc['psnr']):.2f} dB ({time.time() - t0:.0f} s)")
                return {"psnr": float(np.mean(sc["psnr"])), "ssim": float(np.mean(sc["ssim"]))}

            return cached_json(work / task / "grid" / f"lr{lr:g}_lam{lam:g}.json", key, compute)

        found = widen_until_interior(grid_point, GRID_LRS, GRID_LAMS, max_widenings=args.max_widenings)
        tuning = search_summary(found, train_photos=tnames, steps=args.grid_steps)
        lr, lam = tuning["lr"], tuning["lam"]
        out[task] = {"tuning": tuning}
        for steps in args.red_diff_steps:
            m = min(len(y), args.red_diff_1000_images if steps >= 1000 else (args.images or len(y)))
            method = RedDiffMethod(prior, op, steps=steps, lr=lr, lam=lam)
            key = lambda a, b, steps=steps, y=y, lr=lr, lam=lam: {
                "v": 1, "prior": pkey, "y": digest(y[a:b]), "steps": steps, "lr": lr, "lam": lam, "seeds": [a, b]}
            restored = run_in_chunks(work / task / f"red_diff_{steps}", key, m, args.chunk,
                                     lambda a, b, method=method, y=y: method(y[a:b], list(range(a, b)))[0].cpu(),
                                     on_chunk=lambda a, b, new, steps=steps, task=task: log(
                                         f"{task} red_diff_{steps}: photos {a}-{b} {'done' if new else 'cached'}"))
            timing = RedDiffMethod(prior, op, steps=args.time_steps, lr=lr, lam=lam)
            t0 = time.process_time()
            timing(y[:1], [0])
            secs = (time.process_time() - t0) / args.time_steps * steps
            sc = scores(restored, x[:m])
            out[task][f"red_diff_{steps}"] = {
                "psnr": round(float(np.mean(sc["psnr"])), 3), "ssim": round(float(np.mean(sc["ssim"])), 4),
                "s_per_image": round(secs, 2), "cov90": None, "images": m, "settings": {"lr": lr, "lam": lam},
                "per_image_psnr": sc["psnr"]}
    return {"tasks": out, **label}


# ----------------------------------------------------------------------------------------------
# the field's baselines with the photo prior (issue 31's photo table)
# ----------------------------------------------------------------------------------------------
def tune_baseline(name: str, prior, op, train: tuple, args, work: Path) -> dict:
    """``name``'s settings of best mean PSNR on the tuning train photos: the digits' rule (davi.eval.tuning.
    bounded_search over davi.baselines.methods.TUNING_GRIDS), each grid point one run (seed 1), cached."""
    from davi.baselines import baseline_method
    from davi.baselines.methods import TUNING_BOUNDS, TUNING_GRIDS
    from davi.eval.tuning import bounded_search

    xt, yt = train

    def grid_point(params):
        method = baseline_method(name, prior, op, **params)

        def compute():
            t0 = time.time()
            sc = scores(method.sample(yt, 1), xt)
            log(f"{name} grid {op.name} {params}: {np.mean(sc['psnr']):.2f} dB ({time.time() - t0:.0f} s)")
            return {"psnr": float(np.mean(sc["psnr"])), "ssim": float(np.mean(sc["ssim"]))}

        return cached_json(work / "grid" / f"{method.slug}.json", method.cache_key(yt, 1), compute)

    found = bounded_search(grid_point, TUNING_GRIDS[name], TUNING_BOUNDS, max_widenings=args.max_widenings)
    return {"choice": found.choice, "interior": found.interior, "at_bound": list(found.at_bound),
            "widenings": found.widenings, "grid": found.rows()}


def baseline_seconds(name: str, prior, op, y, steps: int) -> float:
    """CPU seconds per step (network evaluation) of ``name``, from a run of ``steps`` steps on one photo after
    one warm-up run: a step's cost does not depend on the tuned settings."""
    from davi.baselines import baseline_method

    length = {"dps": "num_steps", "diffpir": "max_iter", "ddrm": "steps"}[name]
    timed = baseline_method(name, prior, op, **{length: steps})
    timed.sample(y[:1], 1)
    t0 = time.process_time()
    timed.sample(y[:1], 1)
    return (time.process_time() - t0) / steps


def baseline_rows(name: str, prior, op, x, y, tuning: dict, args, work: Path) -> dict:
    """``name`` tuned and at deepinv's defaults (``<name>_default``) on the test photos (DPS on the first
    ``--dps-images``), one photo per cached chunk, seeded by its index + 1."""
    from davi.baselines import baseline_method
    from davi.io.chunks import run_in_chunks

    n = min(len(y), args.dps_images) if name == "dps" else len(y)
    per_step = baseline_seconds(name, prior, op, y, args.baseline_time_steps)
    rows = {}
    for key, params in ((name, tuning["choice"]), (f"{name}_default", {})):
        method = baseline_method(name, prior, op, **params)
        restored = run_in_chunks(
            work / method.slug, lambda a, b, m=method: m.cache_key(y[a:b], a + 1), n, 1,  # defaults' slug: shared
            lambda a, b, m=method: m.sample(y[a:b], a + 1).cpu(),
            on_chunk=lambda a, b, new, key=key: log(f"{op.name} {key}: photo {a} {'done' if new else 'cached'}"))
        sc = scores(restored, x[:n])
        rows[key] = {"psnr": round(float(np.mean(sc["psnr"])), 3), "ssim": round(float(np.mean(sc["ssim"])), 4),
                     "s_per_image": round(per_step * method.nfe_per_sample, 2), "cov90": None, "images": n, "nfe": method.nfe_per_sample,
                     "settings": params or "deepinv defaults", "per_image_psnr": sc["psnr"]}
    return rows


def field_baselines(args) -> dict:
    """DiffPIR / DDRM (and DPS with ``--baseline-methods dps``: ~20 CPU minutes per photo here) through
    davi.baselines with the photo prior on the 256x256 test photos, tuned per task on ``--red-diff-tune-photos``
    train photos, restorations cached per photo under ``--work-dir``/baselines (resumable)."""
    from davi.baselines import BaselineError, require_deepinv

    try:
        require_deepinv()
    except BaselineError as e:
        raise SystemExit(f"error: {e}") from None
    from davi.baselines import BaselineUnsupported  # (lazy: needs deepinv)

    prior, label = load_prior(args.prior or default_prior())
    x, _ = held_out_photos(args)
    xt, tnames = photos("train", tune_indices(len(photo_files("train")), args.red_diff_tune_photos))
    out = {}
    for task in args.tasks:
        op = operator(task)
        y, train = measure(op, x, TEST_NOISE_SEED), (xt, measure(op, xt, TRAIN_NOISE_SEED))
        out[task] = {}
        for name in args.baseline_methods:
            work = Path(args.work_dir) / "baselines" / task / name
            try:
                tuning = tune_baseline(name, prior, op, train, args, work)
            except BaselineUnsupported as e:
                log(f"{task} {name}: {e}")
                continue
            out[task].update(baseline_rows(name, prior, op, x, y, tuning, args, work))
            out[task][f"tuning:{name}"] = {**tuning, "train_photos": tnames}
    return {"tasks": out, **label}


# ----------------------------------------------------------------------------------------------
# DAVI's photo mappers
# ----------------------------------------------------------------------------------------------
def mapper_paths(task: str, folder: Path) -> dict[str, Path]:
    return {"davi": folder / f"{task}_photos", "davi_sampler": folder / f"{task}_photos_sampler"}


def mappers(args) -> dict:
    import davi
    from davi.analytic import interval_coverage

    x, _ = held_out_photos(args)
    n = len(x)
    out, pending = {}, {}
    for task in args.tasks:
        op = operator(task)
        y = measure(op, x, TEST_NOISE_SEED)
        out[task] = {}
        for name, path in mapper_paths(task, Path(args.mapper_dir)).items():
            if not (path / "card.json").is_file():
                log(f"pending: no photo mapper at {path}")
                pending[f"{task}/{name}"] = f"no photo mapper at {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
                continue
            restorer = davi.Restorer.from_pretrained(path).at_size(SIZE)
            theirs = {k: v for k, v in restorer.operator.params().items() if k != "resolution"}
            ours = {k: v for k, v in op.params().items() if k != "resolution"}
            if theirs != ours:
                raise SystemExit(f"error: {path}: trained for {theirs}, the benchmark's operator is {ours} "
                                 f"({CONFIGS[task].relative_to(ROOT)})")
            t0 = time.process_time()
            one = restorer(y, samples=1, seed=0, progress=False, batch_size=1).samples[0]
            secs = (time.process_time() - t0) / n
            sc = scores(one, x)
            row = {"psnr": round(float(np.mean(sc["psnr"])), 3), "ssim": round(float(np.mean(sc["ssim"])), 4),
                   "s_per_image": round(secs, 3), "cov90": None, "images": n, "export": str(path.relative_to(ROOT)),
                   "per_image_psnr": sc["psnr"]}
            if name == "davi_sampler":
                draws = restorer(y, samples=args.cov_samples, seed=1, progress=False, batch_size=1).samples
                cov = interval_coverage(to_unit(draws.clamp(-1, 1)), to_unit(x), levels=(0.9,))
                row["cov90"] = round(float(cov[0.9]), 4)
                row["cov_samples"] = args.cov_samples
            out[task][name] = row
            log(f"{task} {name}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, {secs:.3f} s / image"
                + (f", cov90 {row['cov90']:.3f}" if row["cov90"] is not None else ""))
    return {"tasks": out, "pending": pending}


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
def _fmt(v, fmt: str) -> str:
    return "—" if v is None else fmt.format(v)


@table("photos_prior", "photos.json")
def render_photos_prior(data: dict) -> str:
    prior = data.get("prior")
    if not prior or "denoise" not in prior:
        return "Prior vs BM3D: pending (python benchmarks/photos.py --prior-denoise)."
    step = f"step {prior['step']}" if prior.get("step") is not None else "step unknown"
    head = (f"Prior: `{prior['prior']}` ({prior.get('weights', '')} weights, {step}); "
            f"test photos at {data.get('size', SIZE)}x{data.get('size', SIZE)} (the first N of the 17), PSNR on [0, 1].")
    lines = [head, "",
             ("| sigma (/255) | photos | prior, one step (dB) | BM3D (dB) | prior - BM3D (dB) | t (sigma_t / sigma) "
             "| s / image, prior / BM3D |"), "|---|---|---|---|---|---|---|"]
    for s, r in prior["denoise"].items():
        sec = r.get("s_per_image", {})
        lines.append(f"| {s} | {r.get('images', prior.get('images', '?'))} | {r['prior']:.2f} | {r['bm3d']:.2f} | {r['prior'] - r['bm3d']:+.2f} | "
                     f"{r.get('t', '—')} ({r.get('sigma_t_over_sigma', float('nan')):.4f}) | "
                     f"{_fmt(sec.get('prior'), '{:.2f}')} / {_fmt(sec.get('bm3d'), '{:.1f}')} |")
    return "\n".join(lines)


NAMES = {"lift": "lift(y)", "bicubic": "bicubic", "wiener": "Wiener (tuned balance)",
         "unsupervised_wiener": "unsupervised Wiener", "bm3d": "BM3D deblurring", "biharmonic": "biharmonic",
         "red_diff_100": "RED-Diff-100", "red_diff_1000": "RED-Diff-1000", "diffpir": "DiffPIR (tuned)",
         "diffpir_default": "DiffPIR (deepinv defaults)", "ddrm": "DDRM (tuned)", "ddrm_default": "DDRM (deepinv "
         "defaults)", "dps": "DPS (tuned)", "dps_default": "DPS (deepinv defaults)", "davi": "DAVI paired (1 step)",
         "davi_sampler": "DAVI sampler (1 step)"}


@table("photos_tasks", "photos.json")
def render_photos_tasks(data: dict) -> str:
    lines = ["| task | method | PSNR (dB) | SSIM | s / image | cov90 | photos |", "|---|---|---|---|---|---|---|"]
    for task in TASKS:
        rows = data.get(task, {})
        for m in METHODS[task]:
            r = rows.get(m)
            if r is None:
                lines.append(f"| {task} | {NAMES[m]} | pending | | | | |")
                continue
            lines.append(f"| {task} | {NAMES[m]} | {r['psnr']:.2f} | {r['ssim']:.3f} | {_fmt(r.get('s_per_image'), '{:.3g}')} | "
                         f"{_fmt(r.get('cov90'), '{:.3f}')} | {r.get('images', data.get('images'))} |")
    return "\n".join(lines)


def render_photos(data: dict) -> str:
    return render_photos_prior(data) + "\n\n" + render_photos_tasks(data)


def merge(args, sections: dict) -> dict:
    """The results file with this run's sections merged in (others left as they were)."""
    path = Path(args.out)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update({"images": len(photo_files("test")), "size": SIZE})
    commands = data.setdefault("commands", {})
    if "prior" in sections:
        new, old = sections["prior"], data.get("prior", {})
        same = all(old.get(k) == new[k] for k in ("prior", "step", "digest"))
        data["prior"] = {**new, "denoise": {**(old.get("denoise", {}) if same else {}), **new["denoise"]}}
        data["prior"]["denoise"] = dict(sorted(data["prior"]["denoise"].items(), key=lambda kv: int(kv[0])))
        commands["prior"] = command_line("photos.py")
    for section in ("classical", "red_diff", "baselines", "mappers"):
        if section not in sections:
            continue
        commands[section] = command_line("photos.py")
        for task, rows in sections[section]["tasks"].items():
            data.setdefault(task, {})
            for m, r in rows.items():
                if m == "tuning" or m.startswith("tuning:"):
                    data.setdefault("tuning", {}).setdefault(task, {})[m.partition(":")[2] or "red_diff"] = r
                else:
                    data[task][m] = r
        if section == "classical":
            data.setdefault("tuning", {}).setdefault("deblur", {}).update(sections[section]["tuning"])
            data["classical_load_average"] = sections[section]["load_average"]
        if section in ("red_diff", "baselines"):
            data[f"{section}_prior"] = {k: sections[section][k] for k in ("prior", "step", "weights", "digest")}
        if section == "mappers":
            data["pending"] = sections[section]["pending"]
    data["command"] = "; ".join(commands.values()) or command_line("photos.py")
    data["head"] = ("Issue 29's photo comparison (benchmarks/photos.py, docs/photos.md): the 17 held-out test photos "
                    "at 256x256 (shorter side resized to 256, centre crop), operators from configs/*_photos.yaml at "
                    "sigma_y 0.05 on [-1, 1]; PSNR / SSIM on [0, 1]; CPU seconds per image of one thread.")
    return data


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior-denoise", action="store_true", help="the prior's one-step denoiser vs BM3D")
    p.add_argument("--classical", action="store_true", help="lift / bicubic / Wiener / BM3D / biharmonic")
    p.add_argument("--red-diff", action="store_true", help="RED-Diff-100 / 1000 with the photo prior (hours)")
    p.add_argument("--baselines", action="store_true", help="DiffPIR / DDRM (/ DPS) with the photo prior (hours)")
    p.add_argument("--mappers", action="store_true", help="DAVI paired and sampler from the photo exports")
    p.add_argument("--report", action="store_true", help="re-render the tables from the results file")
    p.add_argument("--prior", default=None, help="a prior folder or a training checkpoint (runs/prior_photos/"
                   "checkpoint-N, its EMA weights); default: davi/assets/priors/photos, else the newest checkpoint")
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    p.add_argument("--sigmas", type=int, nargs="*", default=list(DENOISE_SIGMAS), help="denoising sigmas on [0, 255]")
    p.add_argument("--classical-methods", nargs="*", default=[],
                   choices=sorted({m for ms in CLASSICAL.values() for m in ms}), help="only these (default: all)")
    p.add_argument("--images", type=int, default=0, help="only the first N test photos (0: all 17)")
    p.add_argument("--tune-photos", type=int, default=8, help="train photos tuning the classical restorers")
    p.add_argument("--red-diff-tune-photos", type=int, default=4, help="train photos tuning RED-Diff")
    p.add_argument("--grid-steps", type=int, default=100, help="RED-Diff steps of a tuning grid point")
    p.add_argument("--max-widenings", type=int, default=4)
    p.add_argument("--red-diff-steps", type=int, nargs="*", default=[100, 1000])
    p.add_argument("--red-diff-1000-images", type=int, default=4, help="RED-Diff-1000 on the first N test photos")
    p.add_argument("--time-steps", type=int, default=5, help="RED-Diff steps timed, scaled to the full length")
    p.add_argument("--chunk", type=int, default=1, help="photos per cached RED-Diff chunk")
    p.add_argument("--baseline-methods", nargs="*", default=["diffpir", "ddrm"], choices=["diffpir", "ddrm", "dps"],
                   help="the field's baselines (DPS: about 20 CPU minutes per photo and grid point photo)")
    p.add_argument("--dps-images", type=int, default=4, help="DPS on the first N test photos")
    p.add_argument("--baseline-time-steps", type=int, default=5, help="baseline steps timed, scaled to the length")
    p.add_argument("--mapper-dir", default=str(MAPPERS), help="where <task>_photos[_sampler] exports are")
    p.add_argument("--cov-samples", type=int, default=16, help="sampler draws per photo for the 90%% coverage")
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "photos"))
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    if not (args.prior_denoise or args.classical or args.red_diff or args.baselines or args.mappers or args.report):
        p.error("name a section: --prior-denoise, --classical, --red-diff, --baselines, --mappers or --report")
    sections = {}
    if args.prior_denoise:
        sections["prior"] = prior_denoise(args)
    if args.classical:
        sections["classical"] = classical(args)
    if args.red_diff:
        sections["red_diff"] = red_diff(args)
    if args.baselines:
        sections["baselines"] = field_baselines(args)
    if args.mappers:
        sections["mappers"] = mappers(args)
    publish(args.out, merge(args, sections), render_photos)


if __name__ == "__main__":
    main()
