"""A compact re-implementation of OpenAI guided-diffusion's ``UNetModel`` (guided_diffusion/unet.py).

Only what the published FFHQ (DPS) and ImageNet 256 unconditional checkpoints use, plus the switches
the converter supports: scale-shift norm or additive time conditioning, up/down-sampling inside
ResBlocks (``resblock_updown``) or by strided / nearest+conv layers, attention with either QKV layout
(``QKVAttentionLegacy``: heads split before q/k/v; ``QKVAttention``: q/k/v split before heads),
``num_head_channels`` or ``num_heads``. Unconditional, 2-D, ``conv_resample=True`` only.

Module and parameter names reproduce guided-diffusion's ``state_dict`` keys exactly (``time_embed.0``,
``input_blocks.N.M.in_layers.0``, ``middle_block.1.qkv``, ``out.2``, ...), so a real checkpoint loads
into it with ``strict=True``.

One deliberate difference: ``GroupNorm32`` upcasts half precision to float32 as the original does, but
leaves float64 alone (the original would downcast it to float32), so the reference can run in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        return super().forward(up).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)  # eps 1e-5


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """[cos(t f), sin(t f)] with f = max_period^(-i / half), computed in float32 like the original."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepBlock(nn.Module):
    pass


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        # UNetModel never asks for the 3x3 skip (use_conv): a 1x1 conv when the width changes.
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def qkv_attention(qkv: torch.Tensor, heads: int, legacy: bool) -> torch.Tensor:
    """(B, 3*H*C, T) -> (B, H*C, T); q and k each scaled by C^-1/4, softmax in float32."""
    bs, width, length = qkv.shape
    ch = width // (3 * heads)
    if legacy:  # QKVAttentionLegacy: per head [q, k, v]
        q, k, v = qkv.reshape(bs * heads, 3 * ch, length).split(ch, dim=1)
    else:  # QKVAttention: [q (all heads), k, v]
        q, k, v = (t.reshape(bs * heads, ch, length) for t in qkv.chunk(3, dim=1))
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float() if weight.dtype != torch.float64 else weight, dim=-1).type(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_new_attention_order: bool = False):
        super().__init__()
        self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        self.legacy = not use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.legacy)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class GuidedUNet(nn.Module):
    """guided-diffusion ``UNetModel``; arguments as in ``script_util.create_model`` except that
    ``attention_resolutions`` are already downsampling rates (``image_size // res``) and
    ``channel_mult`` is a tuple."""

    def __init__(self, in_channels: int = 3, model_channels: int = 128, out_channels: int = 3,
                 num_res_blocks: int = 2, attention_resolutions=(16, 8), channel_mult=(1, 2, 4, 8),
                 num_heads: int = 1, num_head_channels: int = -1, num_heads_upsample: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False):
        super().__init__()
        num_heads_upsample = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self.model_channels = model_channels
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(cin, cout=None, **kw):
            return ResBlock(cin, emb_dim, cout, use_scale_shift_norm=use_scale_shift_norm, **kw)

        def attn(c, heads):
            return AttentionBlock(c, heads, num_head_channels, use_new_attention_order)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(
                    res(ch, ch, down=True) if resblock_updown else Downsample(ch, True)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch), attn(ch, num_heads), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, True))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(input_ch, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))
        hs, h = [], x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def from_script_args(image_size: int, num_channels: int, num_res_blocks: int, channel_mult, attention_resolutions,
                     learn_sigma: bool = False, in_channels: int = 3, **kw) -> GuidedUNet:
    """Like ``script_util.create_model``: attention_resolutions as image resolutions."""
    return GuidedUNet(in_channels=in_channels, model_channels=num_channels,
                      out_channels=in_channels * (2 if learn_sigma else 1), num_res_blocks=num_res_blocks,
                      attention_resolutions=tuple(image_size // r for r in attention_resolutions),
                      channel_mult=tuple(channel_mult), **kw)
