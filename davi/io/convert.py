"""Convert OpenAI guided-diffusion UNet checkpoints to a diffusers folder (``unet/`` + ``scheduler/``).

The two priors of the DAVI and RED-Diff benchmarks (Lee et al. 2024; Mardani et al. 2023) are guided-diffusion
checkpoints,

* ``ffhq256``     the FFHQ 256 DDPM used by DPS (``ffhq_10m.pt``),
* ``imagenet256`` the ImageNet 256 unconditional model (``256x256_diffusion_uncond.pt``),

both with learned variance (6 output channels; :class:`davi.models.prior.DiffusionPrior` keeps the first 3).
Usage::

    davi convert guided ffhq_10m.pt priors/ffhq256 --preset ffhq256

The architecture maps exactly onto diffusers' ``UNet2DModel`` (checked tensor by tensor against a
re-implementation of guided-diffusion's ``UNetModel`` in ``tests/guided_reference.py``):

==============================================  ==================================================
guided-diffusion                                ``UNet2DModel``
==============================================  ==================================================
``timestep_embedding`` (cos first, max 1e4)     ``time_embedding_type="positional"``,
                                                ``flip_sin_to_cos=True``, ``freq_shift=0``
``time_embed.{0,2}``                            ``time_embedding.linear_{1,2}``
``input_blocks.0.0``                            ``conv_in``
ResBlock ``in_layers/emb_layers/out_layers``    ``ResnetBlock2D`` ``norm1/conv1/time_emb_proj/norm2/
                                                conv2``; ``skip_connection`` -> ``conv_shortcut``
``use_scale_shift_norm``                        ``resnet_time_scale_shift="scale_shift"``
ResBlock(down/up=True) (``resblock_updown``)    ``downsample_type/upsample_type="resnet"``
                                                (avg-pool / nearest inside the block, after norm+act)
``Downsample``/``Upsample`` conv (otherwise)    ``downsample_type/upsample_type="conv"``
AttentionBlock ``norm/qkv/proj_out``            ``Attention`` ``group_norm/to_q,to_k,to_v/to_out.0``
                                                (1x1 conv1d -> linear; the fused qkv is split per head)
GroupNorm32(32, eps 1e-5), SiLU                 ``norm_num_groups=32``, ``norm_eps=1e-5``, ``silu``
middle block attention (always has a norm)      ``attn_norm_num_groups=32`` (diffusers drops the mid
                                                attention's norm under "scale_shift" otherwise)
``out.{0,2}``                                   ``conv_norm_out``, ``conv_out``
==============================================  ==================================================

QKV layouts: with ``use_new_attention_order=False`` (both published checkpoints, and guided-diffusion's
default) the ``QKVAttentionLegacy`` layout is used: the 3C qkv channels are grouped per head as
``[q_h, k_h, v_h]``; with ``True`` (``QKVAttention``) they are ``[q_all, k_all, v_all]``. Both are
supported. The 1/sqrt(sqrt(d)) scaling of q and k equals diffusers' 1/sqrt(d) on q.k.

Not representable (the converter refuses them with a one-line error):

* class-conditional checkpoints (``label_emb``; diffusers could hold it, but the prior is unconditional);
* ``num_head_channels=-1`` (a fixed head *count*) when that gives different head widths at different
  attention levels, or ``num_heads_upsample`` different from ``num_heads``: diffusers has one
  ``attention_head_dim`` for the whole network;
* ``conv_resample=False`` (parameter-free avg-pool/nearest resampling outside resblocks): never used by
  guided-diffusion's ``create_model``.

Numerics: exact in float32/float64. In half precision guided-diffusion runs GroupNorm in float32
(``GroupNorm32``) and its time embedding MLP in float32; diffusers runs them in the model dtype.

The scheduler written beside the UNet is the training schedule: linear betas (1e-4 .. 0.02 scaled
by 1000 / diffusion_steps), T = ``diffusion_steps`` (1000), or guided-diffusion's cosine schedule
(``squaredcos_cap_v2``); ``variance_type="learned_range"`` for learned-sigma models.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from davi.models.prior import PriorError


class ConversionError(PriorError):
    """A checkpoint that cannot be converted; the message is one line and names the culprit."""


# Published hyper-parameters. FFHQ: DPS configs/model_config.yaml (attention at 16 only).
# ImageNet: guided-diffusion README, 256x256_diffusion_uncond.pt.
PRESETS: dict[str, dict] = {
    "ffhq256": dict(image_size=256, num_channels=128, num_res_blocks=1, channel_mult=(1, 1, 2, 2, 4, 4),
                    attention_resolutions=(16,), num_heads=4, num_head_channels=64, num_heads_upsample=-1,
                    learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True,
                    use_new_attention_order=False, diffusion_steps=1000, noise_schedule="linear"),
    "imagenet256": dict(image_size=256, num_channels=256, num_res_blocks=2, channel_mult=(1, 1, 2, 2, 4, 4),
                        attention_resolutions=(32, 16, 8), num_heads=4, num_head_channels=64,
                        num_heads_upsample=-1, learn_sigma=True, use_scale_shift_norm=True,
                        resblock_updown=True, use_new_attention_order=False, diffusion_steps=1000,
                        noise_schedule="linear"),
}

# guided-diffusion's script_util defaults (model_and_diffusion_defaults) for what a preset leaves open.
GUIDED_DEFAULTS: dict = dict(channel_mult=None, attention_resolutions=(16, 8), num_heads=4, num_head_channels=-1,
                             num_heads_upsample=-1, learn_sigma=False, in_channels=3, use_scale_shift_norm=True,
                             resblock_updown=False, use_new_attention_order=False, class_cond=False,
                             diffusion_steps=1000, noise_schedule="linear")
REQUIRED = ("image_size", "num_channels", "num_res_blocks")
# Accepted so that a guided-diffusion flag set can be passed as is; they do not change the weights.
IGNORED = ("dropout", "use_checkpoint", "use_fp16", "timestep_respacing", "use_kl", "predict_xstart",
           "rescale_timesteps", "rescale_learned_sigmas", "model_path")
HPARAMS = set(REQUIRED) | set(GUIDED_DEFAULTS) | set(IGNORED)


# ---------------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------------

def default_channel_mult(image_size: int) -> tuple:
    """guided-diffusion's create_model choice when channel_mult is empty."""
    table = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
    if image_size not in table:
        raise ConversionError(f"channel_mult: no guided-diffusion default for image_size {image_size}; give it "
                              f"explicitly (e.g. 1,2,2)")
    return table[image_size]


def _int_tuple(value, name: str) -> tuple:
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        out = tuple(float(p) if isinstance(p, float) or (isinstance(p, str) and "." in p) else int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConversionError(f"{name}: expected comma-separated numbers, got {value!r}") from None
    return out


def _check_hparams(ignored: dict, class_cond: bool) -> None:
    unknown = sorted(set(ignored) - HPARAMS)
    if unknown:
        raise ConversionError(f"unknown guided-diffusion hyper-parameter {unknown[0]!r} (known: "
                              f"{', '.join(sorted(HPARAMS))})")
    if class_cond:
        raise ConversionError("class_cond=True: class-conditional checkpoints are not supported "
                              "(the prior is unconditional; use e.g. 256x256_diffusion_uncond.pt)")


def _attention_head_dim(channels: tuple, attn: list, num_heads: int, num_heads_upsample: int,
                        num_head_channels: int) -> int:
    """The one attention head width of the whole network (diffusers' ``attention_head_dim``)."""
    sites = [("down", c, num_heads) for c, a in zip(channels, attn) if a] + [("middle", channels[-1], num_heads)]
    heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
    sites += [("up", c, heads_up) for c, a in zip(channels, attn) if a]
    widths = set()
    for where, c, heads in sites:
        if num_head_channels != -1:
            if c % num_head_channels:
                raise ConversionError(f"num_head_channels {num_head_channels} does not divide the {where} "
                                      f"attention width {c}")
            widths.add(num_head_channels)
        else:
            if heads < 1 or c % heads:
                raise ConversionError(f"num_heads {heads} does not divide the {where} attention width {c}")
            widths.add(c // heads)
    if len(widths) != 1:
        raise ConversionError(f"attention head widths differ across levels ({sorted(widths)}): not representable "
                              f"by UNet2DModel's single attention_head_dim (use num_head_channels)")
    return widths.pop()


def _block_types(attn: list, resblock_updown: bool) -> tuple[tuple, tuple, str]:
    """(down block types, up block types, up/downsample kind) for attention at ``attn``'s levels."""
    kind = "resnet" if resblock_updown else "conv"
    plain_down, plain_up = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if resblock_updown else \
        ("DownBlock2D", "UpBlock2D")
    down = tuple("AttnDownBlock2D" if a else plain_down for a in attn)
    up = tuple("AttnUpBlock2D" if a else plain_up for a in reversed(attn))
    return down, up, kind


def unet_config_from_guided(image_size: int, num_channels: int, num_res_blocks: int, channel_mult=None,
                            attention_resolutions=(16, 8), num_head_channels: int = -1, learn_sigma: bool = False,
                            in_channels: int = 3, num_heads: int = 4, num_heads_upsample: int = -1,
                            use_scale_shift_norm: bool = True, resblock_updown: bool = False,
                            class_cond: bool = False, **ignored) -> dict:
    """``UNet2DModel`` kwargs reproducing guided-diffusion's ``create_model(...)`` exactly.

    Arguments follow guided-diffusion's ``script_util.create_model``: ``attention_resolutions`` are image
    resolutions (``"32,16,8"`` or a tuple), turned into downsampling rates ``image_size // res``;
    ``channel_mult`` None/"" picks guided-diffusion's default for the image size. Keys in ``ignored`` that
    do not touch the architecture (``use_new_attention_order``, ``dropout``, ``use_fp16``, ...) are accepted.
    """
    _check_hparams(ignored, class_cond)
    image_size, num_channels, num_res_blocks = int(image_size), int(num_channels), int(num_res_blocks)
    mult = default_channel_mult(image_size) if channel_mult in (None, "", ()) else _int_tuple(channel_mult,
                                                                                              "channel_mult")
    channels = tuple(int(m * num_channels) for m in mult)
    levels = len(channels)
    attention_ds = {image_size // r for r in _int_tuple(attention_resolutions, "attention_resolutions")}
    attn = [2 ** level in attention_ds for level in range(levels)]  # guided: `if ds in attention_resolutions`
    if num_res_blocks < 1 or num_channels < 1 or not channels:
        raise ConversionError("num_res_blocks, num_channels and channel_mult must be positive")
    bad = [c for c in channels if c % 32]
    if bad:
        raise ConversionError(f"channel width {bad[0]} is not divisible by the 32 GroupNorm groups")

    head_dim = _attention_head_dim(channels, attn, num_heads, num_heads_upsample, num_head_channels)

    down, up, kind = _block_types(attn, resblock_updown)
    return dict(
        sample_size=image_size,
        in_channels=int(in_channels),
        out_channels=int(in_channels) * (2 if learn_sigma else 1),
        center_input_sample=False,
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=down,
        mid_block_type="UNetMidBlock2D",
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=num_res_blocks,
        mid_block_scale_factor=1,
        downsample_padding=1,
        downsample_type=kind,
        upsample_type=kind,
        dropout=0.0,
        act_fn="silu",
        attention_head_dim=head_dim,
        norm_num_groups=32,
        attn_norm_num_groups=32,
        norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if use_scale_shift_norm else "default",
        add_attention=True,
    )


def _meta_unet(config: dict):
    """The UNet2DModel for ``config`` with shapes but no storage (cheap even at 550M parameters)."""
    from diffusers import UNet2DModel

    try:
        with torch.device("meta"):
            return UNet2DModel(**config)
    except Exception as e:
        raise ConversionError(f"cannot build UNet2DModel from the config ({type(e).__name__}: "
                              f"{_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


# ---------------------------------------------------------------------------------------------------
# State dict
# ---------------------------------------------------------------------------------------------------

Rule = tuple[tuple, list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]]  # guided shape, outputs


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _squeeze(t: torch.Tensor) -> torch.Tensor:  # conv1d kernel 1 -> linear
    return t.reshape(t.shape[0], t.shape[1])


def _qkv_part(index: int, heads: int, new_order: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """q (0), k (1) or v (2) rows of a fused qkv conv1d weight (3C, C, 1) or bias (3C,), head-major."""

    def part(t: torch.Tensor) -> torch.Tensor:
        rest = tuple(t.shape[1:2])  # (C,) for the weight, () for the bias
        c = t.shape[0] // 3
        if new_order:  # QKVAttention: [q (all heads), k, v]
            out = t.reshape(3, c, *rest)[index]
        else:  # QKVAttentionLegacy: per head [q_h, k_h, v_h]
            out = t.reshape(heads, 3, c // heads, *rest)[:, index].reshape(c, *rest)
        return out.clone()  # own storage: safetensors refuses tensors sharing memory

    return part


class _RuleBook:
    """Collects guided key -> (expected guided shape, [(diffusers key, transform)]) rules, in guided order."""

    def __init__(self, config: dict, shapes: Mapping[str, torch.Size], new_order: bool):
        self.config, self.shapes, self.new_order = config, shapes, new_order
        self.rules: dict[str, Rule] = {}

    def copy(self, g: str, d: str, transform=_identity, extra: tuple = ()) -> None:
        for p in ("weight", "bias"):
            self.rules[f"{g}.{p}"] = (tuple(self.shapes[f"{d}.{p}"]) + (extra if p == "weight" else ()),
                                      [(f"{d}.{p}", transform if p == "weight" else _identity)])

    def resblock(self, g: str, d: str) -> None:
        self.copy(f"{g}.in_layers.0", f"{d}.norm1")
        self.copy(f"{g}.in_layers.2", f"{d}.conv1")
        self.copy(f"{g}.emb_layers.1", f"{d}.time_emb_proj")
        self.copy(f"{g}.out_layers.0", f"{d}.norm2")
        self.copy(f"{g}.out_layers.3", f"{d}.conv2")
        if f"{d}.conv_shortcut.weight" in self.shapes:
            self.copy(f"{g}.skip_connection", f"{d}.conv_shortcut")

    def attention(self, g: str, d: str) -> None:
        c = self.shapes[f"{d}.to_q.weight"][0]
        heads = c // self.config["attention_head_dim"]
        self.copy(f"{g}.norm", f"{d}.group_norm")
        for p, shape in (("weight", (3 * c, c, 1)), ("bias", (3 * c,))):
            self.rules[f"{g}.qkv.{p}"] = (shape, [(f"{d}.to_{n}.{p}", _qkv_part(i, heads, self.new_order))
                                                  for i, n in enumerate("qkv")])
        self.copy(f"{g}.proj_out", f"{d}.to_out.0", _squeeze, extra=(1,))

    def resample(self, g: str, d: str, conv: str) -> None:
        """A down/upsampler: a resblock (resblock_updown) or a conv."""
        if self.config["downsample_type"] == "resnet":
            self.resblock(g, d)
        else:
            self.copy(f"{g}.{conv}", f"{d}.conv")


def _encoder_rules(book: _RuleBook, attn: list, levels: int, nrb: int) -> None:
    """guided input_blocks -> diffusers down_blocks."""
    i = 1
    for level in range(levels):
        for j in range(nrb):
            book.resblock(f"input_blocks.{i}.0", f"down_blocks.{level}.resnets.{j}")
            if attn[level]:
                book.attention(f"input_blocks.{i}.1", f"down_blocks.{level}.attentions.{j}")
            i += 1
        if level != levels - 1:
            book.resample(f"input_blocks.{i}.0", f"down_blocks.{level}.downsamplers.0", "op")
            i += 1


def _decoder_rules(book: _RuleBook, attn: list, levels: int, nrb: int) -> None:
    """guided output_blocks -> diffusers up_blocks."""
    i = 0
    for u, level in enumerate(reversed(range(levels))):
        for j in range(nrb + 1):
            book.resblock(f"output_blocks.{i}.0", f"up_blocks.{u}.resnets.{j}")
            if attn[level]:
                book.attention(f"output_blocks.{i}.1", f"up_blocks.{u}.attentions.{j}")
            if level and j == nrb:
                k = 2 if attn[level] else 1
                book.resample(f"output_blocks.{i}.{k}", f"up_blocks.{u}.upsamplers.0", "conv")
            i += 1


def _rules(config: dict, shapes: Mapping[str, torch.Size], new_order: bool) -> dict[str, Rule]:
    """guided key -> (expected guided shape, [(diffusers key, transform)]), in guided order."""
    book = _RuleBook(config, shapes, new_order)
    attn = ["Attn" in t for t in config["down_block_types"]]
    levels, nrb = len(config["block_out_channels"]), config["layers_per_block"]
    book.copy("time_embed.0", "time_embedding.linear_1")
    book.copy("time_embed.2", "time_embedding.linear_2")
    book.copy("input_blocks.0.0", "conv_in")
    _encoder_rules(book, attn, levels, nrb)
    book.resblock("middle_block.0", "mid_block.resnets.0")
    book.attention("middle_block.1", "mid_block.attentions.0")
    book.resblock("middle_block.2", "mid_block.resnets.1")
    _decoder_rules(book, attn, levels, nrb)
    book.copy("out.0", "conv_norm_out")
    book.copy("out.2", "conv_out")
    return book.rules


_HINTS = {
    "label_emb.weight": "class-conditional checkpoint: not supported (the prior is unconditional)",
}


def convert_state_dict(guided_sd: Mapping[str, torch.Tensor], config: dict, *,
                       new_attention_order: bool = False) -> dict[str, torch.Tensor]:
    """Rename and reshape a guided-diffusion ``UNetModel`` state dict for ``UNet2DModel(**config)``.

    ``config`` comes from :func:`unet_config_from_guided`; ``new_attention_order`` is guided-diffusion's
    flag of that name (False: ``QKVAttentionLegacy``, as in both published checkpoints). Every checkpoint
    tensor must be used and every model tensor produced, with matching shapes; otherwise a
    :class:`ConversionError` names the first offending key. Tensors come back in float32.
    """
    if not isinstance(guided_sd, Mapping):
        raise ConversionError(f"not a state dict: got {type(guided_sd).__name__}")
    shapes = {k: v.shape for k, v in _meta_unet(config).state_dict().items()}
    try:
        rules = _rules(config, shapes, new_attention_order)
    except KeyError as e:
        raise ConversionError(f"internal: UNet2DModel has no tensor {e.args[0]!r} for this config") from None
    for key, value in guided_sd.items():
        if key not in rules:
            hint = _HINTS.get(key, "wrong preset or hyper-parameters?")
            raise ConversionError(f"unexpected key {key!r} in the checkpoint ({hint})")
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{key!r}: expected a tensor, got {type(value).__name__}")
    for key in rules:
        if key not in guided_sd:
            raise ConversionError(f"missing key {key!r} in the checkpoint (wrong preset or hyper-parameters?)")
    out: dict[str, torch.Tensor] = {}
    for key, (shape, targets) in rules.items():
        t = guided_sd[key]
        if tuple(t.shape) != shape:
            raise ConversionError(f"shape mismatch for {key!r}: {tuple(t.shape)} in the checkpoint, expected "
                                  f"{shape} (for {targets[0][0]}; wrong preset or hyper-parameters?)")
        if not t.is_floating_point():
            raise ConversionError(f"{key!r}: expected a floating-point tensor, got {t.dtype}")
        t = t.detach().to(torch.float32)
        for dkey, fn in targets:
            out[dkey] = fn(t)
    missing = [k for k in shapes if k not in out]
    if missing or len(out) != len(shapes):
        raise ConversionError(f"internal: no rule produces {missing[0] if missing else '?'!r}")
    return out


# ---------------------------------------------------------------------------------------------------
# Checkpoint -> folder
# ---------------------------------------------------------------------------------------------------

def resolve_hparams(preset: str | None = None, **overrides) -> dict:
    """Preset (or guided-diffusion defaults) + overrides, validated; None overrides are dropped."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - HPARAMS)
    if unknown:
        raise ConversionError(f"unknown guided-diffusion hyper-parameter {unknown[0]!r} (known: "
                              f"{', '.join(sorted(HPARAMS))})")
    if preset is None:
        base = dict(GUIDED_DEFAULTS)
    elif preset in PRESETS:
        base = {**GUIDED_DEFAULTS, **PRESETS[preset]}
    else:
        raise ConversionError(f"unknown preset {preset!r} (have: {', '.join(PRESETS)}; or none with explicit "
                              f"hyper-parameters)")
    hp = {**base, **overrides}
    absent = [k for k in REQUIRED if k not in hp]
    if absent:
        raise ConversionError(f"no preset: {', '.join(absent)} must be given (or use --preset "
                              f"{'|'.join(PRESETS)})")
    return hp


def guided_scheduler(hp: Mapping):
    """The DDPMScheduler of guided-diffusion's create_gaussian_diffusion for these hyper-parameters."""
    from davi.config import PriorConfig
    from davi.models.prior import build_scheduler

    steps = int(hp.get("diffusion_steps", 1000))
    variance = "learned_range" if hp.get("learn_sigma") else "fixed_large"
    schedule = hp.get("noise_schedule", "linear")
    if schedule == "linear":
        scale = 1000 / steps
        return build_scheduler(PriorConfig(num_train_timesteps=steps, beta_start=scale * 1e-4, beta_end=scale * 0.02,
                                           beta_schedule="linear"), variance_type=variance)
    if schedule == "cosine":
        return build_scheduler(PriorConfig(num_train_timesteps=steps, beta_schedule="squaredcos_cap_v2"),
                               variance_type=variance)
    raise ConversionError(f"noise_schedule {schedule!r}: expected linear or cosine")


def load_guided_state_dict(pt_path: str | Path) -> dict[str, torch.Tensor]:
    """Read a guided-diffusion ``.pt`` once (``weights_only=True``) and return its tensors by name."""
    path = Path(pt_path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(f"{path}: cannot read as a PyTorch checkpoint ({type(e).__name__}: "
                              f"{_first_line(e)})") from None

    def is_sd(o) -> bool:
        return isinstance(o, Mapping) and len(o) > 0 and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in o.items())

    if not is_sd(obj) and isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):  # common training-checkpoint wrappers
            if is_sd(obj.get(wrapper)):
                obj = obj[wrapper]
                break
    if not is_sd(obj):
        what = f"a {type(obj).__name__}" + (f" with keys {list(obj)[:5]}" if isinstance(obj, Mapping) else "")
        raise ConversionError(f"{path}: not a state dict (a mapping of parameter names to tensors); got {what}")
    if all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _write_atomic(out_dir: Path, unet, scheduler, info: dict, overwrite: bool) -> None:
    """The diffusers folder, written beside ``out_dir`` and renamed into place (davi.io.atomic)."""
    import diffusers

    from davi.io.atomic import recover_folder, replace_folder, temp_folder_for

    recover_folder(out_dir)
    if out_dir.exists() and not overwrite:
        raise ConversionError(f"{out_dir}: already exists (pass overwrite=True / --overwrite)")
    tmp = temp_folder_for(out_dir)
    try:
        unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)
        scheduler.save_pretrained(str(tmp / "scheduler"))
        (tmp / "model_index.json").write_text(json.dumps({  # also loadable as a DDPMPipeline
            "_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, indent=2))
        (tmp / "conversion.json").write_text(json.dumps(info, indent=2, default=str))
        replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_checkpoint(pt_path: str | Path, out_dir: str | Path, preset: str | None = None, *,
                       overwrite: bool = False, **overrides) -> Path:
    """Convert a guided-diffusion checkpoint into ``out_dir/unet`` + ``out_dir/scheduler`` (safetensors).

    ``preset`` is one of :data:`PRESETS` or None (then ``image_size``, ``num_channels`` and
    ``num_res_blocks`` must be given; the rest defaults to guided-diffusion's script_util defaults);
    ``overrides`` are guided-diffusion hyper-parameters (``attention_resolutions="32,16,8"``, ...).
    The folder is written to a temporary sibling and renamed into place.
    """
    hp = resolve_hparams(preset, **overrides)
    if not Path(pt_path).is_file():
        raise ConversionError(f"{pt_path}: no such checkpoint file")
    config = unet_config_from_guided(**hp)
    scheduler = guided_scheduler(hp)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:  # fail before reading gigabytes
        raise ConversionError(f"{out_dir}: already exists (pass overwrite=True / --overwrite)")
    sd = load_guided_state_dict(pt_path)
    source_dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})
    weights = convert_state_dict(sd, config, new_attention_order=bool(hp.get("use_new_attention_order")))
    del sd
    unet = _meta_unet(config)
    try:
        unet.load_state_dict(weights, strict=True, assign=True)
    except Exception as e:
        raise ConversionError(f"internal: converted weights do not load ({_first_line(e)})") from None
    unet.eval()
    info = {"source": str(Path(pt_path).resolve()), "format": "guided-diffusion", "preset": preset,
            "hyper_parameters": {k: (list(v) if isinstance(v, tuple) else v) for k, v in hp.items()},
            "source_dtypes": source_dtypes, "parameters": sum(p.numel() for p in unet.parameters()),
            "output": ("first in_channels channels = eps; the rest = v of guided-diffusion's learned_range "
                       "variance, log var = (v + 1) / 2 log beta + (1 - v) / 2 log beta_tilde")
            if hp.get("learn_sigma") else "eps"}
    _write_atomic(out_dir, unet, scheduler, info, overwrite)
    return out_dir


if __name__ == "__main__":  # the command line moved to the installed command
    print("error: python -m davi.io.convert is now `davi convert` (e.g. davi convert guided ffhq_10m.pt "
          "priors/ffhq256 --preset ffhq256)", file=sys.stderr)
    sys.exit(2)
