"""Measurement operators: adjointness, pinv, shapes, noise, masks, params, data files, registry, errors.

The linear-algebra suite runs on every registered operator (the registry is iterated, so a new
one is tested without editing this file), on a file-defined blur kernel and on a user operator
given by import path (tests/operator_plugin.py), each on an even and an odd image size, 1 and 3
channels, float32 and float64. Sizes are tiny (12 and 15 px), every random draw is seeded, and
the kernel and mask files are written to a temporary folder.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

from davi.config import ConfigError, OperatorConfig, load_config
from davi.operators import (
    OPERATORS,
    Operator,
    OperatorError,
    build_operator,
    default_blur,
    gaussian_kernel,
    operator_class,
    operator_from_params,
    register_operator,
)
from operator_plugin import Decimate

ROOT = Path(__file__).resolve().parents[1]
USER = Decimate.name  # "operator_plugin:Decimate"
KERNEL_FILE = "deblur(kernel_file)"
# Every registered operator, plus the file-kernel deblur and a user operator by import path.
CASES = [*OPERATORS, KERNEL_FILE, USER]
SIZES = [12, 15]  # even, odd
# Per-size settings (a registered operator missing here is tested with the defaults): sr needs
# H, W divisible by the scale (12 / 4, 15 / 3). File names refer to the `files` fixture.
_SIZE_CFG = {
    "deblur": {12: dict(kernel_size=5, kernel_std=1.2), 15: dict(kernel_size=7, kernel_std=1.5)},
    "sr": {12: dict(scale=4), 15: dict(scale=3)},
    "box_inpaint": {12: dict(box_size=0), 15: dict(box_size=6)},
    "random_inpaint": {12: dict(drop_fraction=0.3, mask_seed=7), 15: dict(drop_fraction=0.6, mask_seed=3)},
    "inpaint": {12: dict(mask_file="mask12.png"), 15: dict(mask_file="mask15.npy")},
    "denoise": {12: {}, 15: {}},
    # non-square, asymmetric kernels: a flipped or transposed kernel would show
    KERNEL_FILE: {12: dict(name="deblur", kernel_file="kernel3x5.npy"), 15: dict(name="deblur", kernel_file="kernel7x5.png")},
    USER: {12: dict(scale=4), 15: dict(scale=3)},
}
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Kernel and mask files (.npy and PNG) for the file-defined operators."""
    d = tmp_path_factory.mktemp("operator_files")
    rng = np.random.default_rng(0)
    np.save(d / "kernel3x5.npy", rng.uniform(0.1, 1.0, (3, 5)).astype(np.float32))
    Image.fromarray(rng.integers(1, 256, (7, 5), dtype=np.uint8)).save(d / "kernel7x5.png")
    Image.fromarray(np.where(rng.random((12, 12)) < 0.6, 255, 0).astype(np.uint8)).save(d / "mask12.png")
    np.save(d / "mask15.npy", rng.random((15, 15)) < 0.6)  # bool
    return d


@pytest.fixture(scope="session")
def make(files):
    def make(case, size, sigma_y=0.1, channels=1, **overrides):
        kw = {"name": case, **_SIZE_CFG.get(case, {}).get(size, {}), **overrides}
        for key in ("kernel_file", "mask_file"):
            if kw.get(key):
                kw[key] = str(files / kw[key])
        return build_operator(OperatorConfig(sigma_y=sigma_y, **kw), size, channels)

    return make


def rand(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


grid = pytest.mark.parametrize(
    "case,size,channels,dtype",
    [(n, s, c, d) for n in CASES for s in SIZES for c in (1, 3) for d in (torch.float32, torch.float64)],
)


# -- the registry -----------------------------------------------------------------------------


def test_the_registry_holds_the_builtin_operators_under_their_names():
    assert {"deblur", "sr", "box_inpaint", "random_inpaint", "inpaint", "denoise"} <= set(OPERATORS)
    for name, cls in OPERATORS.items():
        assert issubclass(cls, Operator) and cls.name == name
        assert operator_class(name) is cls


def test_a_registered_operator_becomes_a_valid_config_name():
    @register_operator("test_only_identity")
    class Identity(Operator):
        forward = adjoint = lift = staticmethod(lambda t: t)

    try:
        cfg = load_config(None, ["operator.name=test_only_identity"])
        op = build_operator(cfg.operator, 8, 1)
        assert type(op) is Identity and op.params()["name"] == "test_only_identity"
        assert type(operator_from_params(json.loads(json.dumps(op.params())))) is Identity
        with pytest.raises(ValueError, match="already taken"):
            register_operator("test_only_identity")(Identity)
    finally:
        del OPERATORS["test_only_identity"]
    with pytest.raises(ConfigError, match="test_only_identity"):
        load_config(None, ["operator.name=test_only_identity"])


def test_a_user_operator_by_import_path(make):
    assert USER == "operator_plugin:Decimate" and USER not in OPERATORS
    cfg = load_config(None, [f"operator.name={USER}", "operator.scale=2"])
    op = build_operator(cfg.operator, 12, 3)
    assert type(op) is Decimate and op.params() == {
        "name": USER, "sigma_y": 0.05, "resolution": 12, "channels": 3, "scale": 2,
    }  # fmt: skip
    x = rand((1, 3, 12, 12), seed=20)
    assert torch.equal(op(x), x[..., ::2, ::2])


@pytest.mark.parametrize(
    "name,problem",
    [
        ("no_such_module_for_davi:Op", "cannot import 'no_such_module_for_davi' (ModuleNotFoundError"),
        ("operator_plugin:Missing", "module 'operator_plugin' has no 'Missing'"),
        ("operator_plugin:NotAnOperator", "is not a subclass of davi.operators.Operator"),
        ("davi.operators:Operator", "is not a subclass"),  # the abstract base
        ("deblurr", "is not one of deblur, sr, box_inpaint"),
    ],
)
def test_a_bad_operator_name_is_one_line_in_config_and_factory(name, problem):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"operator.name={name}"])
    msg = str(info.value)
    assert msg.startswith("operator.name: ") and problem in msg and "\n" not in msg
    with pytest.raises(OperatorError, match="operator.name: ") as info:
        build_operator(OperatorConfig(name=name), 12, 1)
    assert problem in str(info.value)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(OperatorError) as info:
        build_operator(OperatorConfig(name="inpainting"), 12, 1)
    assert all(n in str(info.value) for n in OPERATORS) and "module:Class" in str(info.value)


# -- linear algebra ---------------------------------------------------------------------------


@grid
def test_adjoint_inner_products_agree(make, case, size, channels, dtype):
    op = make(case, size, channels=channels)
    x = rand((2, channels, size, size), dtype, seed=1)
    y = rand(op.measurement_shape(x.shape), dtype, seed=2)
    ax, aty = op(x), op.adjoint(y)
    assert ax.dtype == dtype and aty.dtype == dtype
    lhs, rhs = (ax.double() * y.double()).sum(), (x.double() * aty.double()).sum()
    scale = ax.double().norm() * y.double().norm()
    assert abs(lhs - rhs) <= TOL[dtype] * scale, (lhs.item(), rhs.item())


@grid
def test_adjoint_is_the_autograd_vector_jacobian_product(make, case, size, channels, dtype):
    op = make(case, size, channels=channels)
    x = rand((2, channels, size, size), torch.float64, seed=5).requires_grad_(True)
    y = rand(op.measurement_shape(x.shape), torch.float64, seed=6)
    (vjp,) = torch.autograd.grad(op(x), x, y)
    torch.testing.assert_close(op.adjoint(y), vjp, rtol=1e-12, atol=1e-12)


@grid
def test_pinv_is_a_right_inverse_on_measurements(make, case, size, channels, dtype):
    op = make(case, size, channels=channels)
    x = rand((2, channels, size, size), dtype, seed=3)
    y = op(x)
    if not op.has_pinv:
        with pytest.raises(NotImplementedError, match=op.name):
            op.pinv(y)
        return
    xp = op.pinv(y)
    assert xp.shape == x.shape and xp.dtype == dtype
    torch.testing.assert_close(op(xp), y, rtol=TOL[dtype], atol=TOL[dtype])


def test_which_operators_have_a_pinv(make):
    assert {n: make(n, 12).has_pinv for n in CASES} == {
        "deblur": False,
        KERNEL_FILE: False,
        "sr": True,
        "box_inpaint": True,
        "random_inpaint": True,
        "inpaint": True,
        "denoise": True,
        USER: True,
    }


@grid
def test_shapes_of_measurement_adjoint_and_lift(make, case, size, channels, dtype):
    op = make(case, size, channels=channels)
    x = rand((3, channels, size, size), dtype, seed=4)
    y = op(x)
    assert tuple(y.shape) == op.measurement_shape(x.shape)
    op.check_measurement(y, x.shape)
    for out in (op.adjoint(y), op.lift(y)):
        assert out.shape == x.shape and out.dtype == dtype


def test_sr_measurement_is_smaller_and_others_keep_the_image_shape(make):
    assert make("sr", 12).measurement_shape((2, 3, 12, 12)) == (2, 3, 3, 3)
    assert make("sr", 15).measurement_shape((2, 1, 15, 15)) == (2, 1, 5, 5)
    for n in ("deblur", KERNEL_FILE, "box_inpaint", "random_inpaint", "inpaint", "denoise"):
        assert make(n, 15).measurement_shape((2, 3, 15, 15)) == (2, 3, 15, 15)


def test_deblur_adjoint_is_not_the_zero_padded_shortcut(make):
    op = make("deblur", 12, channels=3)
    y = rand((2, 3, 12, 12), seed=6)
    # The shortcut (zero-padded conv with the flipped kernel) is wrong near the borders.
    k = op.kernel.flip(0, 1).expand(3, 1, 5, 5)
    naive = F.conv2d(y, k, padding=2, groups=3)
    assert (naive - op.adjoint(y)).abs().max() > 1e-3


@pytest.mark.parametrize("case,size", [("deblur", 15), (KERNEL_FILE, 12), (KERNEL_FILE, 15)])
def test_deblur_matches_scipy_mirror_correlation_in_float64(make, case, size):
    op = make(case, size, channels=3)
    x = rand((2, 3, size, size), seed=7)
    k = op.kernel.numpy()
    ref = np.stack([[scipy.ndimage.correlate(x[b, c].numpy(), k, mode="mirror") for c in range(3)] for b in range(2)])
    np.testing.assert_allclose(op(x).numpy(), ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("case", ["deblur", KERNEL_FILE])
def test_deblur_keeps_a_constant_image_constant(make, case):
    op = make(case, 12)
    x = torch.full((1, 1, 12, 12), 0.3, dtype=torch.float64)
    torch.testing.assert_close(op(x), x, rtol=0, atol=1e-14)


def test_sr_operators_formulas(make):
    op = make("sr", 12)
    x = torch.arange(144, dtype=torch.float64).view(1, 1, 12, 12)
    torch.testing.assert_close(op(x), F.avg_pool2d(x, 4))
    y = rand((1, 1, 3, 3), seed=8)
    torch.testing.assert_close(op.pinv(y), F.interpolate(y, scale_factor=4, mode="nearest"))
    torch.testing.assert_close(op.adjoint(y), op.pinv(y) / 16)
    torch.testing.assert_close(
        op.lift(y), F.interpolate(y, scale_factor=4, mode="bilinear", align_corners=False)
    )


@pytest.mark.parametrize("case", CASES)
def test_lift(make, case):
    op = make(case, 12, channels=3)
    y = op(rand((2, 3, 12, 12), seed=9))
    lifted = op.lift(y)
    if case == "sr":
        assert not torch.equal(lifted, op.pinv(y))  # bilinear, not nearest
        torch.testing.assert_close(op(lifted), y, rtol=0.5, atol=0.5)  # a coarse check
    elif case == USER:
        torch.testing.assert_close(op(lifted), y, rtol=0, atol=0)
    else:  # y itself (the masked image for inpainting)
        torch.testing.assert_close(lifted, y, rtol=0, atol=0)


# -- noise --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_measure_is_seeded_and_adds_sigma_y_noise_on_measured_entries(make, case):
    sigma = 0.2
    op = make(case, 12, sigma_y=sigma, channels=3)
    x = rand((32, 3, 12, 12), torch.float32, seed=10)
    y1 = op.measure(x, generator=torch.Generator().manual_seed(0))
    y2 = op.measure(x, generator=torch.Generator().manual_seed(0))
    y3 = op.measure(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)
    noise = (y1 - op(x)).double()
    mask = getattr(op, "mask", None)  # the inpainting operators: no noise on missing pixels
    if mask is not None:
        observed = mask.expand_as(noise).bool()
        assert torch.equal(noise[~observed], torch.zeros_like(noise[~observed]))
        noise = noise[observed]
    assert (noise != 0).float().mean() > 0.99
    assert abs(noise.std().item() - sigma) < 0.1 * sigma
    assert abs(noise.mean().item()) < 0.1 * sigma


def test_measure_without_noise_is_the_forward_map_and_keeps_float64(make):
    op = make("sr", 12, sigma_y=0.0, channels=3)
    x = rand((2, 3, 12, 12), seed=11)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.float64
    assert torch.equal(y, op(x))


def test_measure_without_generator_uses_the_global_seed(make):
    op = make("denoise", 12)
    x = torch.zeros(1, 1, 12, 12)
    torch.manual_seed(5)
    a = op.measure(x)
    torch.manual_seed(5)
    b = op.measure(x)
    assert torch.equal(a, b) and a.abs().sum() > 0


# -- kernels and masks ----------------------------------------------------------------------


def test_deblur_kernel_sums_to_one_and_is_a_centered_gaussian(make):
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
    assert (op.params()["kernel_size"], op.params()["kernel_std"]) == (9, 0.375)
    torch.testing.assert_close(op.kernel, gaussian_kernel(9, 0.375), rtol=0, atol=0)


def test_a_kernel_file_is_used_as_given_and_normalised_to_sum_one(make, files):
    arr = np.load(files / "kernel3x5.npy").astype(np.float64)
    op = make(KERNEL_FILE, 12)
    assert op.kernel.dtype == torch.float64
    torch.testing.assert_close(op.kernel, torch.from_numpy(arr / arr.sum()), rtol=0, atol=0)
    png = np.asarray(Image.open(files / "kernel7x5.png"), dtype=np.float64)
    op = make(KERNEL_FILE, 15)
    torch.testing.assert_close(op.kernel, torch.from_numpy(png / png.sum()), rtol=0, atol=1e-15)
    # a horizontal streak: the blur moves mass along rows only
    np.save(files / "streak.npy", np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.float64))
    op = build_operator(OperatorConfig(name="deblur", kernel_file=str(files / "streak.npy")), 12, 1)
    x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    x[0, 0, 5, 5] = 3.0
    expected = torch.zeros_like(x)
    expected[0, 0, 5, 4:7] = 1.0
    torch.testing.assert_close(op(x), expected, rtol=0, atol=1e-15)


def test_a_mask_file_is_the_mask(make, files):
    png = np.asarray(Image.open(files / "mask12.png"))
    op = make("inpaint", 12, channels=3)
    assert torch.equal(op.mask[0, 0], torch.from_numpy(png == 255).float())
    assert torch.equal(make("inpaint", 15).mask[0, 0], torch.from_numpy(np.load(files / "mask15.npy")).float())
    y = op(torch.ones(2, 3, 12, 12))
    assert torch.equal(y, op.mask.expand(2, 3, 12, 12)) and 0 < y.sum() < y.numel()
    # 1-bit, RGB and 16-bit images of the same mask read the same
    observed = png == 255
    for name, img in [
        ("bits.png", Image.fromarray(observed)),
        ("rgb.png", Image.fromarray(observed.astype(np.uint8) * 255).convert("RGB")),
        ("sixteen.png", Image.fromarray(observed.astype(np.uint16) * 65535)),
    ]:
        img.save(files / name)
        other = build_operator(OperatorConfig(name="inpaint", mask_file=str(files / name)), 12, 3)
        assert torch.equal(other.mask, op.mask), name


def test_random_inpaint_mask_is_fixed_by_its_seed(make):
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


def test_random_inpaint_mask_is_shared_across_channels_and_batch(make):
    op = make("random_inpaint", 12, channels=3)
    y = op(torch.ones(4, 3, 12, 12))
    assert torch.equal(y, op.mask.expand(4, 3, 12, 12))
    assert y.sum() < y.numel()


def test_random_inpaint_with_nothing_dropped_is_the_identity(make):
    op = make("random_inpaint", 12, drop_fraction=0.0)
    x = rand((1, 1, 12, 12), seed=12)
    assert torch.equal(op(x), x)


@pytest.mark.parametrize("size,box_size,start,side", [(12, 0, 3, 6), (15, 0, 4, 7), (15, 6, 4, 6), (12, 5, 3, 5)])
def test_box_inpaint_zeroes_a_centered_box(make, size, box_size, start, side):
    op = make("box_inpaint", size, box_size=box_size)
    expected = torch.ones(size, size)
    expected[start : start + side, start : start + side] = 0
    assert torch.equal(op.mask[0, 0], expected)
    assert op.params()["box_size"] == side


def test_buffers_are_not_persistent_and_follow_the_input_dtype(make):
    for case in CASES:
        assert make(case, 12).state_dict() == {}
    op = make("box_inpaint", 12).to(torch.float64)
    y = op(torch.ones(1, 1, 12, 12, dtype=torch.float32))
    assert y.dtype == torch.float32


# -- params ---------------------------------------------------------------------------------

OWN_KEYS = {
    "deblur": {"kernel_size", "kernel_std"},
    KERNEL_FILE: {"kernel_file", "kernel"},
    "sr": {"scale"},
    "box_inpaint": {"box_size"},
    "random_inpaint": {"drop_fraction", "mask_seed"},
    "inpaint": {"mask_file", "mask"},
    "denoise": set(),
    USER: {"scale"},
}


@pytest.mark.parametrize("case,size", [(n, s) for n in CASES for s in SIZES])
def test_params_round_trip_through_json(make, case, size):
    op = make(case, size, sigma_y=0.07, channels=3)
    params = json.loads(json.dumps(op.params()))
    assert set(params) == {"name", "sigma_y", "resolution", "channels"} | OWN_KEYS.get(case, set())
    assert params["name"] == type(op).name and params["resolution"] == size and params["channels"] == 3
    rebuilt = operator_from_params(params, trust_remote_code=case == USER)  # a user operator is code: opt in
    assert type(rebuilt) is type(op) and isinstance(rebuilt, Operator)
    assert rebuilt.params() == op.params()
    x = rand((2, 3, size, size), seed=13)
    y = op(x)
    assert torch.equal(rebuilt(x), y)
    assert torch.equal(rebuilt.adjoint(y), op.adjoint(y))
    assert torch.equal(rebuilt.lift(y), op.lift(y))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(rebuilt.measure(x, generator=g1), op.measure(x, generator=g2))


@pytest.mark.parametrize("case,key", [(KERNEL_FILE, "kernel_file"), ("inpaint", "mask_file")])
def test_file_operators_rebuild_from_params_without_their_file(make, files, tmp_path, case, key):
    original = Path(_SIZE_CFG[case][15][key])
    copy = tmp_path / original.name
    shutil.copy(files / original, copy)
    op = make(case, 15, channels=3, **{key: str(copy)})
    card = json.dumps({"operator": op.params()})
    copy.unlink()
    rebuilt = operator_from_params(json.loads(card)["operator"])
    assert rebuilt.params()[key] == str(copy)  # provenance kept
    x = rand((2, 3, 15, 15), seed=14)
    assert torch.equal(rebuilt(x), op(x)) and torch.equal(rebuilt.adjoint(x), op.adjoint(x))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(["operator.name=deblur", "operator.kernel_file={files}/kernel7x5.png"], id="kernel_file"),
        pytest.param(["operator.name=inpaint", "operator.mask_file={tmp}/mask32.png"], id="mask_file"),
        pytest.param([f"operator.name={USER}", "operator.scale=2"], id="import_path"),
    ],
)
def test_an_export_of_a_plugged_in_operator_loads_without_its_files(tiny_prior_dir, files, tmp_path, overrides):
    from davi.io.export import export_mapper, load_export, make_card
    from davi.models.mapper import Mapper
    from davi.models.prior import DiffusionPrior

    mask = np.full((32, 32), 255, np.uint8)
    mask[8:24, 12:20] = 0
    Image.fromarray(mask).save(tmp_path / "mask32.png")
    (tmp_path / "data").mkdir()
    for f in files.iterdir():
        shutil.copy(f, tmp_path / "data" / f.name)
    overrides = [o.format(files=tmp_path / "data", tmp=tmp_path) for o in overrides]
    cfg = load_config(None, [f"prior.path={tiny_prior_dir}", *overrides])
    prior = DiffusionPrior.from_pretrained(str(tiny_prior_dir))
    op = build_operator(cfg.operator, 32, 1)
    mapper = Mapper.from_prior_unet(prior.unet, h=0.1, tanh=False)
    export = export_mapper(mapper, tmp_path / "export", make_card(cfg, prior, op, 0))
    shutil.rmtree(tmp_path / "data")
    (tmp_path / "mask32.png").unlink()
    _, card, loaded = load_export(export, trust_remote_code=":" in cfg.operator.name)  # user code: opt in
    assert card["task"] == cfg.operator.name and type(loaded) is type(op) and loaded.params() == op.params()
    x = rand((2, 1, 32, 32), torch.float32, seed=16)
    assert torch.equal(loaded(x), op(x))


def test_the_mask_is_stored_as_rows_of_zeros_and_ones(make, files):
    op = make("inpaint", 12)
    rows = op.params()["mask"]
    png = np.asarray(Image.open(files / "mask12.png"))
    assert rows == ["".join("1" if v == 255 else "0" for v in r) for r in png]


@pytest.mark.parametrize("card", sorted((ROOT / "davi" / "assets" / "mappers").glob("*/card.json")))
def test_shipped_export_cards_still_load_to_the_same_operator(card):
    entry = json.loads(card.read_text())
    op = operator_from_params(entry["operator"])
    # Version-1 cards list every operator's keys; the operator keeps the ones it uses, same values.
    assert op.params() == {k: v for k, v in entry["operator"].items() if k in op.params()}
    if "family" in entry:  # a family export's operator is one member (drawn from seed 0), its config a family
        from davi.operators.family import OperatorFamily, family_from_config

        family = family_from_config(OperatorConfig(**entry["config"]["operator"]), entry["resolution"], entry["channels"])
        assert family.params() == OperatorFamily.from_params(entry["family"]).params()
        family.check(op)
        return
    from_config = build_operator(OperatorConfig(**entry["config"]["operator"]), entry["resolution"], entry["channels"])
    x = rand((2, entry["channels"], entry["resolution"], entry["resolution"]), seed=15)
    assert type(op) is type(from_config) and torch.equal(op(x), from_config(x))
    assert torch.equal(op.adjoint(x), from_config.adjoint(x))


def test_describe_names_the_task_in_one_line(make):
    descriptions = {case: make(case, 12).describe() for case in CASES}
    assert all(d and "\n" not in d for d in descriptions.values())
    assert descriptions["sr"] == "4x super-resolution (4x4 average pooling)"
    assert descriptions["deblur"] == "Gaussian deblurring (kernel 5, std 1.2)"
    assert descriptions[KERNEL_FILE] == "deblurring (3x5 kernel from kernel3x5.npy)"
    assert descriptions["box_inpaint"] == "box inpainting (centred 6x6 box missing)"
    assert descriptions["random_inpaint"] == "random inpainting (30% of pixels missing, mask seed 7)"
    assert descriptions["inpaint"].startswith("inpainting (") and "mask12.png" in descriptions["inpaint"]
    assert descriptions[USER] == USER  # the default: the name


def test_params_of_a_different_operator_differ(make):
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
        (dict(name="inpaint"), 12, "operator.mask_file"),  # inpaint needs a mask
        (dict(name="sr", kernel_file="k.npy"), 12, "operator.kernel_file"),  # read by deblur only
        (dict(name="box_inpaint", mask_file="m.png"), 12, "operator.mask_file"),
        (dict(name="deblur", kernel_file="k.npy", kernel_size=5), 12, "operator.kernel_file"),
    ],
)
def test_bad_config_names_the_key(cfg, resolution, key):
    with pytest.raises(OperatorError, match=key.replace(".", r"\.")) as info:
        build_operator(OperatorConfig(**cfg), resolution, 1)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def _save(path: Path, content) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif path.suffix == ".png":
        Image.fromarray(np.asarray(content, dtype=np.uint8)).save(path)
    else:
        np.save(path, content, allow_pickle=True)


_NAN3 = np.array([[0, 1, 0], [1, np.nan, 1], [0, 1, 0]])
_INF3 = np.array([[0, 1, 0], [1, np.inf, 1], [0, 1, 0]])


@pytest.mark.parametrize(
    "file,content,problem",
    [
        ("missing.npy", None, "no such file"),
        ("garbage.npy", b"not an array", "unreadable"),
        ("garbage.png", b"not an image", "unreadable"),
        ("objects.npy", np.array([None, {}], dtype=object), "unreadable"),  # pickles are never loaded
        ("words.npy", np.array([["a", "b"]]), "expected a real-valued array"),
        ("cube.npy", np.ones((3, 3, 3)), "expected a 2-D array"),
        ("even.npy", np.ones((4, 5)), "has an even side"),
        ("huge.npy", np.ones((25, 25)), "too large for a 12 x 12 image"),
        ("nan.npy", _NAN3, "NaN or infinite"),
        ("inf.npy", _INF3, "NaN or infinite"),
        ("zeros.npy", np.zeros((3, 3)), "all zeros"),
        ("zeros.png", np.zeros((3, 3)), "all zeros"),
        ("negative.npy", -np.ones((3, 3)), "sums to -9"),
        ("cancels.npy", np.array([[0, 0, 0], [1, 0, -1], [0, 0, 0]]), "sums to 0"),
    ],
)
def test_a_bad_kernel_file_is_one_line_naming_file_and_problem(tmp_path, file, content, problem):
    path = tmp_path / file
    if content is not None:
        _save(path, content)
    with pytest.raises(OperatorError) as info:
        build_operator(OperatorConfig(name="deblur", kernel_file=str(path)), 12, 1)
    msg = str(info.value)
    assert msg.startswith(f"operator.kernel_file: {path}: ") and problem in msg and "\n" not in msg, msg


@pytest.mark.parametrize(
    "file,content,problem",
    [
        ("missing.png", None, "no such file"),
        ("garbage.png", b"not an image", "unreadable"),
        ("small.png", np.full((10, 10), 255), "mask shape (10, 10) does not match the 12 x 12 images"),
        ("wide.npy", np.ones((12, 13)), "mask shape (12, 13) does not match"),
        ("gray.png", np.pad(np.full((12, 6), 128), ((0, 0), (0, 6)), constant_values=255), "e.g. 0.501961"),
        ("half.npy", np.full((12, 12), 0.5), "values other than 0 (missing) and 1 (observed)"),
        ("nan.npy", np.where(np.eye(12) > 0, np.nan, 1.0), "NaN or infinite"),
        ("empty.png", np.zeros((12, 12)), "observes no pixel"),
        ("cube.npy", np.ones((1, 12, 12)), "expected a 2-D array"),
    ],
)
def test_a_bad_mask_file_is_one_line_naming_file_and_problem(tmp_path, file, content, problem):
    path = tmp_path / file
    if content is not None:
        _save(path, content)
    with pytest.raises(OperatorError) as info:
        build_operator(OperatorConfig(name="inpaint", mask_file=str(path)), 12, 1)
    msg = str(info.value)
    assert msg.startswith(f"operator.mask_file: {path}: ") and problem in msg and "\n" not in msg, msg


@pytest.mark.parametrize(
    "case,size,shape",
    [
        ("sr", 12, (1, 1, 13, 13)),  # not divisible by the scale
        ("box_inpaint", 12, (1, 1, 10, 10)),  # not the mask's size
        ("random_inpaint", 12, (2, 3, 12, 14)),
        ("inpaint", 12, (1, 1, 15, 15)),
        ("deblur", 12, (1, 1, 2, 2)),  # too small for the kernel's reflect padding
        (KERNEL_FILE, 12, (1, 1, 12, 2)),  # the 3 x 5 kernel pads 2 columns
        ("denoise", 12, (12, 12)),  # not (B, C, H, W)
    ],
)
def test_bad_image_shape_names_the_shape(make, case, size, shape):
    op = make(case, size)
    with pytest.raises(OperatorError, match=re_shape(shape)):
        op(torch.zeros(shape))


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_deblur_too_small_image_names_the_kernel(make, files):
    with pytest.raises(OperatorError, match="kernel_size=5"):
        make("deblur", 12)(torch.zeros(1, 1, 2, 2))
    with pytest.raises(OperatorError, match=r"\(3, 5\) kernel of operator\.kernel_file=.*kernel3x5\.npy"):
        make(KERNEL_FILE, 12)(torch.zeros(1, 1, 12, 2))


@pytest.mark.parametrize("case", CASES)
def test_check_measurement_names_expected_and_actual_shapes(make, case):
    op = make(case, 12, channels=3)
    image_shape = (2, 3, 12, 12)
    good = torch.zeros(op.measurement_shape(image_shape))
    op.check_measurement(good, image_shape)  # no error
    bad = torch.zeros(2, 3, 5, 5)
    with pytest.raises(OperatorError) as info:
        op.check_measurement(bad, image_shape)
    msg = str(info.value)
    assert "(2, 3, 5, 5)" in msg and str(op.measurement_shape(image_shape)) in msg


def test_check_measurement_rejects_a_wrong_batch(make):
    op = make("sr", 12)
    with pytest.raises(OperatorError, match=re_shape((4, 1, 3, 3))):
        op.check_measurement(torch.zeros(4, 1, 3, 3), (2, 1, 12, 12))


@pytest.mark.parametrize(
    "case,change,key",
    [
        ("random_inpaint", lambda p: p.pop("sigma_y"), "missing key 'sigma_y'"),
        ("random_inpaint", lambda p: p.pop("resolution"), "missing key 'resolution'"),
        ("random_inpaint", lambda p: p.pop("mask_seed"), "missing key 'mask_seed'"),
        ("random_inpaint", lambda p: p.update(colour=1), "unknown key 'colour'"),
        ("random_inpaint", lambda p: p.update(name="warp"), "operator.name"),
        ("random_inpaint", lambda p: p.update(mask_seed="7"), "operator.mask_seed"),
        (KERNEL_FILE, lambda p: p.update(kernel=[[1.0, 1.0]]), "operator params: kernel: kernel shape (1, 2) has an even side"),
        (KERNEL_FILE, lambda p: p.update(kernel="x"), "operator params: kernel: not an array of numbers"),
        ("inpaint", lambda p: p["mask"].__setitem__(0, "2" * 12), "operator params: mask: rows must hold only"),
        ("inpaint", lambda p: p["mask"].pop(), "operator params: mask: mask shape (11, 12)"),
        ("inpaint", lambda p: p.update(scale=2), "unknown key"),  # 'scale' is a version-1 key, but not inpaint's
    ],
)
def test_bad_params_name_the_key(make, case, change, key):
    params = make(case, 12).params()
    change(params)
    with pytest.raises(OperatorError) as info:
        operator_from_params(params)
    assert key in str(info.value) and "\n" not in str(info.value)
