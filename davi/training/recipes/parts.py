"""Pieces the DAVI-family recipes share (paired, sampler, measurement-only): the implicit score
network's updates and its frozen evaluation inside the IKL (DAVI, Lee et al. 2024, Alg. 1)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from davi.training.losses import consistency_loss
from davi.training.recipe import Update


def eps_of(net, accelerator, channels: int, frozen: bool = False, cond=None):
    """``eps(x_t, t)`` of a UNet (its first ``channels`` outputs) under the run's autocast;
    ``frozen``: evaluated without a graph (s_psi inside the mapper's IKL term); ``cond``: the
    network's input as a function of (x_t, t), for a measurement-conditioned s_psi (score_condition)."""

    def eps(x_t, t):
        net_in = x_t if cond is None else cond(x_t, t)
        with torch.no_grad() if frozen else nullcontext(), accelerator.autocast():
            return net(net_in, t).sample[:, :channels]

    return eps


def score_updates(nets, x_hat, dsm, steps: int, accelerator, channels: int, cond=None, t_max=None):
    """s_psi learns the score of the mapper's current samples: ``steps`` DSM updates on
    stopgrad(x_hat), fresh t and noise each (given ``cond``, the score of q(x | y); ``t_max``: per-image
    horizons, the IKL's own)."""
    eps = eps_of(nets["score"], accelerator, channels, cond=cond)
    for _ in range(steps):
        yield Update("score", "score", dsm(eps, x_hat.detach(), t_max=t_max))


def ikl_term(ikl, x_hat, teacher_eps, nets, accelerator, channels: int, cond=None, t_max=None):
    """(IKL surrogate loss, logs) against the frozen prior, with s_psi frozen for this update."""
    student = eps_of(accelerator.unwrap_model(nets["score"]), accelerator, channels, frozen=True, cond=cond)
    loss, logs = ikl(x_hat, teacher_eps, student, t_max=t_max)
    return loss, {**logs, "loss/ikl": loss.item()}


def ikl_and_consistency(dc, ikl, x_hat, y, operator, teacher_eps, nets, accelerator, channels: int, cond=None):
    """(loss, logs) of the mapper's measurement-only terms, ``lambda_ikl * IKL + lambda_con *
    mse(y, A x_hat)``, which every DAVI-family objective shares; each skipped at weight 0 (IKL also
    without s_psi)."""
    logs, loss = {}, x_hat.new_zeros(()).float()
    if "score" in nets:
        l_ikl, logs = ikl_term(ikl, x_hat, teacher_eps, nets, accelerator, channels, cond)
        loss = loss + dc.lambda_ikl * l_ikl
    if dc.lambda_con != 0:
        l_con = consistency_loss(operator, y, x_hat)
        loss = loss + dc.lambda_con * l_con
        logs["loss/consistency"] = l_con.item()
    return loss, logs


def score_condition(dc, schedule, lifted: torch.Tensor, center=None, extra: torch.Tensor | None = None):
    """What s_psi sees, as a function of (x_t, t): None (x_t alone: the score of the mapper's samples
    pooled over all y) or, with ``davi.score_condition``, the input of a score of q(x_t | y):

    * ``lift``: x_t and lift(y);
    * ``center``: x_t - sqrt(ab_t) c and c, where c = ``center()`` is the mapper's output for this
      measurement without its noise. A function of y alone, so the score is still that of q(x_t | y),
      but s_psi now sees the sample's deviation from c: for a posterior whose spread hardly depends
      on y (exactly so for a Gaussian prior and a linear operator) one distribution to learn, not
      one per measurement.

    ``extra`` (B, k, H, W), appended to either: what tells a family's operators apart
    (davi.models.conditioning.score_inputs), since q(x | y) depends on the operator and sigma_y too.
    """
    if dc.score_condition == "none":
        return None
    tail = [] if extra is None else [extra]
    if dc.score_condition == "lift":
        return lambda x_t, t: torch.cat([x_t, lifted.to(x_t.dtype), *(e.to(x_t.dtype) for e in tail)], 1)
    c = center()

    def centered(x_t, t):
        c_t = schedule.alpha_bar(t, x_t).sqrt() * c.to(x_t.dtype)
        return torch.cat([x_t - c_t, c.to(x_t.dtype), *(e.to(x_t.dtype) for e in tail)], 1)

    return centered


@torch.no_grad()
def mapper_center(nets, accelerator, x_mean: torch.Tensor, a: torch.Tensor, condition=None) -> torch.Tensor:
    """The mapper's output for the noise-free bridge input ``x_mean`` (and zero noise channels)."""
    mapper = accelerator.unwrap_model(nets["mapper"])
    noise = x_mean.new_zeros(mapper.noise_shape(x_mean)) if mapper.config.noise_channels else None
    return nets["mapper"](x_mean, a, noise, condition)


def measure_and_map(nets, accelerator, dc, schedule, operator, ppb, x0: torch.Tensor):
    """Measure ``x0``, draw the bridge input and run the mapper once (its graph kept for the mapper's
    update): ``(y, lift(y), x_hat, cond)``, ``cond`` the s_psi conditioning of ``davi.score_condition``."""
    y = operator.measure(x0)
    lifted = operator.lift(y)
    x_a, a = ppb(x0, lifted)
    x_hat = nets["mapper"](x_a, a)
    cond = score_condition(dc, schedule, lifted, lambda: mapper_center(nets, accelerator, ppb.mean(x0, lifted, a), a))
    return y, lifted, x_hat, cond
