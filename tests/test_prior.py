"""The frozen diffusion prior: DDPM formulas (Ho et al. 2020), freezing, dtype, learned variance,
safetensors round trip, clear PriorErrors, sampling, and the bundled prior."""

from __future__ import annotations

import pytest
import torch

from davi.config import DataConfig, PriorConfig
from davi.models.prior import (BUNDLED_PRIORS, DiffusionPrior, PriorError, Schedule, ScorePrior, build_scheduler, build_unet,
                        sample, save_prior)

TINY = PriorConfig(block_out_channels=[8, 16], attention_levels=[], attention_head_dim=8)
RES = 16


def tiny_unet(channels: int = 1, out_channels: int | None = None, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    if out_channels is None:
        unet = build_unet(TINY, DataConfig(resolution=RES, channels=channels))
    else:
        unet = UNet2DModel(sample_size=RES, in_channels=channels, out_channels=out_channels,
                           block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1, attention_head_dim=8,
                           norm_num_groups=8)
    return unet


def ddpm_scheduler():
    return build_scheduler(PriorConfig())  # T = 1000, linear betas 1e-4 .. 0.02


@pytest.fixture(scope="module")
def prior():
    return DiffusionPrior(tiny_unet(), ddpm_scheduler(), identity="tiny")


def reference_alpha_bar() -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


T_VALUES = torch.tensor([0, 1, 250, 999])


def test_alpha_bar_is_the_schedulers_and_the_spec(prior):
    x = torch.zeros(4, 1, RES, RES, dtype=torch.float64)
    ab = prior.alpha_bar(T_VALUES, x).flatten()
    assert ab.dtype == torch.float64
    assert torch.allclose(ab, prior.scheduler.alphas_cumprod[T_VALUES].double(), rtol=0, atol=1e-7)
    assert torch.allclose(ab, reference_alpha_bar()[T_VALUES], rtol=1e-5, atol=0)
    assert prior.num_timesteps == 1000
    assert prior.alpha_bar(T_VALUES, x.float()).shape == (4, 1, 1, 1)


def test_build_scheduler_is_the_spec_schedule():
    ab = build_scheduler(PriorConfig()).alphas_cumprod.double()
    assert ab.shape == (1000,) and torch.allclose(ab, reference_alpha_bar(), rtol=1e-5, atol=0)


def test_snr_formula(prior):
    x = torch.zeros(4, 1, RES, RES, dtype=torch.float64)
    # The scheduler's own (float32) alpha_bar: 1 - ab at t = 0 carries float32 rounding (~1e-4 relative),
    # and the prior must use the values the network was trained with.
    ab = prior.scheduler.alphas_cumprod[T_VALUES].double()
    assert torch.allclose(prior.snr(T_VALUES, x).flatten(), (ab / (1 - ab)).sqrt(), rtol=1e-12)
    ref = reference_alpha_bar()[T_VALUES]
    assert torch.allclose(prior.snr(T_VALUES, x).flatten(), (ref / (1 - ref)).sqrt(), rtol=1e-3)
    # Monotone: noise grows with t.
    snr = prior.snr(torch.arange(1000), torch.zeros(1000, 1, 1, 1, dtype=torch.float64)).flatten()
    assert (snr[1:] < snr[:-1]).all()


def test_score_and_x0_follow_from_eps(prior):
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 1, RES, RES, generator=g)
    eps = prior.eps(x_t, T_VALUES)
    assert eps.abs().mean() > 1e-3  # a random network, not zeros
    ab = prior.scheduler.alphas_cumprod[T_VALUES].view(-1, 1, 1, 1).float()
    assert torch.allclose(prior.score(x_t, T_VALUES), -eps / (1 - ab).sqrt(), rtol=1e-5, atol=1e-5)
    assert torch.allclose(prior.x0(x_t, T_VALUES), (x_t - (1 - ab).sqrt() * eps) / ab.sqrt(), rtol=1e-4, atol=1e-4)


class StubPrior(ScorePrior):
    """A ScorePrior whose eps is a fixed tensor: the true noise of a q_sample."""

    def __init__(self, noise: torch.Tensor):
        super().__init__()
        self.schedule = Schedule(reference_alpha_bar())
        self.noise = noise

    def eps(self, x_t, t):
        return self.noise


def test_q_sample_then_x0_with_the_true_noise_recovers_x0():
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    stub = StubPrior(noise)
    t = torch.tensor([0, 10, 500, 999])
    x_t = stub.q_sample(x0, t, noise)
    ab = reference_alpha_bar()[t].view(-1, 1, 1, 1)
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise, rtol=0, atol=1e-12)
    assert torch.allclose(stub.x0(x_t, t), x0, rtol=0, atol=1e-9)
    assert torch.allclose(stub.score(x_t, t), -noise / (1 - ab).sqrt(), rtol=0, atol=1e-12)
    # The wrong noise does not recover x0.
    assert not torch.allclose(StubPrior(-noise).x0(x_t, t), x0, atol=1e-3)


def test_prior_is_frozen(prior):
    assert not any(p.requires_grad for p in prior.parameters())
    prior.train()
    assert not prior.training and not prior.unet.training
    prior.train(True)
    assert not prior.unet.training
    # Gradients reach the input, never the weights.
    x = torch.randn(2, 1, RES, RES, requires_grad=True)
    prior.eps_with_grad(x, torch.tensor([5, 600])).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.parameters())
    # eps itself carries no graph.
    assert not prior.eps(x, torch.tensor([5, 600])).requires_grad


def test_prior_follows_the_callers_dtype():
    p = DiffusionPrior(tiny_unet(), ddpm_scheduler())
    x = torch.randn(2, 1, RES, RES, dtype=torch.float64)
    t = torch.tensor([3, 700])
    for fn in (p.eps, p.score, p.x0):
        assert fn(x, t).dtype == torch.float64
    out32 = p.eps(x.float(), t)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), p.eps(x, t), atol=1e-4)


def test_half_precision_input_does_not_round_the_weights():
    p = DiffusionPrior(tiny_unet(), ddpm_scheduler())
    x = torch.randn(2, 1, RES, RES)
    t = torch.tensor([5, 500])
    before = p.eps(x, t)
    half = p.eps(x.bfloat16(), t)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), before, atol=0.05)
    assert next(p.unet.parameters()).dtype == torch.float32
    assert torch.equal(p.eps(x, t), before)


def test_scalar_timestep_is_broadcast(prior):
    x = torch.randn(3, 1, RES, RES)
    assert torch.equal(prior.eps(x, torch.tensor(42)), prior.eps(x, torch.full((3,), 42)))
    assert not torch.allclose(prior.eps(x, torch.tensor(42)), prior.eps(x, torch.tensor(900)))


def test_learned_variance_keeps_the_first_channels():
    unet = tiny_unet(channels=3, out_channels=6)
    p = DiffusionPrior(unet, ddpm_scheduler())
    x = torch.randn(2, 3, RES, RES)
    t = torch.tensor([10, 900])
    eps = p.eps(x, t)
    assert eps.shape == x.shape
    with torch.no_grad():
        full = unet(x, t).sample
    assert full.shape[1] == 6
    assert torch.equal(eps, full[:, :3])
    assert not torch.allclose(eps, full[:, 3:])


def assert_same_network(a: DiffusionPrior, b: DiffusionPrior) -> None:
    """Bitwise-equal weights and bitwise-equal outputs (batch 1 included: weights read from safetensors
    at unaligned addresses once made a batch-1 convolution differ by an ulp)."""
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    g = torch.Generator().manual_seed(3)
    for n in (1, 2):
        x = torch.randn(n, a.channels, a.resolution, a.resolution, generator=g)
        t = torch.tensor([0, 999][:n])
        assert torch.equal(a.eps(x, t), b.eps(x, t))


def test_save_and_from_pretrained_round_trip(tmp_path, prior):
    folder = tmp_path / "prior"
    save_prior(prior.unet, prior.scheduler, folder, extra={"note": "test"})
    files = [f for f in folder.rglob("*") if f.is_file()]
    weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert weights and all(f.suffix == ".safetensors" for f in weights), weights
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.old"))
    loaded = DiffusionPrior.from_pretrained(str(folder))
    assert loaded.identity == str(folder) and len(loaded.digest) == 16
    assert_same_network(loaded, prior)
    assert torch.equal(loaded.schedule.alphas_cumprod, prior.schedule.alphas_cumprod)
    # Saving over an existing folder replaces it atomically.
    other = DiffusionPrior(tiny_unet(seed=5), ddpm_scheduler())
    save_prior(other.unet, other.scheduler, folder)
    again = DiffusionPrior.from_pretrained(str(folder))
    assert_same_network(again, other)
    x = torch.randn(2, 1, RES, RES)
    assert not torch.allclose(again.eps(x, torch.tensor([5, 5])), loaded.eps(x, torch.tensor([5, 5])), atol=1e-3)
    assert again.digest != loaded.digest
    assert not (tmp_path / "prior.old").exists() and not (tmp_path / "prior.tmp").exists()
    assert DiffusionPrior.from_pretrained(str(folder)).digest == again.digest


def test_a_loaded_prior_keeps_its_own_schedule(tmp_path):
    sched = build_scheduler(PriorConfig(num_train_timesteps=500, beta_start=1e-3, beta_end=0.05))
    save_prior(tiny_unet(), sched, tmp_path / "p")
    loaded = DiffusionPrior.from_pretrained(str(tmp_path / "p"))
    assert loaded.num_timesteps == 500
    assert torch.allclose(loaded.schedule.alphas_cumprod, sched.alphas_cumprod.double())


def test_bare_unet_folder_loads(tmp_path, prior):
    prior.unet.save_pretrained(str(tmp_path / "bare"), safe_serialization=True)
    loaded = DiffusionPrior.from_pretrained(str(tmp_path / "bare"))
    assert_same_network(loaded, prior)
    # No scheduler_config.json beside it: the published priors' DDPM schedule (T = 1000, linear betas).
    assert torch.allclose(loaded.schedule.alphas_cumprod, reference_alpha_bar(), rtol=1e-5)


def test_folder_without_weights_is_a_prior_error(tmp_path, prior):
    folder = tmp_path / "noweights"
    save_prior(prior.unet, prior.scheduler, folder)
    for f in folder.rglob("*.safetensors"):
        f.unlink()
    with pytest.raises(PriorError, match=r"noweights.*no \.safetensors weights"):
        DiffusionPrior.from_pretrained(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PriorError, match=r"empty.*no config\.json"):
        DiffusionPrior.from_pretrained(str(tmp_path / "empty"))


def test_missing_path_is_a_prior_error(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(PriorError) as e:
        DiffusionPrior.from_pretrained(str(missing))
    assert str(missing) in str(e.value)
    with pytest.raises(PriorError, match="unknown bundled prior 'nope'"):
        DiffusionPrior.from_pretrained("bundled:nope")


def test_wrong_channel_input_is_a_prior_error(prior):
    with pytest.raises(PriorError, match=r"expects 1 channel\(s\).*\(2, 3, 16, 16\)"):
        prior.eps(torch.randn(2, 3, RES, RES), torch.tensor([1, 2]))


def test_sample_is_finite_deterministic_and_in_range(prior):
    a = sample(prior, 3, num_steps=4, generator=torch.Generator().manual_seed(0), batch_size=2)
    b = sample(prior, 3, num_steps=4, generator=torch.Generator().manual_seed(0), batch_size=2)
    c = sample(prior, 3, num_steps=4, generator=torch.Generator().manual_seed(1), batch_size=2)
    assert a.shape == (3, 1, RES, RES)
    assert torch.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


BUNDLED = BUNDLED_PRIORS["mnist32"]


def test_bundled_prior_loads():
    # a shipped asset: missing weights are a packaging bug, never a skip
    assert (BUNDLED / "unet" / "diffusion_pytorch_model.safetensors").is_file(), f"{BUNDLED}: shipped weights missing"
    assert (BUNDLED / "scheduler" / "scheduler_config.json").is_file(), f"{BUNDLED}: shipped scheduler missing"
    p = DiffusionPrior.from_pretrained("bundled:mnist32")
    assert p.channels == 1 and p.resolution == 32 and p.num_timesteps == 1000
    assert torch.allclose(p.schedule.alphas_cumprod, reference_alpha_bar(), rtol=1e-5)
    x = sample(p, 2, num_steps=5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 32, 32) and torch.isfinite(x).all()


@pytest.mark.parametrize("zero", [True, False])
def test_with_extra_inputs_keeps_the_weights_and_zero_keeps_the_function(tiny_prior_dir, zero):
    from davi.models.prior import with_extra_inputs

    unet = DiffusionPrior.from_pretrained(str(tiny_prior_dir)).unet
    c = unet.config.in_channels
    wide = with_extra_inputs(unet, 2, zero=zero)
    assert wide.config.in_channels == c + 2 and unet.config.in_channels == c  # the original is untouched
    torch.testing.assert_close(wide.conv_in.weight[:, :c], unet.conv_in.weight)
    g = torch.Generator().manual_seed(0)
    x, extra = torch.randn(2, c, 8, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        same = torch.allclose(wide(torch.cat([x, extra], 1), t).sample, unet(x, t).sample, atol=1e-6)
    assert same == zero  # zero weights: the extra inputs change nothing until trained
