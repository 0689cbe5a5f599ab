"""The mapper: bridge schedule, PPB inputs, one-step restoration, save/load."""

import numpy as np
import torch

from davi.models.mapper import Mapper, PPBSampler, bridge_schedule
from davi.models.prior import DiffusionPrior

T = 1000


def i2sb_schedule(n: int = T, beta_start: float = 1e-4, beta_end: float = 0.02):
    """The symmetric I2SB schedule written out in numpy, independently of davi.models.mapper (Liu et al.
    2023, I2SB): betas linear in sqrt space, first half then its mirror; std_fwd = sqrt(cumsum),
    std_bwd = sqrt(reverse cumsum); mu_x0 = std_bwd^2 / (std_fwd^2 + std_bwd^2), mu_x1 = 1 - mu_x0."""
    b = np.linspace(beta_start ** 0.5, beta_end ** 0.5, n) ** 2
    b = np.concatenate([b[: n // 2], b[: n // 2][::-1]])
    var_fwd = np.array([b[: i + 1].sum() for i in range(n)])
    var_bwd = np.array([b[i:].sum() for i in range(n)])
    return np.sqrt(var_fwd), np.sqrt(var_bwd), var_bwd / (var_fwd + var_bwd), var_fwd / (var_fwd + var_bwd)


def ddpm_alphas_cumprod(n: int = T) -> np.ndarray:
    return np.cumprod(1 - np.linspace(1e-4, 0.02, n))


def _mapper(prior_dir, h=0.1, tanh=False):
    prior = DiffusionPrior.from_pretrained(str(prior_dir))
    return Mapper.from_prior_unet(prior.unet, h=h, tanh=tanh), prior


def test_bridge_schedule_is_the_symmetric_i2sb_schedule(tiny_prior_dir):
    want = i2sb_schedule()
    for got, expected in zip(bridge_schedule(T), want):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=0)
    mapper, _ = _mapper(tiny_prior_dir)
    np.testing.assert_allclose(mapper.std_fwd.numpy(), want[0], rtol=1e-6)  # the buffers the mapper uses
    np.testing.assert_allclose(mapper.mu_x0.numpy(), want[2], rtol=1e-6, atol=1e-7)


def test_bridge_schedule_ends_at_the_data_and_at_the_measurement():
    std_fwd, std_bwd, mu_x0, mu_x1 = bridge_schedule(1000)
    torch.testing.assert_close(mu_x0 + mu_x1, torch.ones(1000, dtype=torch.float64))
    assert mu_x0[0] > 0.99 and mu_x1[-1] > 0.99  # a = 0: the clean image; a = T-1: the measurement
    assert (std_fwd.diff() > 0).all() and (std_bwd.diff() < 0).all()
    torch.testing.assert_close(std_fwd, std_bwd.flip(0))  # symmetric schedule


def test_ppb_draws_near_the_measurement_end_and_ablation_pins_a(tiny_prior_dir):
    mapper, prior = _mapper(tiny_prior_dir)
    ppb = PPBSampler(mapper, prior.schedule.alphas_cumprod, h=0.1)
    torch.manual_seed(0)
    a = ppb.sample_a(20000, "cpu").float()
    assert abs(a.mean().item() / 1000 - 0.75) < 0.01  # Beta(3, 1) has mean 3/4
    assert a.min() >= 0 and a.max() <= 999
    x0, lifted = torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8)
    off = PPBSampler(mapper, prior.schedule.alphas_cumprod, h=0.0, enabled=False)
    x_a, a = off(x0, lifted)
    assert (a == 999).all()
    torch.testing.assert_close(x_a, lifted, atol=1e-3, rtol=0)  # x_{T-1} = lift(y) (+ h z, here h = 0)


def test_ppb_input_is_the_bridge_formula_at_a_fixed_seed(tiny_prior_dir):
    """x_a = mu_x0[a] x0 + mu_x1[a] lift(y) + h (1 - alpha_bar[a]) z, a = floor(T * Beta(3, 1)) (DAVI, Lee
    et al. 2024, PPB), computed by hand from the numpy schedules with the same random draws."""
    mapper, prior = _mapper(tiny_prior_dir)
    h = 0.3
    ppb = PPBSampler(mapper, prior.schedule.alphas_cumprod, h=h)
    g = torch.Generator().manual_seed(1)
    x0, lifted = torch.rand(64, 1, 16, 16, generator=g) * 2 - 1, torch.rand(64, 1, 16, 16, generator=g) * 2 - 1
    torch.manual_seed(7)
    x_a, a = ppb(x0, lifted)
    torch.manual_seed(7)  # the same draws, in the same order: Beta(3, 1) for a, then z
    a_hand = np.minimum((torch.distributions.Beta(3.0, 1.0).sample((64,)).numpy() * T).astype(int), T - 1)
    z = torch.randn(x0.shape).numpy().astype(np.float64)
    _, _, mu_x0, mu_x1 = i2sb_schedule()
    ab = ddpm_alphas_cumprod()
    np.testing.assert_array_equal(a.numpy(), a_hand)
    c = lambda v: v[a_hand][:, None, None, None]  # noqa: E731
    want = c(mu_x0) * x0.double().numpy() + c(mu_x1) * lifted.double().numpy() + h * c(1 - ab) * z
    np.testing.assert_allclose(x_a.double().numpy(), want, atol=2e-6, rtol=0)
    # the noise scale on its own: recovered z is standard normal for every a (independent of RNG order)
    z_rec = (x_a.double().numpy() - c(mu_x0) * x0.double().numpy() - c(mu_x1) * lifted.double().numpy()) / (h * c(1 - ab))
    assert abs(z_rec.std() - 1) < 0.02 and abs(z_rec.mean()) < 0.02
    assert a_hand.min() < 500 < a_hand.max()  # the draws cover states far from the measurement end too


def test_restore_is_the_mapper_at_the_last_step_on_the_noised_lift(tiny_prior_dir):
    """restore(l, z) = I_phi(l + h z, T - 1) = (l + h z) - std_fwd[T-1] net(l + h z, T - 1)."""
    mapper, _ = _mapper(tiny_prior_dir, h=0.25)
    g = torch.Generator().manual_seed(0)
    lifted, z = torch.randn(2, 1, 32, 32, generator=g), torch.randn(2, 1, 32, 32, generator=g)
    last = torch.full((2,), T - 1)
    std_last = float(i2sb_schedule()[0][-1])
    with torch.no_grad():
        x = lifted + 0.25 * z
        torch.testing.assert_close(mapper.restore(lifted, z), mapper(x, last))
        torch.testing.assert_close(mapper.restore(lifted, z), x - std_last * mapper.net(x, last).sample,
                                   atol=1e-5, rtol=1e-5)
        again = mapper.restore(lifted, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(again, mapper(lifted + 0.25 * torch.randn(lifted.shape, generator=torch.Generator().manual_seed(3)), last))


def test_restore_is_one_network_evaluation_and_z_gives_different_samples(tiny_prior_dir):
    mapper, _ = _mapper(tiny_prior_dir)
    calls = []
    mapper.net.register_forward_hook(lambda *a: calls.append(1))
    lifted = torch.randn(3, 1, 32, 32)
    z1, z2 = torch.randn_like(lifted), torch.randn_like(lifted)
    with torch.no_grad():
        s1, s1b, s2 = mapper.restore(lifted, z1), mapper.restore(lifted, z1), mapper.restore(lifted, z2)
    assert len(calls) == 3
    torch.testing.assert_close(s1, s1b)
    assert (s1 - s2).abs().mean() > 1e-3


def test_bridge_parametrisation(tiny_prior_dir):
    mapper, _ = _mapper(tiny_prior_dir)
    x = torch.randn(2, 1, 32, 32)
    a = torch.tensor([999, 10])
    std_fwd = torch.from_numpy(i2sb_schedule()[0]).float()  # independent of the mapper's buffers
    with torch.no_grad():
        expected = x - std_fwd[a].view(-1, 1, 1, 1) * mapper.net(x, a).sample
        torch.testing.assert_close(mapper(x, a), expected, atol=1e-5, rtol=1e-5)
    squashed, _ = _mapper(tiny_prior_dir, tanh=True)
    with torch.no_grad():
        assert squashed(x * 50, a).abs().max() <= 1


def test_save_and_load_round_trip_with_safetensors(tiny_prior_dir, tmp_path):
    mapper, _ = _mapper(tiny_prior_dir, h=0.3)
    mapper.save_pretrained(str(tmp_path / "m"), safe_serialization=True)
    assert list((tmp_path / "m").glob("*.safetensors")) and not list((tmp_path / "m").glob("*.bin"))
    loaded = Mapper.from_pretrained(str(tmp_path / "m"), use_safetensors=True)
    assert loaded.config.h == 0.3
    x, z = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.restore(x, z), mapper.restore(x, z))


def test_noise_channels_keep_the_prior_weights_and_make_the_spread(tiny_prior_dir):
    prior = DiffusionPrior.from_pretrained(str(tiny_prior_dir))
    plain = Mapper.from_prior_unet(prior.unet, h=0.0, tanh=False)
    noisy = Mapper.from_prior_unet(prior.unet, h=0.0, tanh=False, noise_channels=2)
    c = prior.unet.config.in_channels
    w = noisy.net.conv_in.weight
    assert w.shape[1] == c + 2
    torch.testing.assert_close(w[:, :c], prior.unet.conv_in.weight)
    assert w[:, c:].abs().mean() > 0.1 * w[:, :c].abs().mean()  # not zero: zero is a stationary point
    lifted = torch.randn(3, c, 8, 8, generator=torch.Generator().manual_seed(0))
    assert noisy.z_shape(lifted) == (3, c + 2, 8, 8) and plain.z_shape(lifted) == (3, c, 8, 8)
    with torch.no_grad():
        # h = 0: the plain mapper is deterministic, the noise channels alone make samples differ
        p1, p2 = (plain.restore(lifted, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
        n1, n2 = (noisy.restore(lifted, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
        n1_again = noisy.restore(lifted, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(p1, p2)
    assert float((n1 - n2).abs().max()) > 1e-3
    torch.testing.assert_close(n1, n1_again)  # the generator decides both noises


def test_noise_channels_survive_save_and_load(tiny_prior_dir, tmp_path):
    prior = DiffusionPrior.from_pretrained(str(tiny_prior_dir))
    mapper = Mapper.from_prior_unet(prior.unet, h=0.1, tanh=False, noise_channels=1).eval()
    mapper.save_pretrained(str(tmp_path), safe_serialization=True)
    loaded = Mapper.from_pretrained(str(tmp_path), use_safetensors=True).eval()
    assert loaded.config.noise_channels == 1
    lifted = torch.zeros(2, prior.unet.config.in_channels, 8, 8)
    z = torch.randn(mapper.z_shape(lifted), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.restore(lifted, z), mapper.restore(lifted, z))
