"""What a training job is, as the loop in ``davi.training.loop`` sees it.

A :class:`Recipe` names its trainable networks (each gets its own AdamW), the network whose EMA
is kept, and an ``iteration``: a generator that receives the prepared (possibly DDP-wrapped)
networks and one batch (a dict of tensors, already on the device) and yields one
:class:`Update` per optimiser step, EDM style (the loop knows no loss; a loss gets its network
as an argument)::

    def iteration(nets, batch):
        x_hat = nets["mapper"](...)                       # locals carry state between updates
        yield Update("score", "score", dsm(nets["score"], x_hat.detach()))
        yield Update("mapper", "mapper", loss_of(x_hat))

Between two yields the loop runs backward, clipping and the optimiser step of ``network``;
everything else (devices, accumulation, warm-up, non-finite guard, EMA, checkpoints, logs) is
the loop's. This module imports nothing from the package, so recipes and the loop can both
depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn


@dataclass
class Update:
    """One optimiser step: ``loss`` trains ``network``; ``phase`` names it in logs and timings."""

    phase: str
    network: str
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


# iteration(nets, batch) -> the updates of one training iteration, in order.
Iteration = Callable[[dict[str, nn.Module], dict[str, torch.Tensor]], Iterator[Update]]
# validate(accelerator, ema_network, step) -> (scalars, images as (N, C, H, W) in [-1, 1]).
Validate = Callable[[Any, nn.Module, int], tuple[dict[str, float], dict[str, torch.Tensor]]]
# finish(ema_network, output_dir, step): write the job's product (prior folder, mapper export).
Finish = Callable[[nn.Module, Path, int], None]


@dataclass
class Recipe:
    networks: dict[str, nn.Module]
    lrs: dict[str, float]
    ema_network: str
    iteration: Iteration
    validate: Validate | None = None
    finish: Finish | None = None
    # What the iteration's batches come from; None: the configured data's train split (clean
    # images under "image"). A measurement-only recipe brings its own (measurements, anchors).
    train_set: Any = None
    # Steps at the start of training in which a network's learning rate is 0 (it waits while the
    # others catch up, e.g. s_psi learning a warm-started mapper's score before moving it).
    frozen_until: dict[str, int] = field(default_factory=dict)
