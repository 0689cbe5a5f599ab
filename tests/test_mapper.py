"""The mapper: bridge schedule, PPB inputs, one-step restoration, save/load."""

import torch

from davi.mapper import Mapper, PPBSampler, bridge_schedule
from davi.prior import DiffusionPrior


def _mapper(prior_dir, h=0.1, tanh=False):
    prior = DiffusionPrior.from_pretrained(str(prior_dir))
    return Mapper.from_prior_unet(prior.unet, h=h, tanh=tanh), prior


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
    with torch.no_grad():
        expected = x - mapper.std_fwd[a].view(-1, 1, 1, 1) * mapper.net(x, a).sample
        torch.testing.assert_close(mapper(x, a), expected)
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
