"""Operator families (davi/operators/family.py): draws, ranges, integer sets, log-uniform noise,
membership checks, params, the condition vector, OperatorBatch and the config keys.

Every member kind is covered: the four of the issue's YAML, a file kernel, a file mask, denoising
and a user operator by import path (tests/operator_plugin.py). Images are 32 px, one channel;
every draw is seeded.
"""

import json
import math

import numpy as np
import pytest
import torch
from operator_plugin import Decimate
from PIL import Image

from davi.config import ConfigError, OperatorConfig, load_config
from davi.operators import (
    BoxInpaint,
    OperatorBatch,
    OperatorError,
    OperatorFamily,
    build_operator,
    family_from_config,
)
from davi.training.losses import consistency_loss

RES = 32
SIGMA = [0.01, 0.2]
ISSUE = [  # the issue's YAML
    {"name": "sr", "scale": [2, 4]},
    {"name": "deblur", "kernel_std": [0.5, 3.0]},
    {"name": "box_inpaint", "box_size": [8, 16]},
    {"name": "random_inpaint", "drop_fraction": [0.2, 0.8]},
]
KINDS = {
    "sr": {"name": "sr", "scale": [2, 4]},
    "deblur": {"name": "deblur", "kernel_std": [0.5, 3.0]},
    "box_inpaint": {"name": "box_inpaint", "box_size": [8, 16]},
    "random_inpaint": {"name": "random_inpaint", "drop_fraction": [0.2, 0.8]},
    "kernel_file": {"name": "deblur", "kernel_file": "kernel3x5.npy"},
    "mask_file": {"name": "inpaint", "mask_file": "mask.png"},
    "denoise": {"name": "denoise"},
    "plugin": {"name": Decimate.name, "scale": 2},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("family_files")
    rng = np.random.default_rng(0)
    np.save(d / "kernel3x5.npy", rng.uniform(0.1, 1.0, (3, 5)))  # asymmetric: a flip would show
    Image.fromarray(np.where(rng.random((RES, RES)) < 0.6, 255, 0).astype(np.uint8)).save(d / "mask.png")
    return d


def family(members, sigma_y=SIGMA, files=None):
    members = [dict(m) for m in members]
    for m in members:
        for key in ("kernel_file", "mask_file"):
            if key in m:
                m[key] = str(files / m[key])
    return OperatorFamily.from_config(OperatorConfig(family=members, sigma_y=sigma_y), RES, 1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand(shape, seed):
    return torch.randn(shape, generator=gen(seed), dtype=torch.float64)


# -- every member kind ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_drawn_operator_has_an_exact_adjoint(kind, files):
    fam = family([KINDS[kind]], files=files)
    for k, op in enumerate(fam.draw_many(4, gen(1))):
        x = rand((2, 1, RES, RES), k)
        y = rand(op.measurement_shape(x.shape), 100 + k)
        lhs, rhs = (op(x) * y).sum(), (x * op.adjoint(y)).sum()
        assert abs(float(lhs - rhs)) <= 1e-10 * max(1.0, abs(float(lhs))), (kind, op.params())
        fam.check(op)


@pytest.mark.parametrize("kind", KINDS)
def test_coverage_is_A_transpose_A_of_ones(kind, files):
    fam = family([KINDS[kind]], files=files)
    batch = OperatorBatch(fam.draw_many(3, gen(2)))
    cov = batch.coverage(dtype=torch.float64)
    assert cov.shape == (3, 1, RES, RES)
    for op, c in zip(batch, cov):
        if op.name == "sr":
            assert torch.allclose(c, torch.full_like(c, 1 / op.scale**2))
        elif op.name in ("box_inpaint", "random_inpaint", "inpaint"):
            assert torch.equal(c[0], op.mask[0, 0].double())
        elif op.name == "deblur":  # 1 away from the borders, where reflect padding folds the tails back
            ph, pw = op.pads
            assert torch.allclose(c[:, ph + 1 : RES - ph - 1, pw + 1 : RES - pw - 1], torch.ones(1, dtype=torch.float64), atol=1e-12)
        elif op.name == "denoise":
            assert torch.equal(c, torch.ones_like(c))
        else:  # Decimate: 1 on the kept pixels, 0 elsewhere
            assert float(c.sum()) == (RES // op.scale) ** 2


# -- draws -----------------------------------------------------------------------------------


def test_draws_stay_inside_their_ranges_and_every_member_is_drawn():
    fam = family(ISSUE)
    ops = fam.draw_many(300, gen(3))
    assert {op.name for op in ops} == {"sr", "deblur", "box_inpaint", "random_inpaint"}
    for op in ops:
        assert SIGMA[0] <= op.sigma_y <= SIGMA[1]
        if op.name == "sr":
            assert op.scale in (2, 4)
        elif op.name == "deblur":
            assert 0.5 <= op.kernel_params["kernel_std"] <= 3.0 and op.kernel_params["kernel_size"] == 9
        elif op.name == "box_inpaint":
            assert 8 <= op.box_size <= 16
            assert 0 <= op.box_top <= RES - op.box_size and 0 <= op.box_left <= RES - op.box_size
            assert int((op.mask == 0).sum()) == op.box_size**2  # the whole box fits
        else:
            assert 0.2 <= op.drop_fraction <= 0.8
    stds = [op.kernel_params["kernel_std"] for op in ops if op.name == "deblur"]
    assert min(stds) < 1.0 and max(stds) > 2.5  # the range is covered, not one value


@pytest.mark.parametrize("member, resolution, expected", [
    ({"name": "sr", "scale": [2, 4]}, 32, (2, 4)),  # 3 does not divide 32
    ({"name": "sr", "scale": [2, 8]}, 24, (2, 3, 4, 6, 8)),
    ({"name": "deblur", "kernel_size": [3, 8]}, 32, (3, 5, 7)),  # odd sizes only
    ({"name": "box_inpaint", "box_size": [20, 40]}, 32, tuple(range(20, 32))),  # the box must fit
])
def test_an_integer_range_holds_the_integers_the_operator_accepts(member, resolution, expected):
    fam = OperatorFamily.from_config(OperatorConfig(family=[member], sigma_y=SIGMA), resolution, 1)
    key = next(k for k, v in member.items() if isinstance(v, list))
    assert fam.members[0].choices[key] == expected
    drawn = {fam.draw(g).params()[key] for g in [gen(s) for s in range(60)]}
    assert drawn == set(expected)


def test_sigma_y_is_log_uniform():
    fam = family([{"name": "denoise"}])
    g = gen(4)
    s = torch.tensor([fam.draw_sigma(g) for _ in range(4000)], dtype=torch.float64)
    assert float(s.min()) >= SIGMA[0] and float(s.max()) <= SIGMA[1]
    geometric_mean = math.sqrt(SIGMA[0] * SIGMA[1])  # 0.0447; a uniform draw's median would be 0.105
    assert abs(float(s.median()) / geometric_mean - 1) < 0.06
    u = (s.log() - math.log(SIGMA[0])) / math.log(SIGMA[1] / SIGMA[0])
    assert abs(float(u.mean()) - 0.5) < 0.02 and abs(float(u.var()) - 1 / 12) < 0.01  # uniform in log
    assert family([{"name": "denoise"}], sigma_y=0.05).draw(gen()).sigma_y == 0.05  # a number is fixed


def test_box_positions_vary_and_a_given_position_is_kept():
    ops = family([{"name": "box_inpaint", "box_size": 8}]).draw_many(50, gen(5))
    positions = {(op.box_top, op.box_left) for op in ops}
    assert len(positions) > 30
    assert {t for t, _ in positions} >= {0, RES - 8} or len({t for t, _ in positions}) > 15
    fixed = family([{"name": "box_inpaint", "box_size": 8, "box_top": 2}]).draw_many(10, gen(5))
    assert {(op.box_top, op.box_left) for op in fixed} == {(2, 12)}  # left centred


def test_random_inpaint_masks_differ_per_image_with_the_right_drop_fraction():
    ops = family([{"name": "random_inpaint", "drop_fraction": 0.3}]).draw_many(20, gen(6))
    masks = torch.stack([op.mask[0, 0] for op in ops])
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 20
    assert all(int((m == 0).sum()) == round(0.3 * RES * RES) for m in masks)
    ranged = family([{"name": "random_inpaint", "drop_fraction": [0.2, 0.8]}]).draw_many(200, gen(7))
    dropped = torch.tensor([float((op.mask == 0).float().mean()) for op in ranged])
    assert abs(float(dropped.mean()) - 0.5) < 0.04
    seeded = family([{"name": "random_inpaint", "mask_seed": 3}]).draw_many(5, gen(6))
    assert len({op.mask_seed for op in seeded}) == 1  # a given seed is a fixed mask


def test_the_same_seed_gives_the_same_draws():
    fam = family(ISSUE)
    a = [op.params() for op in fam.draw_many(20, gen(8))]
    b = [op.params() for op in fam.draw_many(20, gen(8))]
    c = [op.params() for op in fam.draw_many(20, gen(9))]
    assert a == b and a != c


# -- membership -------------------------------------------------------------------------------


def op_of(sigma_y=0.05, **cfg):
    return build_operator(OperatorConfig(sigma_y=sigma_y, **cfg), RES, 1)


def test_check_accepts_settings_inside_the_family_never_drawn_as_such():
    fam = family(ISSUE)
    for op in [op_of(0.08, name="deblur", kernel_std=1.7), op_of(0.03, name="random_inpaint", drop_fraction=0.45),
               op_of(0.15, name="sr", scale=4), op_of(0.2, name="box_inpaint", box_size=16),
               op_of(0.01, name="box_inpaint", box_size=8, box_top=0, box_left=24)]:
        fam.check(op)
        assert op in fam


@pytest.mark.parametrize("cfg, sigma_y, message", [
    (dict(name="denoise"), 0.05, "'denoise' is not a member (members: sr, deblur, box_inpaint, random_inpaint)"),
    (dict(name="sr", scale=8), 0.05, "sr: scale 8 is not one of the family's {2, 4}"),
    (dict(name="deblur", kernel_std=3.5), 0.05, "deblur: kernel_std 3.5 is outside the family's range [0.5, 3]"),
    (dict(name="deblur", kernel_std=1.0, kernel_size=5), 0.05, "deblur: kernel_size 5 is not the family's 9"),
    (dict(name="box_inpaint", box_size=4), 0.05, "box_inpaint: box_size 4 is not one of the family's {8, 9, ..., 16}"),
    (dict(name="random_inpaint", drop_fraction=0.9), 0.05, "drop_fraction 0.9 is outside the family's range [0.2, 0.8]"),
    (dict(name="sr", scale=2), 0.5, "sigma_y 0.5 is outside the family's range [0.01, 0.2]"),
    (dict(name="sr", scale=2), 0.001, "sigma_y 0.001 is outside the family's range [0.01, 0.2]"),
])
def test_check_refuses_an_outsider_in_one_line_naming_value_and_range(cfg, sigma_y, message):
    fam = family(ISSUE)
    op = op_of(sigma_y, **cfg)
    with pytest.raises(OperatorError) as info:
        fam.check(op)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("operator outside the family: ")
    assert op not in fam


def test_check_refuses_another_resolution_and_another_kernel_file(files):
    fam = family([KINDS["kernel_file"]], files=files)
    with pytest.raises(OperatorError, match="deblur: the family's member sets kernel, this operator does not"):
        fam.check(op_of(name="deblur", kernel_std=1.0))
    other = build_operator(OperatorConfig(name="sr", scale=2), 64, 1)
    with pytest.raises(OperatorError, match="sr: resolution 64 is not the family's 32"):
        family(ISSUE).check(other)


# -- params and the condition vector ----------------------------------------------------------


def test_params_round_trip_through_json_without_the_data_files(files, tmp_path):
    for name in ("kernel3x5.npy", "mask.png"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    fam = family([*ISSUE, KINDS["kernel_file"], KINDS["mask_file"], KINDS["denoise"]], files=tmp_path)
    params = json.loads(json.dumps(fam.params()))
    for name in ("kernel3x5.npy", "mask.png"):
        (tmp_path / name).unlink()
    back = OperatorFamily.from_params(params)
    assert back.params() == params and back.describe() == fam.describe()
    assert [op.params() for op in back.draw_many(30, gen(10))] == [op.params() for op in fam.draw_many(30, gen(10))]
    fixed = OperatorFamily.from_params(json.loads(json.dumps(family(ISSUE, sigma_y=0.05).params())))
    assert fixed.params()["sigma_y"] == 0.05


def test_an_import_path_member_in_params_needs_trust_remote_code():
    params = family([KINDS["plugin"]]).params()
    with pytest.raises(OperatorError, match="trust_remote_code"):
        OperatorFamily.from_params(params)
    assert OperatorFamily.from_params(params, trust_remote_code=True).params() == params


def test_condition_vector_layout():
    fam = family(ISSUE)
    assert fam.cond_dim == 4 + 4 + 1  # one-hot, one ranged key per member, log sigma_y
    mid_sigma = math.sqrt(SIGMA[0] * SIGMA[1])
    v = fam.condition_vector(op_of(mid_sigma, name="deblur", kernel_std=1.75))
    assert torch.allclose(v, torch.tensor([0, 1, 0, 0, 0, 0.5, 0, 0, 0.5]))
    v = fam.condition_vector(op_of(SIGMA[1], name="box_inpaint", box_size=10, box_top=0, box_left=0))
    assert torch.allclose(v, torch.tensor([0, 0, 1, 0, 0, 0, 0.25, 0, 1]))
    v = fam.condition_vector(op_of(SIGMA[0], name="sr", scale=4))
    assert torch.allclose(v, torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 0]))
    two = family([{"name": "deblur", "kernel_size": [3, 7], "kernel_std": [1.0, 2.0]}, {"name": "sr", "scale": 2}], 0.05)
    assert two.cond_dim == 2 + 2 + 1
    v = two.condition_vector(op_of(0.05, name="deblur", kernel_size=5, kernel_std=2.0))
    assert torch.allclose(v, torch.tensor([1.0, 0, 0.5, 1.0, 0]))  # a fixed sigma_y: 0
    with pytest.raises(OperatorError, match="outside the family"):
        fam.condition_vector(op_of(name="denoise"))


def test_describe_is_one_line_naming_members_and_noise():
    text = family(ISSUE).describe()
    assert "\n" not in text
    for part in ("sr (scale in {2, 4})", "deblur (kernel_std in [0.5, 3])", "position drawn",
                 "mask drawn per image", "sigma_y log-uniform in [0.01, 0.2]"):
        assert part in text, text


# -- one training batch -----------------------------------------------------------------------


def test_operator_batch_residual_is_each_images_consistency_loss():
    fam = family(ISSUE)
    batch = OperatorBatch(fam.draw_many(8, gen(11)))
    x = torch.rand(8, 1, RES, RES, generator=gen(12)) * 2 - 1
    ys = batch.measure(x, gen(13))
    assert [tuple(y.shape) for y in ys] == [op.measurement_shape((1, 1, RES, RES)) for op in batch]
    x_hat = x + 0.1 * torch.randn(x.shape, generator=gen(14))
    r = batch.residual(ys, x_hat)
    expected = torch.stack([consistency_loss(op, y, x_hat[i : i + 1]) for i, (op, y) in enumerate(zip(batch, ys))])
    assert r.shape == (8,) and torch.allclose(r, expected, rtol=1e-6, atol=0)
    assert len(set(r.tolist())) == 8  # per image, not the batch mean
    assert batch.measurement_numel == [math.prod(y.shape) for y in ys]
    assert torch.equal(batch.residual(batch(x), x), torch.zeros(8))


def test_operator_batch_lift_sigma_and_condition_vectors():
    fam = family(ISSUE)
    ops = fam.draw_many(5, gen(15))
    batch = OperatorBatch(ops)
    ys = batch.measure(torch.zeros(5, 1, RES, RES), gen(16))
    lifted = batch.lift(ys)
    assert lifted.shape == (5, 1, RES, RES)
    assert torch.equal(lifted[2:3], ops[2].lift(ys[2]))
    assert torch.allclose(batch.sigma_y, torch.tensor([op.sigma_y for op in ops]))
    assert torch.equal(batch.condition_vectors(fam), torch.stack([fam.condition_vector(op) for op in ops]))
    with pytest.raises(OperatorError, match="x has 4 images, the batch has 5 operators"):
        batch.measure(torch.zeros(4, 1, RES, RES))


# -- the box position -------------------------------------------------------------------------


def test_a_centred_box_keeps_its_params_and_a_moved_box_names_its_corner():
    centred = op_of(name="box_inpaint", box_size=8)
    assert set(centred.params()) == {"name", "sigma_y", "resolution", "channels", "box_size"}
    assert op_of(name="box_inpaint", box_size=8, box_top=12, box_left=12).params() == centred.params()
    moved = op_of(name="box_inpaint", box_size=8, box_top=0, box_left=24)
    assert moved.params()["box_top"] == 0 and moved.params()["box_left"] == 24
    assert torch.equal(moved.mask[0, 0, :8, 24:], torch.zeros(8, 8)) and float(moved.mask.sum()) == RES * RES - 64
    assert "row 0, column 24" in moved.describe() and "centred" in centred.describe()
    assert isinstance(moved, BoxInpaint)


@pytest.mark.parametrize("cfg, key", [
    (dict(box_size=8, box_top=25), "operator.box_top"),
    (dict(box_size=8, box_left=-2), "operator.box_left"),
    (dict(box_size=0, box_top=17), "operator.box_top"),  # 0: a 16 px box
])
def test_a_box_that_does_not_fit_names_the_key(cfg, key):
    with pytest.raises(OperatorError, match=key.replace(".", r"\.")):
        op_of(name="box_inpaint", **cfg)


# -- configuration ----------------------------------------------------------------------------


FAMILY_OVERRIDE = "operator.family=[{name: sr, scale: [2, 4]}, {name: deblur, kernel_std: [1, 3]}]"


def test_the_issues_config_loads_and_builds():
    cfg = load_config(None, [FAMILY_OVERRIDE, "operator.sigma_y=[0.01, 0.2]", "mapper.condition=embedding",
                             "davi.objective=sampler", "davi.lambda_reg=0"])
    assert cfg.operator.family[1] == {"name": "deblur", "kernel_std": [1.0, 3.0]}  # typed like operator.kernel_std
    fam = family_from_config(cfg.operator, cfg.data.resolution, cfg.data.channels)
    assert [m.name for m in fam.members] == ["sr", "deblur"] and (fam.sigma_lo, fam.sigma_hi) == (0.01, 0.2)
    assert family_from_config(load_config().operator, 32, 1) is None  # no family: the single operator


def test_a_family_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, [FAMILY_OVERRIDE, "operator.sigma_y=[0.01, 0.2]", "mapper.condition=maps"])
    f = tmp_path / "family.yaml"
    f.write_text(cfg.to_yaml())
    assert load_config(f) == cfg


@pytest.mark.parametrize("overrides, message", [
    (["operator.sigma_y=[0.01, 0.2]"], "operator.sigma_y: a range [0.01, 0.2] needs operator.family"),
    ([FAMILY_OVERRIDE], "mapper.condition: a family needs the mapper conditioned: maps or embedding"),
    (["mapper.condition=maps"], "mapper.condition: maps conditions on an operator.family"),
    (["mapper.condition=film"], "mapper.condition: 'film' is not one of none, maps, embedding"),
    (["operator.sigma_y=[0.2, 0.01]"], "operator.sigma_y: a range is [lo, hi] with 0 < lo <= hi"),
    (["operator.sigma_y=[0, 0.1]"], "operator.sigma_y: a range is [lo, hi] with 0 < lo <= hi"),
    (["operator.sigma_y=[0.1]"], "operator.sigma_y: a range is [lo, hi]"),
    (["operator.family=3"], "operator.family: expected a list of members"),
    (["operator.family=[{scale: 2}]"], "operator.family[0].name: every member names its operator"),
    (["operator.family=[{name: sr}, {name: blurr}]"], "operator.family[1].name: 'blurr' is not one of deblur, sr"),
    (["operator.family=[{name: sr, scale: [2, x]}]"], "operator.family[0].scale: a range is [lo, hi] with two finite numbers"),
    (["operator.family=[{name: sr, scale: [2.5, 4]}]"], "operator.family[0].scale: an integer setting ranges over integers"),
    (["operator.family=[{name: sr, scale: [4, 2]}]"], "operator.family[0].scale: a range [lo, hi] needs lo <= hi"),
    (["operator.family=[{name: sr, colour: 1}]"], "operator.family[0].colour: unknown key (valid: name, kernel_size"),
    (["operator.family=[{name: sr, sigma_y: 0.1}]"], "operator.family[0].sigma_y: the noise level is the family's"),
    (["operator.family=[{name: deblur, kernel_file: [a.npy, b.npy]}]"], "operator.family[0].kernel_file: a name or file is fixed"),
])
def test_a_bad_family_config_is_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("member, message", [
    ({"name": "sr", "scale": [5, 7]}, "operator.family[0].scale: no integer in [5, 7] is accepted at 32 px"),
    ({"name": "random_inpaint", "drop_fraction": [0.5, 1.0]}, "operator.family[0].drop_fraction: expected a number in [0, 1)"),
    ({"name": "deblur", "kernel_size": 4}, "operator.family[0].kernel_size: must be odd"),
    ({"name": "sr", "kernel_size": [3, 5]}, "operator.family[0].kernel_size: operator 'sr' has no setting kernel_size"),
    ({"name": "inpaint"}, "operator.family[0].mask_file: the inpaint operator needs a mask file"),
])
def test_a_member_its_operator_refuses_is_one_line_naming_the_key(member, message):
    with pytest.raises(OperatorError) as info:
        family([member])
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
