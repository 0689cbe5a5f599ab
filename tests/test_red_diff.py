"""RED-Diff (Mardani et al. 2023) on tiny priors: a closed-form Gaussian prior and a tiny random UNet."""

from __future__ import annotations

import pytest
import torch

from davi.config import OperatorConfig
from davi.operators import build_operator
from davi.models.prior import DiffusionPrior, Schedule, ScorePrior
from davi.solvers.red_diff import RedDiff

RES, CH = 8, 1


def ddpm_alphas_cumprod(T: int = 1000) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


class GaussianPrior(ScorePrior):
    """Exact eps-prediction of the prior N(m, s2 I) diffused by the DDPM schedule; counts its calls."""

    def __init__(self, m: torch.Tensor, s2: float):
        super().__init__()
        self.schedule = Schedule(ddpm_alphas_cumprod())
        self.register_buffer("m", m.double())
        self.s2 = s2
        self.calls: list[tuple[int, list[int]]] = []  # (batch size, timesteps) per evaluation

    def eps(self, x_t, t):
        self.calls.append((x_t.shape[0], t.tolist()))
        ab = self.alpha_bar(t, x_t)
        m = self.m.to(x_t)
        return (1 - ab).sqrt() / (ab * self.s2 + 1 - ab) * (x_t - ab.sqrt() * m)


def tiny_unet_prior() -> DiffusionPrior:
    from diffusers import UNet2DModel

    from davi.models.prior import build_scheduler

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=RES, in_channels=CH, out_channels=CH, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=8)
    return DiffusionPrior(unet, build_scheduler())


def operator(name: str, **kw):
    return build_operator(OperatorConfig(name=name, **kw), RES, CH)


def images(n: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(n, CH, RES, RES, generator=g, dtype=dtype)).clamp(-1, 1)


def measure(op, x, seed: int = 1):
    return op.measure(x, generator=torch.Generator().manual_seed(seed))


def test_batch_independence_and_seeds():
    prior, op = tiny_unet_prior(), operator("sr", scale=2)
    y = measure(op, images(3))
    solver = RedDiff(prior, op, steps=5, lam=0.5)
    together = solver(y)  # default seeds: range(B)
    alone = torch.cat([solver(y[i: i + 1], seeds=[i]) for i in range(3)])
    assert together.dtype == torch.float64 and together.shape == (3, CH, RES, RES)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    # Reordering the batch with its seeds permutes the results; a different seed changes them.
    swapped = solver(y[[2, 0, 1]], seeds=[2, 0, 1])
    torch.testing.assert_close(swapped, together[[2, 0, 1]], rtol=0, atol=1e-6)
    changed = solver(y, seeds=[0, 1, 7])
    torch.testing.assert_close(changed[:2], together[:2], rtol=0, atol=1e-6)
    assert (changed[2] - together[2]).abs().max() > 1e-4


def test_one_prior_evaluation_per_step_on_descending_timesteps():
    prior = GaussianPrior(torch.zeros(CH, RES, RES), 0.1)
    op = operator("denoise")
    solver = RedDiff(prior, op, steps=7)
    solver(measure(op, images(2)))
    assert len(prior.calls) == 7 == solver.nfe_per_sample
    ts = [c[1][0] for c in prior.calls]
    assert all(c[0] == 2 and len(set(c[1])) == 1 for c in prior.calls)
    assert ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)


def test_prior_gets_no_gradient_and_y_is_untouched():
    prior, op = tiny_unet_prior(), operator("box_inpaint")
    y = measure(op, images(2, dtype=torch.float32))
    y_before = y.clone()
    steps = []
    with torch.no_grad():  # the solver turns autograd on for itself
        out = RedDiff(prior, op, steps=4)(y, callback=lambda k, t, mu: steps.append((k, t)))
    assert out.dtype == torch.float32 and out.shape == (2, CH, RES, RES) and torch.isfinite(out).all()
    assert not out.requires_grad
    assert all(p.grad is None and not p.requires_grad for p in prior.parameters())
    assert torch.equal(y, y_before)
    assert [k for k, _ in steps] == [0, 1, 2, 3]


def test_without_regulariser_denoise_fits_the_measurement():
    prior = GaussianPrior(torch.zeros(CH, RES, RES), 0.1)
    op = operator("denoise")
    y = measure(op, images(2))
    solver = RedDiff(prior, op, steps=300, lam=0.0)
    # Started at y (pinv of the identity) the data term is already at its minimum: it stays there.
    torch.testing.assert_close(solver(y), y, rtol=0, atol=1e-12)
    # Started far away, Adam on the data term alone converges to y.
    solver._init = lambda y: torch.zeros_like(y)
    out = solver(y)
    assert (out - y).norm() < 0.05 * y.norm()


def test_gaussian_prior_pulls_toward_its_mean_with_the_inverse_snr_weight():
    # For N(m, s2 I) the regulariser's expected gradient is lam * (1 - ab) / (ab s2 + 1 - ab) * (mu - m)
    # (per pixel, before the 1/npix): at mid-range t, where ab s2 << 1 - ab, that is lam * (mu - m),
    # so with the denoise operator mu hovers around (y + lam m) / (1 + lam). A flipped sign, or a
    # weight other than the inverse SNR, puts it somewhere else.
    m = torch.full((CH, RES, RES), 0.6)
    prior = GaussianPrior(m, 0.02)
    op = operator("denoise", sigma_y=0.2)
    y = measure(op, images(2))
    gap = (y - m).flatten(1).norm(dim=1)
    for lam in (0.5, 1.0):
        mid = []
        keep = lambda k, t, mu: mid.append(mu.clone()) if 300 <= t <= 700 else None  # noqa: E731
        RedDiff(prior, op, steps=100, lam=lam)(y, seeds=[3, 4], callback=keep)
        target = (y + lam * m) / (1 + lam)
        err = (torch.stack(mid).mean(0) - target).flatten(1).norm(dim=1) / gap
        assert (err < 0.03).all(), (lam, err)


def test_final_estimate_moves_from_y_toward_a_narrow_prior_mean():
    # As t -> 0 the pull fades to lam * (1 - ab) / s2; a narrow prior still wins at the end.
    m = torch.full((CH, RES, RES), 0.6)
    prior = GaussianPrior(m, 1e-3)
    op = operator("denoise", sigma_y=0.2)
    y = measure(op, images(2))
    dist = {}
    for lam in (0.0, 1.0):
        out = RedDiff(prior, op, steps=100, lam=lam)(y, seeds=[3, 4])
        dist[lam] = (out - m).flatten(1).norm(dim=1) / (y - m).flatten(1).norm(dim=1)
        if lam > 0:
            # Every image moved from y toward m (positive projection on m - y).
            assert (((out - y) * (m - y)).flatten(1).sum(1) > 0).all()
    torch.testing.assert_close(dist[0.0], torch.ones(2, dtype=torch.float64))
    assert (dist[1.0] < 0.8).all(), dist


def test_sr_result_is_more_consistent_than_its_lift_init():
    # (pinv(y) is the nearest upsampling, already exactly consistent; the bilinear lift is not.)
    prior, op = GaussianPrior(torch.zeros(CH, RES, RES), 0.25), operator("sr", scale=2)
    y = measure(op, images(2))
    out = RedDiff(prior, op, steps=50, lam=0.25, init="lift")(y)
    resid = lambda x: (y - op(x)).flatten(1).norm(dim=1)  # noqa: E731
    assert (resid(out) < 0.6 * resid(op.lift(y))).all(), (resid(out), resid(op.lift(y)))
    # The pinv init starts exactly consistent; the prior moves it, and the data term keeps its residual
    # at the noise level (rms of order sigma_y), not at 0 (nothing happened) or far above (data term lost).
    start = op.pinv(y)
    assert resid(start).max() < 1e-12
    out = RedDiff(prior, op, steps=50, lam=0.25, init="pinv")(y)
    assert ((out - start).flatten(1).norm(dim=1) > 0.2 * start.flatten(1).norm(dim=1)).all()
    rms = resid(out) / y[0].numel() ** 0.5
    assert ((0.2 * op.sigma_y < rms) & (rms < 2 * op.sigma_y)).all(), rms / op.sigma_y
    assert (resid(out) < 0.6 * resid(op.lift(y))).all()


@pytest.mark.parametrize("make, pattern", [
    (lambda p, o: RedDiff(p, o, steps=0), r"RedDiff steps must be an integer >= 1, got 0"),
    (lambda p, o: RedDiff(p, o, init="zeros"), r"RedDiff init must be 'pinv' or 'lift', got 'zeros'"),
    (lambda p, o: RedDiff(p, o, t_max=1000), r"need 0 <= t_min <= t_max <= 999, got t_min=0, t_max=1000"),
    (lambda p, o: RedDiff(p, o, t_max=10, t_min=20), r"got t_min=20, t_max=10"),
])
def test_bad_arguments_are_one_line_errors(make, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        make(GaussianPrior(torch.zeros(CH, RES, RES), 0.1), operator("sr", scale=2))
    assert "\n" not in str(e.value)


def test_bad_call_arguments_are_one_line_errors():
    op = operator("sr", scale=2)
    solver = RedDiff(GaussianPrior(torch.zeros(CH, RES, RES), 0.1), op, steps=2)
    y = measure(op, images(2))
    with pytest.raises(ValueError, match="got 3 seeds for a batch of 2 measurements"):
        solver(y, seeds=[0, 1, 2])
    with pytest.raises(ValueError, match=r"warm-start image must have shape \(2, 1, 8, 8\), got \(2, 1, 4, 4\)"):
        solver(y, init=y)
    with pytest.raises(ValueError, match="measurement must be floating point, got torch.int64"):
        solver(torch.zeros(2, CH, 4, 4, dtype=torch.long))
    # a warm start is where the estimate starts: with t_max = t_min = 0 and lam = 0 one Adam step moves
    # every pixel by at most lr
    warm = torch.full((2, CH, RES, RES), 0.3, dtype=torch.float64)
    out = RedDiff(GaussianPrior(torch.zeros(CH, RES, RES), 0.1), op, steps=1, lam=0.0,
                  t_max=0)(y, init=warm)
    assert (out - warm).abs().max() <= 0.25 * 1.001  # RedDiff's default lr


def test_wrong_measurement_shape_is_a_one_line_error():
    prior, op = GaussianPrior(torch.zeros(CH, RES, RES), 0.1), operator("sr", scale=2)
    solver = RedDiff(prior, op, steps=2)
    y_bad = torch.zeros(2, CH, RES, RES)  # image-sized, not the 4x4 measurement
    with pytest.raises(ValueError) as e:
        solver(y_bad)
    msg = str(e.value)
    assert "\n" not in msg and "(2, 1, 4, 4)" in msg and "(2, 1, 8, 8)" in msg


@pytest.mark.parametrize("section, message", [
    ({"num_steps": 0}, r"red_diff.num_steps must be >= 1, got 0"),
    ({"init": "zeros"}, r"red_diff.init must be 'pinv' or 'lift', got 'zeros'"),
    ({"steps": 5}, r"red_diff.steps: unknown key"),
])
def test_a_red_diff_section_at_fault_is_named_by_its_config_key(section, message):
    from davi.builders import red_diff_settings
    from davi.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        red_diff_settings(section)


def test_red_diff_settings_map_the_config_names_to_the_solver_arguments():
    from davi.builders import red_diff_settings

    s = red_diff_settings({"num_steps": 7, "adam_beta2": 0.5}, lr=0.1, lam=None)
    assert s == {"steps": 7, "lr": 0.1, "lam": 0.25, "init": "pinv", "obs_weight": 1.0, "betas": (0.9, 0.5)}
