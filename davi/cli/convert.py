"""``davi convert``: convert an OpenAI guided-diffusion UNet checkpoint to a diffusers folder
(``unet/`` + ``scheduler/``), usable as a prior. See :mod:`davi.io.convert` for the mapping.

    davi convert guided ffhq_10m.pt priors/ffhq256 --preset ffhq256
"""

from __future__ import annotations

import argparse

HELP = "convert a guided-diffusion UNet checkpoint (.pt) to a diffusers prior folder"
# davi.io.convert.PRESETS' names (written out so that `davi --help` does not import torch; a test compares)
PRESET_NAMES = ("ffhq256", "imagenet256")
GUIDED_FLAGS = (("image_size", int), ("num_channels", int), ("num_res_blocks", int), ("channel_mult", str),
                ("attention_resolutions", str), ("num_head_channels", int), ("num_heads", int),
                ("num_heads_upsample", int), ("in_channels", int), ("learn_sigma", "bool"),
                ("use_scale_shift_norm", "bool"), ("resblock_updown", "bool"),
                ("use_new_attention_order", "bool"), ("diffusion_steps", int), ("noise_schedule", str))


def _bool(text: str) -> bool:
    v = text.strip().lower()
    if v in ("1", "true", "t", "yes", "y"):
        return True
    if v in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_arguments(p) -> None:
    """The ``convert`` subcommand's formats (one today: ``guided``) and their flags."""
    sub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    g = sub.add_parser("guided", help="OpenAI guided-diffusion / DPS UNet checkpoint (.pt)",
                       description="Convert a guided-diffusion UNet checkpoint to a diffusers folder. Flags "
                                   "override the preset; they use guided-diffusion's names.")
    g.add_argument("checkpoint", help="guided-diffusion .pt state dict")
    g.add_argument("out_dir", help="output folder (unet/ + scheduler/)")
    g.add_argument("--preset", help=f"published hyper-parameters: {', '.join(PRESET_NAMES)}")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    for name, typ in GUIDED_FLAGS:
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=_bool if typ == "bool" else typ,
                       default=None, metavar="V")


def run(args) -> None:
    """Convert; a ConversionError is a PriorError, so one line on stderr and exit 2."""
    import json

    from davi.io.convert import convert_checkpoint

    hyper = {name: getattr(args, name) for name, _ in GUIDED_FLAGS}
    path = convert_checkpoint(args.checkpoint, args.out_dir, args.preset, overwrite=args.overwrite, **hyper)
    info = json.loads((path / "conversion.json").read_text())
    print(f"wrote {path} ({args.format}: {info['parameters']:,} parameters, preset {args.preset or 'none'})")
