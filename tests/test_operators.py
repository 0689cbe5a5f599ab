"""Measurement operators (SPEC section 2): adjointness, pinv, shapes, noise, masks, params, errors.

Every operator is checked on an even and an odd image size, 1 and 3 channels, float32 and
float64. Sizes are tiny (12 and 15 px) and every random draw is seeded.
"""

import json
import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from davi.config import OperatorConfig
from davi.operators import (
    OPERATORS,
    Operator,
    OperatorError,
    build_operator,
    default_blur,
    gaussian_kernel,
    operator_from_params,
)

NAMES = ["deblur", "sr", "box_inpaint", "random_inpaint", "denoise"]
SIZES = [12, 15]  # even, odd
# Per-size settings: sr needs H, W divisible by the scale (12 / 4, 15 / 3).
_SIZE_CFG = {
    "deblur": {12: dict(kernel_size=5, kernel_std=1.2), 15: dict(kernel_size=7, kernel_std=1.5)},
    "sr": {12: dict(scale=4), 15: dict(scale=3)},
    "box_inpaint": {12: dict(box_size=0), 15: dict(box_size=6)},
    "random_inpaint": {12: dict(drop_fraction=0.3, mask_seed=7), 15: dict(drop_fraction=0.6, mask_seed=3)},
    "denoise": {12: {}, 15: {}},
}
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def make(name, size, sigma_y=0.1, channels=1, **overrides):
    kw = {**_SIZE_CFG[name][size], **overrides}
    return build_operator(OperatorConfig(name=name, sigma_y=sigma_y, **kw), size, channels)


def rand(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


grid = pytest.mark.parametrize(
    "name,size,channels,dtype",
    [(n, s, c, d) for n in NAMES for s in SIZES for c in (1, 3) for d in (torch.float32, torch.float64)],
)


def test_the_list_covers_every_operator():
    assert sorted(NAMES) == sorted(OPERATORS)


# -- linear algebra ---------------------------------------------------------------------------


@grid
def test_adjoint_inner_products_agree(name, size, channels, dtype):
    op = make(name, size, channels=channels)
    x = rand((2, channels, size, size), dtype, seed=1)
    y = rand(op.measurement_shape(x.shape), dtype, seed=2)
    ax, aty = op(x), op.adjoint(y)
    assert ax.dtype == dtype and aty.dtype == dtype
    lhs, rhs = (ax.double() * y.double()).sum(), (x.double() * aty.double()).sum()
    scale = ax.double().norm() * y.double().norm()
    assert abs(lhs - rhs) <= TOL[dtype] * scale, (lhs.item(), rhs.item())


@grid
def test_pinv_is_a_right_inverse_on_measurements(name, size, channels, dtype):
    op = make(name, size, channels=channels)
    x = rand((2, channels, size, size), dtype, seed=3)
    y = op(x)
    if not op.has_pinv:
        with pytest.raises(NotImplementedError, match=name):
            op.pinv(y)
        return
    xp = op.pinv(y)
    assert xp.shape == x.shape and xp.dtype == dtype
    torch.testing.assert_close(op(xp), y, rtol=TOL[dtype], atol=TOL[dtype])


def test_which_operators_have_a_pinv():
    assert {n: make(n, 12).has_pinv for n in NAMES} == {
        "deblur": False,
        "sr": True,
        "box_inpaint": True,
        "random_inpaint": True,
        "denoise": True,
    }


@grid
def test_shapes_of_measurement_adjoint_and_lift(name, size, channels, dtype):
    op = make(name, size, channels=channels)
    x = rand((3, channels, size, size), dtype, seed=4)
    y = op(x)
    assert tuple(y.shape) == op.measurement_shape(x.shape)
    op.check_measurement(y, x.shape)
    for out in (op.adjoint(y), op.lift(y)):
        assert out.shape == x.shape and out.dtype == dtype


def test_sr_measurement_is_smaller_and_others_keep_the_image_shape():
    assert make("sr", 12).measurement_shape((2, 3, 12, 12)) == (2, 3, 3, 3)
    assert make("sr", 15).measurement_shape((2, 1, 15, 15)) == (2, 1, 5, 5)
    for n in ("deblur", "box_inpaint", "random_inpaint", "denoise"):
        assert make(n, 15).measurement_shape((2, 3, 15, 15)) == (2, 3, 15, 15)


def test_deblur_adjoint_is_the_true_adjoint_of_reflect_padding():
    op = make("deblur", 12, channels=3)
    x = rand((2, 3, 12, 12), seed=5).requires_grad_(True)
    y = rand((2, 3, 12, 12), seed=6)
    (vjp,) = torch.autograd.grad(op(x), x, y)
    torch.testing.assert_close(op.adjoint(y), vjp, rtol=1e-12, atol=1e-12)
    # The shortcut (zero-padded conv with the flipped kernel) is wrong near the borders.
    k = op.kernel.flip(0, 1).expand(3, 1, 5, 5)
    naive = F.conv2d(y, k, padding=2, groups=3)
    assert (naive - vjp).abs().max() > 1e-3


def test_deblur_matches_scipy_mirror_correlation_in_float64():
    op = make("deblur", 15, channels=3)
    x = rand((2, 3, 15, 15), seed=7)
    k = op.kernel.numpy()
    ref = np.stack([[scipy.ndimage.correlate(x[b, c].numpy(), k, mode="mirror") for c in range(3)] for b in range(2)])
    np.testing.assert_allclose(op(x).numpy(), ref, rtol=0, atol=1e-14)


def test_deblur_keeps_a_constant_image_constant():
    op = make("deblur", 12)
    x = torch.full((1, 1, 12, 12), 0.3, dtype=torch.float64)
    torch.testing.assert_close(op(x), x, rtol=0, atol=1e-14)


def test_sr_operators_formulas():
    op = make("sr", 12)
    x = torch.arange(144, dtype=torch.float64).view(1, 1, 12, 12)
    torch.testing.assert_close(op(x), F.avg_pool2d(x, 4))
    y = rand((1, 1, 3, 3), seed=8)
    torch.testing.assert_close(op.pinv(y), F.interpolate(y, scale_factor=4, mode="nearest"))
    torch.testing.assert_close(op.adjoint(y), op.pinv(y) / 16)
    torch.testing.assert_close(
        op.lift(y), F.interpolate(y, scale_factor=4, mode="bilinear", align_corners=False)
    )


@pytest.mark.parametrize("name", NAMES)
def test_lift(name):
    op = make(name, 12, channels=3)
    y = op(rand((2, 3, 12, 12), seed=9))
    lifted = op.lift(y)
    if name == "sr":
        assert not torch.equal(lifted, op.pinv(y))  # bilinear, not nearest
        torch.testing.assert_close(op(lifted), y, rtol=0.5, atol=0.5)  # a coarse check
    else:  # y itself (the masked image for inpainting)
        torch.testing.assert_close(lifted, y, rtol=0, atol=0)


# -- noise --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_measure_is_seeded_and_adds_sigma_y_noise_on_measured_entries(name):
    sigma = 0.2
    op = make(name, 12, sigma_y=sigma, channels=3)
    x = rand((32, 3, 12, 12), torch.float32, seed=10)
    y1 = op.measure(x, generator=torch.Generator().manual_seed(0))
    y2 = op.measure(x, generator=torch.Generator().manual_seed(0))
    y3 = op.measure(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)
    noise = (y1 - op(x)).double()
    if name in ("box_inpaint", "random_inpaint"):
        observed = op.mask.expand_as(noise).bool()
        assert torch.equal(noise[~observed], torch.zeros_like(noise[~observed]))
        noise = noise[observed]
    assert (noise != 0).float().mean() > 0.99
    assert abs(noise.std().item() - sigma) < 0.1 * sigma
    assert abs(noise.mean().item()) < 0.1 * sigma


def test_measure_without_noise_is_the_forward_map_and_keeps_float64():
    op = make("sr", 12, sigma_y=0.0, channels=3)
    x = rand((2, 3, 12, 12), seed=11)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.float64
    assert torch.equal(y, op(x))


def test_measure_without_generator_uses_the_global_seed():
    op = make("denoise", 12)
    x = torch.zeros(1, 1, 12, 12)
    torch.manual_seed(5)
    a = op.measure(x)
    torch.manual_seed(5)
    b = op.measure(x)
    assert torch.equal(a, b) and a.abs().sum() > 0


# -- kernels and masks ----------------------------------------------------------------------


def test_deblur_kernel_sums_to_one_and_is_a_centered_gaussian():
    op = make("deblur", 15)
    k = op.kernel
    assert k.shape == (7, 7) and k.dtype == torch.float64
    assert abs(k.sum().item() - 1) < 1e-12
    assert torch.equal(k, k.flip(0)) and torch.equal(k, k.T)
    assert k.argmax().item() == 3 * 7 + 3
    # Gaussian: ratio of neighbours along the centre row is exp(-(2r+1) / (2 std^2)).
    std = 1.5
    assert math.isclose(k[3, 4] / k[3, 3], math.exp(-1 / (2 * std**2)), rel_tol=1e-12)


def test_deblur_default_kernel_scales_from_61_px_std_3_at_256():
    assert default_blur(256) == (61, 3.0)
    assert default_blur(32) == (9, 0.375)  # round(7.625) = 8 -> odd 9
    assert default_blur(12)[0] == 3  # at least 3
    for res in (20, 33, 100, 128, 512):
        size, std = default_blur(res)
        assert size % 2 == 1 and size >= 3 and abs(size - 61 * res / 256) <= 1.5
        assert std == 3 * res / 256
    op = build_operator(OperatorConfig(name="deblur", kernel_size=0, kernel_std=0.0), 256, 3)
    assert (op.params()["kernel_size"], op.params()["kernel_std"]) == (61, 3.0)
    assert op.kernel.shape == (61, 61)
    op = build_operator(OperatorConfig(name="deblur"), 32, 1)
    assert (op.kernel_size, op.kernel_std) == (9, 0.375)
    torch.testing.assert_close(op.kernel, gaussian_kernel(9, 0.375), rtol=0, atol=0)


def test_random_inpaint_mask_is_fixed_by_its_seed():
    a, b = make("random_inpaint", 12, mask_seed=7), make("random_inpaint", 12, mask_seed=7)
    c = make("random_inpaint", 12, mask_seed=8)
    assert torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)
    # The mask does not depend on (nor disturb) the global RNG.
    torch.manual_seed(123)
    d = make("random_inpaint", 12, mask_seed=7)
    assert torch.equal(a.mask, d.mask)
    for frac in (0.3, 0.5, 0.9):
        m = make("random_inpaint", 15, drop_fraction=frac).mask
        assert m.shape == (1, 1, 15, 15)
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        assert abs((1 - m.mean().item()) - frac) <= 1 / 225


def test_random_inpaint_mask_is_shared_across_channels_and_batch():
    op = make("random_inpaint", 12, channels=3)
    y = op(torch.ones(4, 3, 12, 12))
    assert torch.equal(y, op.mask.expand(4, 3, 12, 12))
    assert y.sum() < y.numel()


def test_random_inpaint_with_nothing_dropped_is_the_identity():
    op = make("random_inpaint", 12, drop_fraction=0.0)
    x = rand((1, 1, 12, 12), seed=12)
    assert torch.equal(op(x), x)


@pytest.mark.parametrize("size,box_size,start,side", [(12, 0, 3, 6), (15, 0, 4, 7), (15, 6, 4, 6), (12, 5, 3, 5)])
def test_box_inpaint_zeroes_a_centered_box(size, box_size, start, side):
    op = make("box_inpaint", size, box_size=box_size)
    expected = torch.ones(size, size)
    expected[start : start + side, start : start + side] = 0
    assert torch.equal(op.mask[0, 0], expected)
    assert op.params()["box_size"] == side


def test_buffers_are_not_persistent_and_follow_the_input_dtype():
    for name in NAMES:
        op = make(name, 12)
        assert op.state_dict() == {}
    op = make("box_inpaint", 12).to(torch.float64)
    y = op(torch.ones(1, 1, 12, 12, dtype=torch.float32))
    assert y.dtype == torch.float32


# -- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,size", [(n, s) for n in NAMES for s in SIZES])
def test_params_round_trip_through_json(name, size):
    op = make(name, size, sigma_y=0.07, channels=3)
    params = json.loads(json.dumps(op.params()))
    assert set(params) == {
        "name", "sigma_y", "kernel_size", "kernel_std", "scale", "box_size",
        "drop_fraction", "mask_seed", "resolution", "channels",
    }  # fmt: skip
    assert params["name"] == name and params["resolution"] == size and params["channels"] == 3
    rebuilt = operator_from_params(params)
    assert type(rebuilt) is type(op) and isinstance(rebuilt, Operator)
    assert rebuilt.params() == op.params()
    x = rand((2, 3, size, size), seed=13)
    y = op(x)
    assert torch.equal(rebuilt(x), y)
    assert torch.equal(rebuilt.adjoint(y), op.adjoint(y))
    assert torch.equal(rebuilt.lift(y), op.lift(y))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(rebuilt.measure(x, generator=g1), op.measure(x, generator=g2))


def test_params_of_a_different_operator_differ():
    assert make("random_inpaint", 12, mask_seed=1).params() != make("random_inpaint", 12, mask_seed=2).params()
    assert make("deblur", 12).params()["kernel_size"] == 5


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg,resolution,key",
    [
        (dict(name="blur"), 12, "operator.name"),
        (dict(name="sr", sigma_y=-0.1), 12, "operator.sigma_y"),
        (dict(name="denoise", sigma_y=float("nan")), 12, "operator.sigma_y"),
        (dict(name="random_inpaint", drop_fraction=1.0), 12, "operator.drop_fraction"),
        (dict(name="random_inpaint", drop_fraction=-0.1), 12, "operator.drop_fraction"),
        (dict(name="box_inpaint", box_size=13), 12, "operator.box_size"),
        (dict(name="box_inpaint", box_size=12), 12, "operator.box_size"),
        (dict(name="box_inpaint", box_size=-1), 12, "operator.box_size"),
        (dict(name="deblur", kernel_size=25), 12, "operator.kernel_size"),
        (dict(name="deblur", kernel_size=4), 12, "operator.kernel_size"),
        (dict(name="deblur", kernel_std=-1.0), 12, "operator.kernel_std"),
        (dict(name="deblur"), 1, "operator.kernel_size"),  # default 3 px kernel, 1 px image
        (dict(name="sr", scale=5), 12, "operator.scale"),
        (dict(name="sr", scale=0), 12, "operator.scale"),
        (dict(name="sr"), 0, "data.resolution"),
    ],
)
def test_bad_config_names_the_key(cfg, resolution, key):
    with pytest.raises(OperatorError, match=key.replace(".", r"\.")) as info:
        build_operator(OperatorConfig(**cfg), resolution, 1)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(OperatorError) as info:
        build_operator(OperatorConfig(name="inpaint"), 12, 1)
    assert all(n in str(info.value) for n in NAMES)


@pytest.mark.parametrize(
    "name,size,shape",
    [
        ("sr", 12, (1, 1, 13, 13)),  # not divisible by the scale
        ("box_inpaint", 12, (1, 1, 10, 10)),  # not the mask's size
        ("random_inpaint", 12, (2, 3, 12, 14)),
        ("deblur", 12, (1, 1, 2, 2)),  # too small for the kernel's reflect padding
        ("denoise", 12, (12, 12)),  # not (B, C, H, W)
    ],
)
def test_bad_image_shape_names_the_shape(name, size, shape):
    op = make(name, size)
    with pytest.raises(OperatorError, match=re_shape(shape)):
        op(torch.zeros(shape))


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_deblur_too_small_image_names_the_kernel_size():
    with pytest.raises(OperatorError, match="kernel_size=5"):
        make("deblur", 12)(torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("name", NAMES)
def test_check_measurement_names_expected_and_actual_shapes(name):
    op = make(name, 12, channels=3)
    image_shape = (2, 3, 12, 12)
    good = torch.zeros(op.measurement_shape(image_shape))
    op.check_measurement(good, image_shape)  # no error
    bad = torch.zeros(2, 3, 6, 6)
    with pytest.raises(OperatorError) as info:
        op.check_measurement(bad, image_shape)
    msg = str(info.value)
    assert "(2, 3, 6, 6)" in msg and str(op.measurement_shape(image_shape)) in msg


def test_check_measurement_rejects_a_wrong_batch():
    op = make("sr", 12)
    with pytest.raises(OperatorError, match=re_shape((4, 1, 3, 3))):
        op.check_measurement(torch.zeros(4, 1, 3, 3), (2, 1, 12, 12))


@pytest.mark.parametrize(
    "change,key",
    [
        (lambda p: p.pop("sigma_y"), "sigma_y"),
        (lambda p: p.pop("resolution"), "resolution"),
        (lambda p: p.update(colour=1), "colour"),
        (lambda p: p.update(name="warp"), "operator.name"),
        (lambda p: p.update(mask_seed="7"), "operator.mask_seed"),
    ],
)
def test_bad_params_name_the_key(change, key):
    params = make("random_inpaint", 12).params()
    change(params)
    with pytest.raises(OperatorError, match=key):
        operator_from_params(params)
