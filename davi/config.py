"""One configuration tree for every job, loaded from YAML and overridable as ``key.sub=value``.

Each section is a dataclass; defaults are the embedded default (MNIST 32x32, shipped prior).
``load_config("configs/sr4_mnist.yaml", ["train.max_steps=100"])`` returns a validated
:class:`Config`; an unknown key or a value of the wrong type raises :class:`ConfigError`
with a one-line message that names the key and lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad key or value in a config file or a command-line override."""


@dataclass
class DataConfig:
    # "mnist32" (the bundled digits), "photos" (the bundled photo set), a folder of images, or a hub data set id.
    source: str = "mnist32"
    resolution: int = 32
    channels: int = 1
    image_column: str = "image"
    # Split for sources without a test split of their own: a file goes to test when the
    # hash of its relative path falls below test_fraction (stable as files are added).
    test_fraction: float = 0.1
    # Or explicit index ranges into the sorted file list, "start:stop" (FFHQ: test "0:1000").
    train_range: str = ""
    test_range: str = ""
    num_workers: int = 0
    # Patches (davi.data.patches): serve a folder of large images, or "photos" (the bundled photo set,
    # split by its manifest), as random resolution x resolution crops instead of whole resized images.
    # Item k of a split is the crop of image k % images drawn from (patch_seed, split, k) alone, so a
    # batch is a pure function of (seeds, step) and resume is exact. Split by image, never by patch.
    patches: bool = False
    # Virtual size of a split: images x patches_per_image crops, all different within a sampler epoch.
    patches_per_image: int = 8192
    # Each crop rescales its image by a factor drawn log-uniformly in [min, max] (0 < min <= max;
    # 0.5 halves the image, so a crop covers 2 x resolution of its pixels), then crops.
    patch_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # Flip each crop left-right with probability 1/2.
    flip: bool = False
    patch_seed: int = 0


@dataclass
class PriorConfig:
    # A diffusers folder (unet/ + scheduler/ or a bare UNet2DModel folder), a hub id, or
    # "bundled:mnist32" for the prior shipped inside the package.
    path: str = "bundled:mnist32"
    # Architecture of a prior trained from scratch (job: prior).
    # Defaults: fast on CPU at 32x32 (2.7M parameters; attention only at 8x8, where it is cheap).
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 1
    # Resolution levels (0 = full resolution) whose blocks carry self-attention.
    attention_levels: list[int] = field(default_factory=lambda: [2])
    attention_head_dim: int = 32
    norm_num_groups: int = 8
    # DDPM schedule (Ho et al. 2020), as the published priors use; a loaded prior keeps the schedule it
    # was trained with.
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"


@dataclass
class OperatorConfig:
    # A name in the operator registry (davi.operators.OPERATORS, listed in the error for an
    # unknown name) or an import path "module:Class" to an Operator subclass of your own.
    name: str = "sr"
    # The measurement noise std. With a family: a number (fixed) or [lo, hi] (0 < lo <= hi), drawn
    # log-uniformly per image.
    sigma_y: float | list[float] = 0.05
    # Gaussian blur; 0 means the benchmark's 61 px / std 3 at 256 px, scaled to the image.
    kernel_size: int = 0
    kernel_std: float = 0.0
    # deblur with any 2-D kernel instead (.npy or a grayscale image, odd sides; normalised to sum 1).
    kernel_file: str = ""
    # Super-resolution factor (average pooling).
    scale: int = 4
    # Side of the inpainting box; 0 means half the image side.
    box_size: int = 0
    # Top-left corner of the box (rows, columns from 0); -1 centres it on that axis.
    box_top: int = -1
    box_left: int = -1
    # Random inpainting: fraction of pixels dropped, and the seed of the fixed mask.
    drop_fraction: float = 0.5
    mask_seed: int = 0
    # inpaint: the mask (.npy or an image of the data's size; 1 / white = observed, 0 / black = missing).
    mask_file: str = ""
    # A family of operators instead of the one above (docs/family.md): each training image draws a
    # member uniformly, its ranged settings and its sigma_y, e.g.
    #   family: [{name: sr, scale: [2, 4]}, {name: deblur, kernel_std: [0.5, 3.0]}]
    #   sigma_y: [0.01, 0.2]
    # A [lo, hi] list is a range (float keys: uniform; integer keys: the integers the operator
    # accepts), a scalar is fixed; the keys are this section's. Empty: the single operator above.
    family: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class MapperConfig:
    # Perturbation scale of the mapper's input, x = lift(y) + h z.
    h: float = 0.1
    # Squash the output into [-1, 1] with tanh.
    tanh: bool = False
    # Extra N(0, 1) input channels beside x_a: the sampler's own source of randomness, so that the
    # spread need not come from h z (which the mapper cannot tell from the measurement). 0: none.
    noise_channels: int = 0
    # What the mapper sees of the operator besides lift(y) (operator.family needs one): none | maps
    # (extra input channels: the coverage A^T A 1 and a log-sigma_y map) | embedding (the maps, and
    # the family's condition vector through the UNet's time embedding).
    condition: str = "none"


@dataclass
class DaviConfig:
    """Objective of the mapper (DAVI, Lee et al. 2024, section 3).

    ``objective``: ``paired`` is the paper's recipe, IKL + lambda_con * consistency + lambda_reg *
    paired regression: a realistic point estimator (with lambda_reg > 0 its optimum is a point mass
    near the posterior mean, so its spread is not a posterior std). ``sampler`` trains a posterior
    sampler: lambda_reg must be 0, the consistency weight is derived from operator.sigma_y
    (davi.training.losses.sampler_consistency_weight; lambda_con is not used), s_psi learns the score on the
    IKL's own t range, and t_ikl should be small (<= 50: docs/posterior_check.md).
    """

    objective: str = "paired"
    t_ikl: int = 1000
    lambda_ikl: float = 1.0
    lambda_con: float = 0.1
    lambda_reg: float = 1.0
    # Perturbed Posterior Bridge: a ~ T * Beta(ppb_alpha, ppb_beta); off means a = T - 1 always.
    ppb: bool = True
    ppb_alpha: float = 3.0
    ppb_beta: float = 1.0
    # Score-network updates per mapper update (on the same mapper samples).
    score_steps: int = 1
    score_lr: float = 1e-4
    # none: s_psi learns the score of the mapper's samples pooled over all y (the marginal q(x)); the
    # IKL is then KL(q_t || p_t), which any split of the prior's spread between the mean map and the
    # per-y spread minimises (docs/sampler.md). lift / center: s_psi also sees lift(y) / the
    # mapper's noise-free output c(y) (and x_t - sqrt(ab_t) c): it learns the score of q(x | y), so
    # the IKL is E_y KL(q_t(. | y) || p_t), the term whose optimum with the consistency is the posterior.
    score_condition: str = "none"
    # The first score_warmup steps train s_psi only (the mapper's learning rate is 0), so that a
    # fresh s_psi learns a warm-started mapper's score before its IKL gradients move the mapper.
    score_warmup: int = 0
    # Sampler objective: weight of the mean-matching term (davi.training.losses.mean_matching_loss, paired: it
    # needs the clean image). Its minimiser is any sampler whose mean is E[x | y], whatever its spread,
    # so it moves no optimum of the sampler objective; 0 = off.
    lambda_mean: float = 0.0
    # Sampler objective: 0 = every image's IKL reads t < t_ikl. r > 0 = each image reads only the t whose noise
    # level sqrt((1 - ab_t) / ab_t) is at most r * its own sigma_y (at least t = 0, at most t_ikl): the
    # diffused KL collapses posterior variances below its noise (davi.analytic.davi_fixed_point), and a
    # measured pixel's posterior std is below sigma_y, so one t_ikl cannot serve a family's noise levels
    # (docs/family.md); 0.25 keeps the closed-form optimum's 90% coverage within 0.85-0.95 there (but for a box
    # at sigma_y 0.02, below what t = 0 of a DDPM schedule resolves).
    ikl_noise_ratio: float = 0.0
    # Warm start: a mapper export folder (e.g. a shipped paired mapper) whose weights the mapper starts
    # from instead of the prior's; "" = start from the prior (or fresh, train.init_from_prior=false).
    init_mapper: str = ""
    # The export's consistency threshold (davi.solvers.consistency) is calibrated on this many held-out test
    # images at the end of training, one restoration each; 0 exports without one (then
    # scripts/calibrate_consistency.py can add it later, e.g. on a GPU for a 256x256 mapper).
    calibration_images: int = 500


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    batch_size: int = 32  # per process
    max_steps: int = 1000
    lr: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0
    warmup_steps: int = 0
    # After the warm-up: constant | cosine | linear (the decays would reach 0 at max_steps).
    lr_schedule: str = "constant"
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16
    # The mapper's (prior's) EMA, diffusers' EMAModel: at optimiser step s its decay is
    # min(ema_decay, (1 + s) / (10 + s)), an average over about the last s / 9 steps, until
    # s ~ 10 ema_decay / (1 - ema_decay) (1,800 steps for 0.995, 9,000 for 0.999, 90,000 for
    # 0.9999); after that over about 1 / (1 - ema_decay) steps. Shorter runs never reach ema_decay.
    ema_decay: float = 0.9999
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 3  # 0 keeps every checkpoint
    # Stop after this many non-finite losses in a row (each one skips its step).
    max_nonfinite: int = 10
    # Recompute UNet activations in the backward pass (diffusers): less memory, ~30% more time.
    gradient_checkpointing: bool = False
    # Initialise the trained networks from the prior's weights (DAVI) or from scratch.
    init_from_prior: bool = True
    # Sort out the wall clock: stop (and checkpoint) after this many minutes; 0 = no limit.
    max_minutes: float = 0.0


@dataclass
class LogConfig:
    every: int = 25
    image_every: int = 500
    num_val: int = 16  # fixed validation batch (PSNR curve, image grids)
    num_samples: int = 4  # posterior samples per validation image in the grid
    progress: bool = True


@dataclass
class RedDiffConfig:
    num_steps: int = 100
    lr: float = 0.25
    lam: float = 0.25
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    obs_weight: float = 1.0
    init: str = "pinv"  # pinv | lift


@dataclass
class UnpairedConfig:
    """Measurement-only training (job ``unpaired``): no clean image reaches the recipe.

    ``measurements``: a folder of measurements of ``operator`` (``.npy`` arrays or image files, one
    measurement each, shape ``(C, h, w)`` / ``(h, w)`` as the operator produces them), or
    ``simulate``: measure the train split of ``data`` (noise seed ``seed``, the first ``limit``
    images) and keep only the measurements, to compare with paired training.
    ``anchors``: a folder written by ``davi anchors`` (RED-Diff solutions of exactly these
    measurements); with anchors the Perturbed Posterior Bridge starts at them, without it is off.
    """

    measurements: str = ""
    limit: int = 0  # 0 = every measurement
    seed: int = 0
    anchors: str = ""
    # Weight of the optional anchor regression mse(anchor, x_hat) (0 = the anchor only anchors the bridge).
    lambda_anchor: float = 0.0
    # RED-Diff batch of the anchor job (one shard per batch).
    anchor_batch_size: int = 64


@dataclass
class Config:
    # prior: train a diffusion prior with the DDPM loss; davi: train a mapper; unpaired: a mapper from measurements alone.
    job: str = "davi"
    data: DataConfig = field(default_factory=DataConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    davi: DaviConfig = field(default_factory=DaviConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    red_diff: RedDiffConfig = field(default_factory=RedDiffConfig)
    unpaired: UnpairedConfig = field(default_factory=UnpairedConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_CHOICES = {
    "job": ("prior", "davi", "unpaired"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.lr_schedule": ("constant", "cosine", "linear"),
    "red_diff.init": ("pinv", "lift"),
    "davi.objective": ("paired", "sampler"),
    "davi.score_condition": ("none", "lift", "center"),
    "mapper.condition": ("none", "maps", "embedding"),
}
# Counts and weights that cannot be negative.
_AT_LEAST_ZERO = ("mapper.noise_channels", "davi.score_warmup", "davi.lambda_mean", "davi.ikl_noise_ratio")
# Integers that count or divide (``step % checkpoint_every``): zero or less is a mistake.
_AT_LEAST_ONE = ("data.resolution", "data.channels", "data.patches_per_image", "train.batch_size", "train.grad_accum",
                 "train.checkpoint_every", "log.every", "unpaired.anchor_batch_size")


def _check_operator_name(name: str) -> None:
    """ConfigError unless ``name`` is a registered operator or an importable Operator subclass.

    The valid names are the operator registry's; it is imported here, when a config names an
    operator, because davi.operators imports nothing from this module (one direction, no cycle)
    and pulls in torch, which reading a config does not otherwise need.
    """
    from davi.operators import OperatorError, operator_class

    try:
        operator_class(name)
    except OperatorError as e:
        raise ConfigError(str(e)) from None


_YAML11_BOOLS = {"yes": True, "no": False, "on": True, "off": False, "y": True, "n": False}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, str) and value.lower() in _YAML11_BOOLS:  # yes/no/on/off, as YAML 1.1 had them
            value = _YAML11_BOOLS[value.lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    for k, v in values.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(f"unknown key '{key}' (valid: {', '.join(prefix + n for n in names)})")
        current = getattr(obj, k)
        if isinstance(v, _OverrideValue):
            # A string field takes the override's text as written ("no", "1000:", "1e3"), not
            # what YAML would make of it (False, a mapping, a float).
            v = v.raw if hints[k] is str and not isinstance(v.parsed, (str, type(None))) else v.parsed
        if dataclasses.is_dataclass(current):
            _apply(current, v, key + ".")
            continue
        if key in _FAMILY_KEYS:
            setattr(obj, k, _FAMILY_KEYS[key](v))  # typed by the operators' own rules, checked together at the end
            continue
        v = _coerce(v, hints[k], key)
        if key in _CHOICES and v not in _CHOICES[key]:
            raise ConfigError(f"{key}: {v!r} is not one of {', '.join(_CHOICES[key])}")
        if key == "operator.name":
            _check_operator_name(v)
        if key in _AT_LEAST_ONE and v < 1:
            raise ConfigError(f"{key}: must be at least 1, got {v!r}")
        if key in _AT_LEAST_ZERO and v < 0:
            raise ConfigError(f"{key}: must be at least 0, got {v!r}")
        if key == "data.patch_scale" and not (len(v) == 2 and 0 < v[0] <= v[1]):
            raise ConfigError(f"{key}: expected [min, max] with 0 < min <= max, got {v!r}")
        setattr(obj, k, v)


def _family_value(value: Any) -> list[dict[str, Any]]:
    """``operator.family`` typed member by member like the ``operator.*`` keys (davi.operators.family_spec)."""
    if value in (None, "", []):
        return []
    from davi.operators import OperatorError, family_spec

    defaults = {f.name: f.default for f in dataclasses.fields(OperatorConfig) if f.name not in ("name", "sigma_y", "family")}
    try:
        family = family_spec(value, defaults)
    except OperatorError as e:
        raise ConfigError(str(e)) from None
    for i, member in enumerate(family):
        try:
            _check_operator_name(member["name"])
        except ConfigError as e:
            raise ConfigError(f"operator.family[{i}]." + str(e).removeprefix("operator.")) from None
    return family


def _sigma_y_value(value: Any) -> float | list[float]:
    """``operator.sigma_y``: a number, or (with a family, checked at the end) a range [lo, hi], 0 < lo <= hi."""
    if isinstance(value, (list, tuple)):
        value = _coerce(list(value), list[float], "operator.sigma_y")
        if not (len(value) == 2 and 0 < value[0] <= value[1]):
            raise ConfigError(f"operator.sigma_y: a range is [lo, hi] with 0 < lo <= hi, got {value!r}")
        return value
    return _coerce(value, float, "operator.sigma_y")


_FAMILY_KEYS = {"operator.family": _family_value, "operator.sigma_y": _sigma_y_value}


def _check_family(cfg: Config) -> None:
    """A sigma_y range belongs to a family, and a family's mapper must see which operator it got."""
    family, ranged = cfg.operator.family, isinstance(cfg.operator.sigma_y, list)
    if ranged and not family:
        raise ConfigError(f"operator.sigma_y: a range {cfg.operator.sigma_y} needs operator.family "
                          f"(one operator has one noise level)")
    if family and cfg.mapper.condition == "none":
        raise ConfigError("mapper.condition: a family needs the mapper conditioned: maps or embedding")
    if not family and cfg.mapper.condition != "none":
        raise ConfigError(f"mapper.condition: {cfg.mapper.condition} conditions on an operator.family; "
                          f"without one it must be none")


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: only true/false are booleans (``no`` stays the string
    "no"), ``1e-4`` is a float, and ``1:30`` is not a base-60 integer."""


_YamlLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers
         if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  list("tTfF"))
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (a SafeLoader subclass)


@dataclasses.dataclass(frozen=True)
class _OverrideValue:
    raw: str  # the text after "=", for string fields
    parsed: Any  # the same read as YAML, for every other field

    def __repr__(self) -> str:
        return repr(self.raw)


def parse_override(text: str) -> dict[str, Any]:
    """``"train.lr=3e-4"`` -> ``{"train": {"lr": <3e-4>}}``: the leaf keeps the text and its YAML reading."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = _yaml_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw  # not YAML: a string field takes it as is, any other field rejects it
    nested: Any = _OverrideValue(raw.strip(), value)
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested  # type: ignore[return-value]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The typed :class:`Config` of a YAML file (or the defaults) with ``key.sub=value`` overrides on top;
    a key, type or value at fault is a one-line :class:`ConfigError` naming it."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = _yaml_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        try:
            _apply(cfg, values)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for text in overrides or []:
        _apply(cfg, parse_override(text))
    _check_family(cfg)
    _check_objective(cfg)
    return cfg


def _check_objective(cfg: Config) -> None:
    """The sampler objective's likelihood weight is 1 / (2 sigma_y^2): it needs noise, and no paired term."""
    if cfg.davi.objective != "sampler":
        if cfg.davi.ikl_noise_ratio != 0:
            raise ConfigError(f"davi.ikl_noise_ratio is a setting of davi.objective=sampler (whose consistency weight "
                              f"it sets per image), got {cfg.davi.ikl_noise_ratio} with davi.objective={cfg.davi.objective}")
        if cfg.davi.lambda_mean != 0:
            raise ConfigError(f"davi.lambda_mean is a term of davi.objective=sampler (the paired objective's "
                              f"regression already pins the mean), got {cfg.davi.lambda_mean} with "
                              f"davi.objective={cfg.davi.objective}")
        return
    sigma = cfg.operator.sigma_y  # a family's range has lo > 0 already
    if not isinstance(sigma, list) and sigma <= 0:
        raise ConfigError(f"davi.objective=sampler needs operator.sigma_y > 0 (its likelihood weight is "
                          f"1 / (2 sigma_y^2)), got {sigma}; use davi.objective=paired")
    if cfg.davi.lambda_ikl <= 0:
        raise ConfigError(f"davi.objective=sampler needs davi.lambda_ikl > 0 (the IKL is its prior term), "
                          f"got {cfg.davi.lambda_ikl}")
    if cfg.davi.lambda_reg != 0:
        raise ConfigError(f"davi.objective=sampler needs davi.lambda_reg=0 (the paired term collapses the "
                          f"samples to the posterior mean), got {cfg.davi.lambda_reg}")
