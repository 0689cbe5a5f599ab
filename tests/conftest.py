"""Shared fixtures: a tiny random diffusion prior saved as a diffusers folder (safetensors)."""

from __future__ import annotations

import os

import pytest
import torch

# Keep every test process to one intra-op thread: two cores, and pytest may share them.
torch.set_num_threads(1)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_UNET = ["prior.block_out_channels=[8,16]", "prior.attention_levels=[]", "prior.attention_head_dim=8"]


def make_tiny_prior(folder, seed: int = 0, channels: int = 1, resolution: int = 32):
    from davi.config import DataConfig, PriorConfig
    from davi.prior import build_scheduler, build_unet, save_prior

    torch.manual_seed(seed)
    pc = PriorConfig(block_out_channels=[8, 16], attention_levels=[], attention_head_dim=8)
    unet = build_unet(pc, DataConfig(resolution=resolution, channels=channels))
    save_prior(unet, build_scheduler(pc), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_prior_dir(tmp_path_factory):
    return make_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny")
