"""What tells one family member's degradation from another's, in the form a network can read.

A mapper trained on a family of operators (``operator.family``: one operator, its parameters and its
sigma_y drawn per image) must know which member measured ``y``: lift(y) alone does not say how blurred,
how noisy or where the hole is. ``mapper.condition`` chooses what it sees beside its input ``x_a``:

* ``maps``: extra input channels, the measurement's **coverage** ``A^T A 1`` per pixel (the mask for
  inpainting, ``1 / s^2`` for SR by ``s``, about 1 for a blur: what was measured, and how strongly) and a
  constant map of ``log sigma_y`` normalised over the family's range;
* ``embedding``: the maps, and the family's **condition vector** (one-hot member, its parameters
  normalised within their ranges, normalised ``log sigma_y``; ``OperatorFamily.condition_vector``)
  projected into the UNet's time embedding, which every residual block reads (the way class-conditional
  diffusion UNets are conditioned, Dhariwal & Nichol 2021). The maps cannot tell a wide blur from a
  narrow one (both cover every pixel once); the vector can.

Both start at zero weight (the new input channels and the projection), so a conditioned network warm
started from the prior computes exactly what the prior's UNet does until it learns to read them.
s_psi, whose optimum must be the score of q(x | y) for every member, sees the maps and the vector as
input channels (:func:`score_channels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

CONDITIONS = ("none", "maps", "embedding")


@dataclass(frozen=True)
class Condition:
    """The conditioning of one batch: ``maps`` (B, C + 1, H, W) input channels and, for the embedding
    form, ``vector`` (B, cond_dim)."""

    maps: torch.Tensor
    vector: torch.Tensor | None = None

    def to(self, like: torch.Tensor) -> "Condition":
        vector = None if self.vector is None else self.vector.to(like)
        return Condition(self.maps.to(like), vector)

    def repeat(self, k: int) -> "Condition":
        """The condition of ``k`` copies of the batch, stacked along the batch axis."""
        vector = None if self.vector is None else self.vector.repeat(k, 1)
        return Condition(self.maps.repeat(k, 1, 1, 1), vector)


def map_channels(image_channels: int) -> int:
    """Input channels the ``maps`` form adds: the coverage per image channel, then log sigma_y."""
    return image_channels + 1


def coverage(operator, like: torch.Tensor) -> torch.Tensor:
    """``A^T A 1`` for one image of ``like``'s shape (1, C, H, W): how strongly each pixel is measured."""
    ones = torch.ones((1, *like.shape[1:]), dtype=torch.float64, device=like.device)
    return operator.adjoint(operator(ones)).to(like.dtype)


def family_condition(family, operators: Sequence, like: torch.Tensor, embedding: bool) -> Condition:
    """The condition of a batch whose image ``i`` was measured by ``operators[i]`` (a member of ``family``);
    ``like``: a (B, C, H, W) tensor giving the batch's shape, device and dtype."""
    if len(operators) != like.shape[0]:
        raise ValueError(f"{len(operators)} operators for a batch of {like.shape[0]} images")
    vectors = torch.stack([family.condition_vector(op).to(like) for op in operators])
    # a restore batch shares one operator object: its coverage is computed once
    covers: dict[int, torch.Tensor] = {}
    for op in operators:
        if id(op) not in covers:
            covers[id(op)] = coverage(op, like)
    cover = torch.cat([covers[id(op)] for op in operators])
    log_sigma = vectors[:, -1].view(-1, 1, 1, 1).expand(-1, 1, *like.shape[2:])
    return Condition(torch.cat([cover, log_sigma], 1), vectors if embedding else None)


def score_channels(image_channels: int, cond_dim: int) -> int:
    """Extra input channels of a family's s_psi: the maps, then the condition vector as constant maps."""
    return map_channels(image_channels) + cond_dim


def score_inputs(condition: Condition, family_vector: torch.Tensor) -> torch.Tensor:
    """s_psi's extra channels for ``condition``: its maps and ``family_vector`` (B, cond_dim) broadcast."""
    h, w = condition.maps.shape[2:]
    vec = family_vector.to(condition.maps).view(*family_vector.shape, 1, 1).expand(-1, -1, h, w)
    return torch.cat([condition.maps, vec], 1)
