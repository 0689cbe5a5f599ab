"""The analytic benchmark problems: 8x8 priors fitted to digits, linear tasks, and training a mapper on them.

The problems of the exact-posterior benchmarks (benchmarks/posterior.py, baselines.py, family.py):

* the priors (:func:`make_prior`, names in ``PRIORS``): ``gauss``, a rank-``RANK`` Gaussian fitted to
  ``RES`` x ``RES`` digits of every class, and ``gmm``, a Gaussian mixture with one component per class
  in ``GMM_CLASSES`` (:mod:`davi.analytic.priors`);
* the linear tasks at sigma_y = ``SIGMA_Y`` (``TASKS``: operator overrides; :func:`make_operator`) and
  :func:`problem`: held-out measurements of one (prior, task) with their exact posteriors
  (:mod:`davi.analytic.posterior`);
* the mapper: a small fresh UNet (``NET``: the analytic prior has no network to copy), its configuration
  (:func:`davi_config` with the objectives ``PAIRED``, ``REGRESSION`` or :func:`sampler_objective`) and
  :func:`train_mapper`, which trains it against the analytic prior on the prior's own samples;
* the estimators: :func:`figures` (:func:`~davi.analytic.check.posterior_figures` plus the coverage of
  exact draws) and :func:`truth_draws`, the ``NUM_TRUTHS`` exact draws per y every method is measured
  against (from a generator seeded with ``TRUTH_SEED``).

The configuration, operator and training code is imported when called, so importing this module
pulls in neither the training loop nor the operators.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from davi.analytic.check import posterior_figures
from davi.analytic.distances import interval_coverage
from davi.analytic.posterior import exact_posteriors, held_out_measurements
from davi.analytic.priors import digit_images, fit_gaussian, fit_gmm

__all__ = [
    "DEFAULT_TASKS",
    "GAUSS_CLASSES",
    "GMM_CLASSES",
    "NET",
    "NUM_TRUTHS",
    "PAIRED",
    "PRIORS",
    "RANK",
    "REGRESSION",
    "RES",
    "SIGMA_Y",
    "TASKS",
    "TRUTH_SEED",
    "davi_config",
    "figures",
    "make_operator",
    "make_prior",
    "operator_config",
    "problem",
    "sampler_objective",
    "train_mapper",
    "truth_draws",
]

RES = 8
SIGMA_Y = 0.05
# task -> operator overrides (8x8 images)
TASKS = {
    "deblur": ["operator.name=deblur", "operator.kernel_size=3", "operator.kernel_std=1.0"],
    "sr2": ["operator.name=sr", "operator.scale=2"],
    "sr4": ["operator.name=sr", "operator.scale=4"],
    "box": ["operator.name=box_inpaint", "operator.box_size=4"],
    "random": ["operator.name=random_inpaint", "operator.drop_fraction=0.5", "operator.mask_seed=0"],
    "denoise": ["operator.name=denoise"],
}
DEFAULT_TASKS = ["deblur", "sr2", "sr4", "box", "random"]
PRIORS = ("gauss", "gmm")
GAUSS_CLASSES = tuple(range(10))
GMM_CLASSES = (0, 1, 7)
RANK = 8
NUM_TRUTHS = 32  # exact posterior draws per y, as the truths of the coverage check

# The mapper: a small fresh UNet (the analytic prior has no network to copy).
NET = ["prior.block_out_channels=[16,32]", "prior.attention_levels=[]", "prior.norm_num_groups=8",
       "prior.layers_per_block=1"]
# The paired objective at the paper's box settings (DAVI, Lee et al. 2024).
PAIRED = ["davi.objective=paired", "davi.t_ikl=1000", "davi.lambda_con=0.5", "davi.lambda_reg=1.0"]
# Regression only: its optimum is the posterior mean E[x | y] exactly (a warm start for the sampler's mean).
REGRESSION = ["davi.objective=paired", "davi.lambda_ikl=0", "davi.lambda_con=0", "davi.lambda_reg=1.0", "davi.ppb=false"]


# ----------------------------------------------------------------------------------------------
# problems
# ----------------------------------------------------------------------------------------------
def make_prior(name: str):
    if name == "gauss":
        x, _ = digit_images(GAUSS_CLASSES, resolution=RES)
        return fit_gaussian(x, rank=RANK)
    if name == "gmm":
        x, labels = digit_images(GMM_CLASSES, resolution=RES)
        return fit_gmm(x, labels, rank=RANK)
    raise ValueError(f"unknown prior {name!r} (one of {', '.join(PRIORS)})")


def operator_config(task: str, sigma_y: float = SIGMA_Y):
    from davi.config import load_config

    return load_config(None, [*TASKS[task], f"operator.sigma_y={sigma_y}"]).operator


def make_operator(task: str, sigma_y: float = SIGMA_Y, resolution: int = RES, channels: int = 1):
    from davi.operators import build_operator

    return build_operator(operator_config(task, sigma_y), resolution, channels)


def problem(prior_name: str, task: str, measurements: int):
    """(prior, operator, ``measurements`` held-out measurements y, their exact posteriors) of one
    (prior, task); for the mixture the most ambiguous y's."""
    prior = make_prior(prior_name)
    op = make_operator(task)
    _, y = held_out_measurements(prior, op, measurements, seed=1, ambiguous=prior_name == "gmm")
    return prior, op, y, exact_posteriors(prior, op, y)


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def davi_config(task: str, out_dir, steps: int, objective: list[str], batch_size: int = 64, lr: float = 1e-3,
                h: float = 0.1, seed: int = 0, extra: list[str] | None = None):
    from davi.config import load_config

    return load_config(None, [
        "job=davi", f"train.output_dir={out_dir}", f"data.resolution={RES}", "data.channels=1", *NET,
        *TASKS[task], f"operator.sigma_y={SIGMA_Y}", "train.init_from_prior=false", f"mapper.h={h}",
        f"train.max_steps={steps}", f"train.batch_size={batch_size}", f"train.lr={lr}", f"davi.score_lr={lr}",
        f"train.seed={seed}", "train.ema_decay=0.995", f"train.checkpoint_every={max(1, steps // 4)}",
        "train.checkpoints_total_limit=1", "log.image_every=0", "log.progress=false", "log.num_val=4",
        "log.num_samples=2", f"log.every={max(1, steps // 20)}", *(extra or []),
        *objective])  # last: the objective's overrides (e.g. --sampler-override train.lr=...) win


def sampler_objective(t_ikl: int, init_mapper: str | Path = "", score_steps: int = 1) -> list[str]:
    return ["davi.objective=sampler", "davi.lambda_reg=0", f"davi.t_ikl={t_ikl}", f"davi.score_steps={score_steps}",
            f"davi.init_mapper={init_mapper}"]


def sampler_settings(settings) -> list[str]:
    """The sampler phase's overrides beyond the objective: s_psi's conditioning and warm-up, mean matching,
    PPB. ``settings``: any object with ``score_condition``, ``score_warmup``, ``lambda_mean``, ``sampler_ppb``
    and ``sampler_override`` (e.g. parsed arguments)."""
    return [f"davi.score_condition={settings.score_condition}", f"davi.score_warmup={settings.score_warmup}",
            f"davi.lambda_mean={settings.lambda_mean}",
            f"davi.ppb={str(settings.sampler_ppb).lower()}", *settings.sampler_override]


def train_mapper(prior, cfg, num_train: int = 16384, seed: int = 0):
    """Train DAVI against the analytic ``prior`` on ``num_train`` of its samples (resuming a killed run);
    (EMA mapper, export folder, CPU seconds)."""
    from davi.io.export import load_export
    from davi.training.loop import train
    from davi.training.recipes.davi import davi_recipe

    g = torch.Generator().manual_seed(10_000 + seed)
    images = prior.sample(num_train, generator=g).float()
    t0 = time.process_time()
    out = train(cfg, davi_recipe, resume="latest", prior=prior, train_images=images, val_images=images[:4])
    seconds = time.process_time() - t0
    mapper, _, _ = load_export(out / "export")
    return mapper, out / "export", seconds


# ----------------------------------------------------------------------------------------------
# the estimators
# ----------------------------------------------------------------------------------------------
def figures(samples, posts, truths) -> dict:
    """posterior_figures plus the coverage of the exact draws ``truths`` (R, B, D)."""
    f = posterior_figures(samples, posts)
    f["coverage"] = {f"{round(100 * k)}": v for k, v in interval_coverage(samples, truths).items()}
    return f


TRUTH_SEED = 7


def truth_draws(posts, g: torch.Generator) -> torch.Tensor:
    """(NUM_TRUTHS, B, D) exact posterior draws, one posterior after the other from ``g``: the
    truths every method's coverage is measured against."""
    return torch.stack([p.sample(NUM_TRUTHS, g) for p in posts], 1)
