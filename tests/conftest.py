"""Shared fixtures: a tiny random diffusion prior saved as a diffusers folder (safetensors)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# Keep every test process to one intra-op thread: two cores, and pytest may share them.
torch.set_num_threads(1)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_UNET = ["prior.block_out_channels=[8,16]", "prior.attention_levels=[]", "prior.attention_head_dim=8"]


def make_tiny_prior(folder, seed: int = 0, channels: int = 1, resolution: int = 32):
    from davi.config import DataConfig, PriorConfig
    from davi.models.prior import build_scheduler, build_unet, save_prior

    torch.manual_seed(seed)
    pc = PriorConfig(block_out_channels=[8, 16], attention_levels=[], attention_head_dim=8)
    unet = build_unet(pc, DataConfig(resolution=resolution, channels=channels))
    save_prior(unet, build_scheduler(pc), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_prior_dir(tmp_path_factory):
    return make_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny")


def free_port() -> int:
    """A loopback port free right now. Another process may take it before the launch binds it:
    _run_launch then starts again on a new one (PORT_IN_USE)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def launch_two_processes():
    """The README's two-process CPU launch prefix, on a port free right now: accelerate's default
    rendezvous port (29500) is shared by every launch on the machine, and a launch whose port is
    still held (by an earlier run, another test session, another user) waits until it times out.
    A port taken between this choice and the rendezvous is retried by ``run_launch``."""
    return [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(free_port())]


# torch.distributed's rendezvous could not listen on its port (taken by another process meanwhile)
PORT_IN_USE = re.compile(r"EADDRINUSE|address already in use|Errno 98", re.I)
LAUNCH_TRIES = 3


def _run_once(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True, **kwargs)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def _run_launch(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` for an ``accelerate launch``, output to files rather than pipes: a rank that
    outlives its launcher keeps a pipe open and a pipe read never ends. On a timeout the launcher's
    process group is killed (ranks torch put in sessions of their own may survive it). A launch whose
    rendezvous port was taken meanwhile (free_port() chose it, another process bound it first) runs
    again on a new port, up to LAUNCH_TRIES times."""
    cmd = list(cmd)
    for _ in range(LAUNCH_TRIES):
        proc = _run_once(cmd, timeout, **kwargs)
        if proc.returncode == 0 or "--main_process_port" not in cmd or not PORT_IN_USE.search(proc.stderr + proc.stdout):
            return proc
        i = cmd.index("--main_process_port") + 1
        cmd[i] = str(free_port())
    return proc


@pytest.fixture
def run_launch():
    return _run_launch
