"""davi.baselines: deepinv's DPS / DiffPIR / DDRM on our priors and operators (deepinv 0.5.0, the `baselines` extra).

The adapters' conventions are checked here: the prior as a deepinv denoiser reproduces the prior's own
x0(x_t, t) once the DDPM state is mapped to deepinv's [0, 1] noise level (sigma' = sqrt((1 - ab) / ab) / 2);
our operators as deepinv physics give our A and A^T; and our operators against deepinv's own where both
exist (agreements asserted exactly, disagreements asserted at their measured size and explained).
"""

from __future__ import annotations

import sys

import pytest
import torch

import davi  # noqa: F401  (the torchvision shim deepinv's import needs)
from davi.analytic import GaussianPrior, exact_posteriors
from davi.operators import BoxInpaint, Deblur, Denoise, RandomInpaint, SuperResolution


def test_missing_deepinv_is_one_line_naming_the_extra(monkeypatch):
    from davi.baselines import BaselineError, require_deepinv

    monkeypatch.setitem(sys.modules, "deepinv", None)  # import deepinv -> ImportError
    with pytest.raises(BaselineError) as e:
        require_deepinv()
    assert "pip install -e .[baselines]" in str(e.value) and "\n" not in str(e.value)


def test_importing_davi_baselines_does_not_import_deepinv():
    import subprocess

    code = "import davi.baselines, sys; assert 'deepinv' not in sys.modules; print(davi.baselines.NAMES)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


dinv = pytest.importorskip("deepinv", reason="deepinv is not installed: pip install -e .[baselines] (or .[dev])")
from davi.baselines import adapters as ad  # noqa: E402
from davi.baselines import baseline_method  # noqa: E402


def gaussian_prior(res: int = 8, seed: int = 0) -> GaussianPrior:
    g = torch.Generator().manual_seed(seed)
    d = res * res
    return GaussianPrior(0.2 * torch.randn(1, res, res, generator=g, dtype=torch.float64),
                         cov_factor=0.3 * torch.randn(d, 4, generator=g, dtype=torch.float64), cov_diag=0.01)


def operators(res: int = 8, c: int = 1):
    return {"sr2": SuperResolution(0.05, res, c, 2), "sr4": SuperResolution(0.05, res, c, 4),
            "deblur": Deblur.gaussian(0.05, res, c, 3, 1.0), "box": BoxInpaint(0.05, res, c, 4),
            "random": RandomInpaint(0.05, res, c, 0.5, 0), "denoise": Denoise(0.05, res, c)}


# -- the prior as a denoiser ----------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0, 10, 100, 400, 900])
def test_denoiser_reproduces_the_priors_x0(t):
    prior = gaussian_prior()
    den = ad.PriorDenoiser(prior)
    g = torch.Generator().manual_seed(t)
    x0 = prior.sample(3, generator=g).float()
    tt = torch.full((3,), t)
    xt = prior.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
    ab = float(prior.schedule.alphas_cumprod[t])
    sigma = ((1 - ab) / ab) ** 0.5  # the level on [-1, 1] pixels; deepinv's is half of it
    out = den((xt / ab**0.5 + 1) / 2, sigma / 2)  # deepinv's convention: [0, 1] image + sigma/2 noise
    torch.testing.assert_close(out, (prior.x0(xt, tt) + 1) / 2, atol=5e-5 * max(1.0, sigma), rtol=0)
    assert int(den.timesteps(torch.tensor([sigma]))[0]) == t


def test_denoiser_takes_per_image_levels_zero_and_gradients():
    prior = gaussian_prior()
    den = ad.PriorDenoiser(prior)
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    out = den(x, torch.tensor([0.0, 0.3]))
    torch.testing.assert_close(out[0], x[0].detach())  # sigma 0: nothing to remove
    assert not torch.allclose(out[1], x[1].detach())
    out.sum().backward()  # DPS differentiates through the denoiser
    assert x.grad is not None and torch.isfinite(x.grad).all()


# -- operators as physics --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(operators()))
def test_physics_is_our_operator_in_unit_pixels(name):
    op = operators(8, 2)[name]
    physics = ad.as_physics(op)
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.rand(3, 2, 8, 8, generator=g) - 1
    y = op(x)
    torch.testing.assert_close(physics.A(x), y, atol=1e-6, rtol=0)
    torch.testing.assert_close(physics.A_adjoint(y), op.adjoint(y), atol=1e-6, rtol=0)
    # [-1, 1] -> [0, 1]: y' = (y + A 1) / 2 is the measurement of x' = (x + 1) / 2, noise std halved
    torch.testing.assert_close(ad.to_unit(y, op), physics.A((x + 1) / 2), atol=1e-6, rtol=0)
    assert float(physics.noise_model.sigma) == pytest.approx(op.sigma_y / 2)
    torch.testing.assert_close(ad.from_unit((x + 1) / 2), x)
    assert isinstance(physics, dinv.physics.DecomposablePhysics)  # every benchmark operator has an SVD here
    v = physics.V_adjoint(x)
    torch.testing.assert_close(physics.V(v), x, atol=1e-5, rtol=0)  # V orthonormal
    torch.testing.assert_close(v.pow(2).sum(), x.pow(2).sum(), rtol=1e-5, atol=0)
    torch.testing.assert_close(physics.U(physics.U_adjoint(y)), y, atol=1e-5, rtol=0)


def test_a_non_separable_kernel_has_no_svd_here():
    k = torch.zeros(3, 3, dtype=torch.float64)
    k[0, 0] = k[1, 1] = k[2, 2] = 1 / 3  # a diagonal streak: rank 3
    op = Deblur(0.05, 8, 1, k, {"kernel_file": "streak.npy", "kernel": k.tolist()})
    assert isinstance(ad.as_physics(op), ad.OperatorPhysics)
    with pytest.raises(ad.BaselineUnsupported, match="DDRM"):
        baseline_method("ddrm", gaussian_prior(), op)


# -- parity with deepinv's own operators ------------------------------------------------------------------
def test_inpainting_matches_deepinv():
    op = BoxInpaint(0.05, 8, 3, 4)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    theirs = dinv.physics.Inpainting(img_size=(3, 8, 8), mask=op.mask[0].expand(3, 8, 8).double())
    assert torch.equal(theirs.A(x), op(x)) and torch.equal(theirs.A_adjoint(op(x)), op.adjoint(op(x)))


def test_reflect_blur_matches_deepinv_blur():
    """Same kernel: deepinv's Blur(padding='reflect') is our Deblur, A and A^T (reflect = torch 'reflect', the
    edge pixel not repeated; our adjoint folds the border back exactly, so does deepinv's)."""
    for res, size, std in [(8, 3, 1.0), (32, 9, 0.375)]:
        op = Deblur.gaussian(0.05, res, 3, size, std)
        x = torch.randn(2, 3, res, res, dtype=torch.float64)
        theirs = dinv.physics.Blur(filter=op.kernel[None, None], padding="reflect")
        torch.testing.assert_close(theirs.A(x), op(x), atol=1e-12, rtol=0)
        torch.testing.assert_close(theirs.A_adjoint(op(x)), op.adjoint(op(x)), atol=1e-12, rtol=0)


def test_gaussian_kernels_differ_only_by_truncation():
    """A finding: deepinv's gaussian_blur(sigma) is the same sampled Gaussian as ours, but deepinv sizes it
    2 int(sigma / 0.3 + 1) + 1 px while ours is the benchmark's 61 px at 256 scaled to the image (davi.operators.
    default_blur) or the posterior benchmark's 3 px. At 32 px (9 px, std 0.375) both hold all the mass: equal. At
    8 px (3 px, std 1: 22% of the mass outside, renormalised) the operators differ by 25%; at 256 px (61 px vs
    23 px, std 3) by 4e-4. Always hand deepinv our kernel (as_physics does), never its own by std."""
    from davi.operators import default_blur

    rel = {}
    for res, (size, std) in [(8, (3, 1.0)), (32, default_blur(32)), (256, default_blur(256))]:
        op = Deblur.gaussian(0.05, res, 1, size, std)
        k = dinv.physics.functional.gaussian_blur(sigma=(std, std), dtype=torch.float64)
        x = torch.randn(1, 1, res, res, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        theirs = dinv.physics.Blur(filter=k, padding="reflect").A(x)
        rel[res] = float((theirs - op(x)).norm() / op(x).norm())
    assert rel[32] < 1e-12
    assert 0.2 < rel[8] < 0.3
    assert 1e-4 < rel[256] < 1e-3


def test_average_pooling_matches_deepinv_downsampling_with_valid_padding_only():
    """A finding: deepinv's Downsampling(filter=box, factor=s) is our s x s average pooling only with
    padding='valid'. Its default padding='circular' (and 'reflect', 'replicate') centres the even-sized box on
    the kept pixel, so each measured pixel averages a block shifted by s/2 (wrapping around the border):
    another operator. (With factor 2 and circular padding deepinv 0.5.0 raises a shape error.)"""
    for res, s in [(8, 2), (8, 4), (32, 4)]:
        op = SuperResolution(0.05, res, 3, s)
        x = torch.randn(2, 3, res, res, dtype=torch.float64)
        box = torch.ones(1, 1, s, s, dtype=torch.float64) / s**2
        valid = dinv.physics.Downsampling(img_size=(3, res, res), filter=box, factor=s, padding="valid")
        torch.testing.assert_close(valid.A(x), op(x), atol=1e-12, rtol=0)
        torch.testing.assert_close(valid.A_adjoint(op(x)), op.adjoint(op(x)), atol=1e-12, rtol=0)
        if s == 4:
            circular = dinv.physics.Downsampling(img_size=(3, res, res), filter=box, factor=s, padding="circular")
            assert (circular.A(x) - op(x)).abs().max() > 0.1


# -- the methods ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def problem():
    prior = gaussian_prior()
    op = SuperResolution(0.05, 8, 1, 2)
    x = prior.sample(2, generator=torch.Generator().manual_seed(5)).float()
    y = op.measure(x, generator=torch.Generator().manual_seed(6))
    return prior, op, y, exact_posteriors(prior, op, y)


@pytest.mark.parametrize("name", ["dps", "diffpir", "ddrm"])
def test_method_is_seeded_per_image_and_leaves_the_global_rng(name, problem):
    prior, op, y, _ = problem
    method = baseline_method(name, prior, op)
    assert method.stochastic and method.nfe_per_sample == {"dps": 1000, "diffpir": 100, "ddrm": 100}[name]  # defaults
    if name == "dps":  # seeding does not depend on the step count; 100 steps keep the test quick
        method = baseline_method(name, prior, op, num_steps=100)
    state = torch.get_rng_state()
    a = method(y, [3, 4], 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (1, 2, 1, 8, 8) and torch.isfinite(a).all() and a.abs().max() <= 1
    torch.testing.assert_close(method(y[1:], [4], 1)[0, 0], a[0, 1])  # image 1 alone: the same restoration
    assert not torch.equal(method(y[:1], [5], 1)[0, 0], a[0, 0])  # another seed: another sample


@pytest.mark.parametrize("name", ["dps", "diffpir", "ddrm"])
def test_method_improves_on_lift_on_a_gaussian_prior(name, problem):
    """The mean of 16 samples is closer to the exact posterior mean than lift(y) is, for both measurements."""
    prior, op, y, posts = problem
    method = baseline_method(name, prior, op)
    samples = method.sample(y.repeat(16, 1, 1, 1), seed=11, clamp=False).reshape(16, 2, -1).double()
    exact = torch.stack([p.mean for p in posts])
    err = (samples.mean(0) - exact).norm(dim=1)
    lift_err = (op.lift(y).reshape(2, -1).double() - exact).norm(dim=1)
    assert (err < lift_err).all(), (err, lift_err)


def test_cache_key_changes_with_every_input_a_restoration_depends_on(problem):
    """One key for the digits' and the photos' restoration caches: equal for an equal request, different when
    the settings, the measurement, the seed or the prior's weights differ."""
    prior, op, y, _ = problem
    method = baseline_method("diffpir", prior, op)
    key = method.cache_key(y, 1)
    assert key == baseline_method("diffpir", prior, op).cache_key(y.clone(), 1)
    assert key["method"] == "diffpir" and key["deepinv"] == dinv.__version__
    others = [baseline_method("diffpir", prior, op, max_iter=50).cache_key(y, 1), method.cache_key(y + 1e-3, 1),
              method.cache_key(y, 2), baseline_method("ddrm", prior, op).cache_key(y, 1)]
    assert all(o != key for o in others)
    # the cache folder: the settings that differ from deepinv's defaults, so a tuned choice equal to them shares it
    assert method.slug == "default" == baseline_method("diffpir", prior, op, zeta=0.1).slug
    assert baseline_method("diffpir", prior, op, zeta=1.0, lambda_=0.5).slug == "lambda_0.5_zeta1"
    prior.digest, before = "0" * 64, prior.digest if hasattr(prior, "digest") else None
    try:
        assert method.cache_key(y, 1) != key
    finally:
        if before is None:
            del prior.digest
        else:
            prior.digest = before


# -- the digit comparison's pure logic (benchmarks/baselines.py) ----------------------------------------------
@pytest.fixture(scope="module")
def bench():
    import importlib
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module("baselines")


def test_chunk_seeds_are_fixed_distinct_and_never_zero(bench):
    """One deepinv run per chunk: its seed is the chunk's first image's per-image seed + 1 (image_seeds), so it
    depends on the chunk's start and the sample seed only, differs between chunks and seeds, and is never 0."""
    from davi.solvers.methods import image_seeds

    seeds = {(s, a): bench.chunk_seed(a, s) for s in range(3) for a in range(0, 200, 25)}
    assert len(set(seeds.values())) == len(seeds) and 0 not in seeds.values()
    assert bench.chunk_seed(50) == image_seeds(0, 50, 1)[0] + 1 == 51
    assert bench.chunk_seed(0, 1) == 100004
