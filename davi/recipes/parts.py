"""Pieces the DAVI-family recipes share (paired, sampler, measurement-only): the implicit score
network's updates and its frozen evaluation inside the IKL (DAVI, Lee et al. 2024, Alg. 1)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from davi.losses import consistency_loss
from davi.recipe import Update


def eps_of(net, accelerator, channels: int, frozen: bool = False):
    """``eps(x_t, t)`` of a UNet (its first ``channels`` outputs) under the run's autocast;
    ``frozen``: evaluated without a graph (s_psi inside the mapper's IKL term)."""

    def eps(x_t, t):
        with torch.no_grad() if frozen else nullcontext(), accelerator.autocast():
            return net(x_t, t).sample[:, :channels]

    return eps


def score_updates(nets, x_hat, dsm, steps: int, accelerator, channels: int):
    """s_psi learns the score of the mapper's current samples: ``steps`` DSM updates on
    stopgrad(x_hat), fresh t and noise each."""
    eps = eps_of(nets["score"], accelerator, channels)
    for _ in range(steps):
        yield Update("score", "score", dsm(eps, x_hat.detach()))


def ikl_term(ikl, x_hat, teacher_eps, nets, accelerator, channels: int):
    """(IKL surrogate loss, logs) against the frozen prior, with s_psi frozen for this update."""
    student = eps_of(accelerator.unwrap_model(nets["score"]), accelerator, channels, frozen=True)
    loss, logs = ikl(x_hat, teacher_eps, student)
    return loss, {**logs, "loss/ikl": loss.item()}


def ikl_and_consistency(dc, ikl, x_hat, y, operator, teacher_eps, nets, accelerator, channels: int):
    """(loss, logs) of the mapper's measurement-only terms, ``lambda_ikl * IKL + lambda_con *
    mse(y, A x_hat)``, which every DAVI-family objective shares; each skipped at weight 0 (IKL also
    without s_psi)."""
    logs, loss = {}, x_hat.new_zeros(()).float()
    if "score" in nets:
        l_ikl, logs = ikl_term(ikl, x_hat, teacher_eps, nets, accelerator, channels)
        loss = loss + dc.lambda_ikl * l_ikl
    if dc.lambda_con != 0:
        l_con = consistency_loss(operator, y, x_hat)
        loss = loss + dc.lambda_con * l_con
        logs["loss/consistency"] = l_con.item()
    return loss, logs
