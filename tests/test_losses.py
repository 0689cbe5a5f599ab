"""The DAVI objectives: the IKL surrogate's gradient equals its formula; DSM; the mapper terms."""

import pytest
import torch

from davi.config import OperatorConfig, PriorConfig
from davi.training.losses import DDPMLoss, IKLLoss, consistency_loss, regression_loss
from davi.operators import build_operator
from davi.models.prior import Schedule, ScorePrior, build_scheduler


class LinearEps(ScorePrior):
    """A tiny 'network' eps(x_t, t) = W x_t * c(t) + b: smooth, t-dependent, float64."""

    def __init__(self, schedule, dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.schedule = schedule
        self.W = torch.randn(dim, dim, generator=g, dtype=torch.float64) * 0.3
        self.b = torch.randn(dim, generator=g, dtype=torch.float64) * 0.1

    def eps(self, x_t, t):
        flat = x_t.flatten(1)
        scale = 1 + t.to(flat).view(-1, 1) / 1000
        return (flat @ self.W.T * scale + self.b).view_as(x_t)


def _schedule():
    return Schedule(build_scheduler(PriorConfig()).alphas_cumprod)


def test_ikl_gradient_equals_weighted_score_difference():
    torch.manual_seed(0)
    sched = _schedule()
    shape = (3, 1, 2, 2)
    teacher, student = LinearEps(sched, 4, 1), LinearEps(sched, 4, 2)
    x_hat = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([5, 300, 900])
    noise = torch.randn(shape, dtype=torch.float64)
    ikl = IKLLoss(sched, 1000)
    loss, _ = ikl(x_hat, teacher.eps, student.eps, t=t, noise=noise)
    (grad,) = torch.autograd.grad(loss, x_hat)
    x_t = sched.q_sample(x_hat.detach(), t, noise)
    expected = ikl.weight(t, x_t) * (student.score(x_t, t) - teacher.score(x_t, t)) / x_hat.numel()
    # loss is computed in float32 (mixed-precision safe), hence the tolerance
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-9)
    # and it is DAVI's x0 form of the IKL (Lee et al. 2024): snr * (x0_psi - x0_theta)
    spec = sched.snr(t, x_t) * (student.x0(x_t, t) - teacher.x0(x_t, t)) / x_hat.numel()
    torch.testing.assert_close(grad, spec, rtol=1e-5, atol=1e-9)


def test_ikl_vanishes_when_student_equals_teacher_and_samples_t_below_t_max():
    sched = _schedule()
    net = LinearEps(sched, 4, 3)
    x_hat = torch.randn(64, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    seen = []

    def eps(x, t):
        seen.append(t.clone())
        return net.eps(x, t)

    loss, logs = IKLLoss(sched, 400)(x_hat, eps, eps)
    (grad,) = torch.autograd.grad(loss, x_hat)
    assert grad.abs().max() == 0 and logs["ikl/eps_gap"] == 0
    assert max(int(t.max()) for t in seen) < 400


def test_ikl_descent_moves_samples_towards_the_teacher_mode():
    # Teacher: N(0, I) prior (eps = sqrt(1-ab) x_t); student: samples sit at +2 (N(2, I)).
    sched = _schedule()

    def gauss_eps(mean):
        def eps(x_t, t):
            ab = sched.alpha_bar(t, x_t)
            return (1 - ab).sqrt() * (x_t - ab.sqrt() * mean)
        return eps

    x_hat = torch.full((256, 1, 1, 1), 2.0, dtype=torch.float64, requires_grad=True)
    loss, _ = IKLLoss(sched, 1000)(x_hat, gauss_eps(0.0), gauss_eps(2.0))
    (grad,) = torch.autograd.grad(loss, x_hat)
    assert grad.mean() > 0  # gradient descent lowers x_hat, towards the teacher's mean 0


def test_ddpm_loss_is_zero_for_the_true_noise_predictor():
    sched = _schedule()
    loss = DDPMLoss(sched)
    torch.manual_seed(0)
    x0 = torch.randn(8, 1, 4, 4)
    # an oracle that knows x0 recovers the noise exactly
    def oracle(x_t, t):
        ab = sched.alpha_bar(t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
    assert loss(oracle, x0) < 1e-10
    assert loss(lambda x, t: torch.zeros_like(x), x0) > 0.5


def test_ddpm_loss_draws_t_uniformly_over_all_timesteps():
    sched = _schedule()
    seen = []

    def eps(x_t, t):
        seen.append(t.clone())
        return torch.zeros_like(x_t)

    torch.manual_seed(0)
    for _ in range(4):
        DDPMLoss(sched)(eps, torch.zeros(2048, 1, 1, 1))
    t = torch.cat(seen)
    assert t.min() == 0 and t.max() == sched.num_timesteps - 1
    assert abs(t.float().mean().item() - 499.5) < 10  # uniform on {0 .. 999}: mean 499.5, std of the mean ~3
    assert abs((t < 500).float().mean().item() - 0.5) < 0.02


def test_ikl_draws_t_uniformly_below_t_max_and_rejects_a_bad_t_max():
    sched = _schedule()
    seen = []

    def eps(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    torch.manual_seed(0)
    IKLLoss(sched, 400)(torch.zeros(4096, 1, 1, 1), eps, eps)
    t = torch.cat(seen)
    assert t.min() == 0 and t.max() == 399 and abs(t.float().mean().item() - 199.5) < 8
    for bad in (0, 1001, -5):
        with pytest.raises(ValueError, match=rf"davi.t_ikl must be in \[1, 1000\], got {bad}"):
            IKLLoss(sched, bad)
    IKLLoss(sched, 1), IKLLoss(sched, 1000)  # the ends are valid


def test_regression_loss_is_the_mean_squared_error():
    g = torch.Generator().manual_seed(0)
    x0, x_hat = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    assert regression_loss(x0, x_hat).item() == pytest.approx(float(((x0 - x_hat) ** 2).mean()), rel=1e-6)


def test_consistency_loss_compares_a_of_x_hat_with_y_for_sr4():
    """mse(y, A x_hat) with A = 4x4 block average (SR x4): computed by hand, and zero for an x_hat that
    differs from every lift of y but has the right block means."""
    op = build_operator(OperatorConfig(name="sr", scale=4, sigma_y=0.0), 16, 1)
    g = torch.Generator().manual_seed(0)
    x_hat = torch.randn(3, 1, 16, 16, generator=g)
    y = torch.randn(3, 1, 4, 4, generator=g)
    a_x = x_hat.double().numpy().reshape(3, 1, 4, 4, 4, 4).mean(axis=(3, 5))
    want = float(((a_x - y.double().numpy()) ** 2).mean())
    assert consistency_loss(op, y, x_hat).item() == pytest.approx(want, rel=1e-6)
    # an image whose 4x4 blocks average to y but is far from lift(y): zero-mean texture inside each block
    texture = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2)  # zero mean over a 4x4 block
    consistent = y.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3) + 3 * texture.repeat(4, 4)
    assert consistency_loss(op, y, consistent).item() < 1e-12
    assert (consistent - op.lift(y)).abs().mean() > 1  # a loss comparing with lift(y) would not be 0
