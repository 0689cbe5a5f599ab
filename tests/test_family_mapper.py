"""The family mapper (issue 30): the conditioned mapper, the per-image sampler weights, training end to end
on a tiny prior, resume, and restoring any member (and nothing outside the family) through the Restorer
and ``davi restore``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from davi.config import ConfigError, load_config
from davi.models.conditioning import Condition, coverage, family_condition, map_channels
from davi.models.mapper import Mapper
from davi.operators import OperatorError, operator_from_params
from davi.operators.family import OperatorBatch, OperatorFamily, family_from_config

ROOT = Path(__file__).resolve().parents[1]
FAMILY = [{"name": "sr", "scale": [2, 4]}, {"name": "deblur", "kernel_size": 9, "kernel_std": [0.5, 3.0]},
          {"name": "box_inpaint", "box_size": [8, 16]}, {"name": "random_inpaint", "drop_fraction": [0.2, 0.8]}]


def family_cfg(prior_dir, out, *overrides, config: str = "family_mnist_paired.yaml"):
    return load_config(ROOT / "configs" / config, [
        f"train.output_dir={out}", f"prior.path={prior_dir}", "train.batch_size=8", "train.max_steps=4",
        "train.checkpoint_every=2", "log.image_every=0", "log.progress=false", "log.num_val=4",
        "log.num_samples=2", "davi.calibration_images=100", *overrides])


def the_family(cfg) -> OperatorFamily:
    return family_from_config(cfg.operator, cfg.data.resolution, cfg.data.channels)


@pytest.fixture(scope="module")
def tiny_unet(tiny_prior_dir):
    from davi.models.prior import DiffusionPrior

    return DiffusionPrior.from_pretrained(str(tiny_prior_dir)).unet


# -- the conditioned mapper ------------------------------------------------------------------------


def _condition(b: int, dim: int, seed: int = 0) -> Condition:
    g = torch.Generator().manual_seed(seed)
    return Condition(torch.randn(b, 2, 32, 32, generator=g), torch.randn(b, dim, generator=g))


def test_a_conditioned_warm_start_computes_what_the_prior_copy_does(tiny_unet):
    plain = Mapper.from_prior_unet(tiny_unet, 0.1, False, 1000)
    cond = Mapper.from_prior_unet(tiny_unet, 0.1, False, 1000, cond_channels=2, cond_dim=5)
    x, a = torch.randn(3, 1, 32, 32), torch.full((3,), 999)
    with torch.no_grad():
        assert torch.equal(plain(x, a), cond(x, a, condition=_condition(3, 5)))
        # once the new weights move, the condition changes the output
        cond.cond_proj.weight.fill_(0.1)
        cond.net.conv_in.weight[:, 1:].fill_(0.1)
        assert not torch.allclose(cond(x, a, condition=_condition(3, 5, 1)), cond(x, a, condition=_condition(3, 5, 2)))


def test_a_conditioned_mapper_needs_its_condition_and_round_trips(tiny_unet, tmp_path):
    mapper = Mapper.from_prior_unet(tiny_unet, 0.1, False, 1000, cond_channels=2, cond_dim=5)
    with torch.no_grad():
        mapper.cond_proj.weight.normal_()
        mapper.net.conv_in.weight.normal_()
    x, a = torch.randn(2, 1, 32, 32), torch.full((2,), 999)
    with pytest.raises(ValueError, match="needs a condition"):
        mapper(x, a)
    mapper.save_pretrained(str(tmp_path), safe_serialization=True)
    loaded = Mapper.from_pretrained(str(tmp_path))
    assert loaded.conditioned and loaded.config.cond_dim == 5
    with torch.no_grad():
        assert torch.equal(mapper(x, a, condition=_condition(2, 5)), loaded(x, a, condition=_condition(2, 5)))


def test_family_condition_maps_say_what_was_measured_and_how_noisily():
    family = OperatorFamily.from_config(load_config(ROOT / "configs" / "family_mnist.yaml").operator, 32, 1)
    like = torch.zeros(3, 1, 32, 32)
    ops = [operator_from_params({"name": "sr", "scale": 2, "sigma_y": 0.01, "resolution": 32, "channels": 1}),
           operator_from_params({"name": "box_inpaint", "box_size": 8, "box_top": 0, "box_left": 4,
                                 "sigma_y": 0.2, "resolution": 32, "channels": 1}),
           operator_from_params({"name": "sr", "scale": 4, "sigma_y": math.sqrt(0.01 * 0.2), "resolution": 32,
                                 "channels": 1})]
    cond = family_condition(family, ops, like, embedding=True)
    assert cond.maps.shape == (3, map_channels(1), 32, 32) and cond.vector.shape == (3, family.cond_dim)
    assert torch.allclose(cond.maps[0, 0], torch.full((32, 32), 0.25))       # SR x2: each pixel 1/4 measured
    assert torch.allclose(cond.maps[2, 0], torch.full((32, 32), 1 / 16))     # SR x4
    assert cond.maps[1, 0, :8, 4:12].abs().max() == 0 and cond.maps[1, 0, 8:].min() == 1  # the hole, where it is
    # log sigma_y, normalised over [0.01, 0.2]: 0, 1 and the geometric middle 0.5
    assert torch.allclose(cond.maps[:, 1, 0, 0], torch.tensor([0.0, 1.0, 0.5]), atol=1e-6)
    assert family_condition(family, ops, like, embedding=False).vector is None
    with pytest.raises(ValueError, match="2 operators for a batch of 3"):
        family_condition(family, ops[:2], like, embedding=True)


def test_coverage_of_a_blur_is_one_away_from_the_border():
    op = operator_from_params({"name": "deblur", "kernel_size": 9, "kernel_std": 2.0, "sigma_y": 0.05,
                               "resolution": 32, "channels": 1})
    assert torch.allclose(coverage(op, torch.zeros(1, 1, 32, 32))[0, 0, 8:-8, 8:-8], torch.ones(16, 16), atol=1e-5)


# -- the recipe ------------------------------------------------------------------------------------


def test_per_image_weights_are_each_images_own_derived_weight(tiny_prior_dir, tmp_path):
    from davi.models.prior import DiffusionPrior
    from davi.training.losses import sampler_consistency_weight
    from davi.training.recipes.family import FamilyDraw, consistency_weights
    from davi.training.recipes.sampler import consistency_weight

    cfg = family_cfg(tiny_prior_dir, tmp_path, config="family_mnist.yaml")
    ab = DiffusionPrior.from_pretrained(str(tiny_prior_dir)).schedule.alphas_cumprod
    ops = the_family(cfg).draw_many(6, torch.Generator().manual_seed(0))
    draw = FamilyDraw(OperatorBatch(ops), [], None, None, torch.zeros(6, 1, 32, 32), None)
    w = consistency_weights(ab, cfg.davi.t_ikl, draw)
    for i, op in enumerate(ops):
        m = math.prod(op.measurement_shape((1, 1, 32, 32))[1:])
        assert w[i].item() == pytest.approx(sampler_consistency_weight(ab, cfg.davi.t_ikl, op.sigma_y, 1024, m))
    assert len(set(w.tolist())) == 6  # noisier images weigh less: one shared weight would be wrong for most
    # a single member's weight is the dedicated recipe's
    sr4 = load_config(ROOT / "configs" / "sr4_mnist_sampler.yaml", [f"prior.path={tiny_prior_dir}"])
    from davi.operators import build_operator

    op = build_operator(sr4.operator, 32, 1)
    draw = FamilyDraw(OperatorBatch([op]), [], None, None, torch.zeros(1, 1, 32, 32), None)
    prior = DiffusionPrior.from_pretrained(str(tiny_prior_dir))
    assert consistency_weights(ab, sr4.davi.t_ikl, draw)[0].item() == pytest.approx(consistency_weight(sr4, prior, op))


def test_ikl_horizons_follow_each_images_noise_level(tiny_prior_dir):
    """davi.ikl_noise_ratio: an image's IKL reads the t whose noise level is at most r sigma_y (at least t = 0, at
    most t_ikl); its timesteps stay below its own horizon, and its consistency weight is derived from it."""
    from davi.models.prior import DiffusionPrior
    from davi.training.losses import ikl_horizons, uniform_timesteps

    ab = DiffusionPrior.from_pretrained(str(tiny_prior_dir)).schedule.alphas_cumprod
    noise = ((1 - ab) / ab).sqrt()
    sigmas = torch.tensor([0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    h = ikl_horizons(ab, sigmas, 0.25, 20)
    assert h.tolist() == sorted(h.tolist()) and h[0] == 1 and h[-1] == 20  # monotone, clamped to [1, t_ikl]
    for s, k in zip(sigmas.tolist(), h.tolist()):
        if 1 < k < 20:  # the last t read is below r sigma_y, the next one above
            assert noise[k - 1] <= 0.25 * s < noise[k]
    t = uniform_timesteps(h.repeat(500), 3000, "cpu")
    assert (t < h.repeat(500)).all() and (t >= 0).all()
    assert set(t[h.repeat(500) == 20].tolist()) == set(range(20))  # uniform over its whole range


def test_the_noise_ratio_rule_keeps_the_objectives_optimum_calibrated_on_a_box():
    """Why the rule exists, in closed form (davi.analytic.davi_fixed_point, the digit-fitted Gaussian, a box at
    sigma_y 0.05): one t_ikl of 20 collapses the measured pixels' posterior spread (90% coverage ~0.4), the
    horizon of ratio 0.25 keeps the optimum calibrated (coverage >= 0.85)."""
    from davi.analytic import davi_fixed_point, exact_posteriors, held_out_measurements
    from davi.analytic.problems import make_operator, make_prior
    from davi.training.losses import ikl_horizons, sampler_consistency_weight

    prior, op = make_prior("gauss"), make_operator("box", 0.05)
    _, y = held_out_measurements(prior, op, 2, seed=1, ambiguous=False)
    post = exact_posteriors(prior, op, y)
    ab = prior.schedule.alphas_cumprod
    M = math.prod(op.measurement_shape((1, *prior.shape))[1:])

    def coverage(t_ikl: int) -> float:
        mu, C = davi_fixed_point(prior, op, y, sampler_consistency_weight(ab, t_ikl, 0.05, prior.dim, M), t_ikl)
        half = 1.6449 * C.diagonal().sqrt()  # the optimum's per-pixel central 90% interval (its C is y-free)
        inside = []  # the exact posterior's mass inside it, per pixel
        for b, p in enumerate(post):
            normal = torch.distributions.Normal(p.mean, p.cov.diagonal().sqrt())
            inside.append(normal.cdf(mu[b] + half) - normal.cdf(mu[b] - half))
        return float(torch.cat(inside).mean())

    rule = int(ikl_horizons(ab, torch.tensor([0.05]), 0.25, 20)[0])
    assert coverage(rule) >= 0.85 > 0.6 > coverage(20)


def test_a_family_needs_a_conditioned_score_network(tiny_prior_dir, tmp_path):
    from davi.training.recipes import train_job

    with pytest.raises(ConfigError, match="davi.score_condition"):
        train_job(family_cfg(tiny_prior_dir, tmp_path / "run", "davi.score_condition=none"))


@pytest.fixture(scope="module")
def family_export(tiny_prior_dir, tmp_path_factory):
    """4 paired steps, then 4 sampler steps warm-started from them, both on the family: the sampler's export."""
    from davi.training.recipes import train_job

    root = tmp_path_factory.mktemp("family")
    train_job(family_cfg(tiny_prior_dir, root / "paired"))
    train_job(family_cfg(tiny_prior_dir, root / "sampler", f"davi.init_mapper={root / 'paired' / 'export'}",
                         "davi.score_warmup=1", config="family_mnist.yaml"))
    return root / "sampler" / "export"


def test_a_family_sampler_trains_with_per_image_ikl_horizons(tiny_prior_dir, tmp_path):
    """davi.ikl_noise_ratio through the whole recipe (horizons into s_psi's DSM, the IKL and the weights); the
    paired objective, which has no derived weight, refuses it in one line."""
    from davi.training.recipes import train_job

    out = train_job(family_cfg(tiny_prior_dir, tmp_path / "rule", "davi.ikl_noise_ratio=0.25", "train.max_steps=2",
                               "davi.calibration_images=0", "davi.init_mapper=", config="family_mnist.yaml"))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["nonfinite_total"] == 0
    with pytest.raises(ConfigError, match="davi.ikl_noise_ratio"):
        family_cfg(tiny_prior_dir, tmp_path / "paired", "davi.ikl_noise_ratio=0.25")


def test_the_family_trains_and_exports_a_card_naming_its_family(family_export, tiny_prior_dir):
    card = json.loads((family_export / "card.json").read_text())
    assert card["task"] == "family" and card["objective"] == "sampler" and card["condition"] == "embedding"
    family = OperatorFamily.from_params(card["family"])
    assert [m.name for m in family.members] == ["sr", "deblur", "box_inpaint", "random_inpaint"]
    mapper = Mapper.from_pretrained(str(family_export))
    assert mapper.config.cond_channels == 2 and mapper.config.cond_dim == family.cond_dim
    # thresholds per noise level over held-out images, each measured by its own member, at every level
    entry = card["consistency"]
    assert entry["n"] == 5 * 100 and entry["threshold"] >= entry["quantiles"]["0.98"] > entry["quantiles"]["0.5"]
    levels = entry["by_sigma"]
    assert levels["sigma_y"][0] == pytest.approx(0.01) and levels["sigma_y"][-1] == pytest.approx(0.2)
    assert len(levels["threshold"]) == 5 and levels["images"] == 100


def test_family_statistics_measure_each_image_with_its_own_member(family_export):
    from davi.solvers.family_consistency import family_statistics

    card = json.loads((family_export / "card.json").read_text())
    family, mapper = OperatorFamily.from_params(card["family"]), Mapper.from_pretrained(str(family_export))
    x = torch.zeros(6, 1, 32, 32)
    r, sigmas = family_statistics(mapper, family, x, seed=3)
    assert r.shape == (6,) and len(set(sigmas.tolist())) == 6 and (r > 0).all()
    assert torch.equal(family_statistics(mapper, family, x, seed=3)[0], r)  # seeded: the same draws
    _, fixed = family_statistics(mapper, family, x, seed=3, sigma_y=0.05)
    assert torch.equal(fixed, torch.full((6,), 0.05, dtype=torch.float64))


def test_resume_continues_the_same_family_draws(tiny_prior_dir, tmp_path):
    """A run stopped at step 2 and resumed gives the weights of an uninterrupted run: the members drawn after
    the resume are the ones the uninterrupted run drew (they come from the checkpointed global RNG)."""
    from safetensors.torch import load_file

    from davi.training.recipes import train_job

    train_job(family_cfg(tiny_prior_dir, tmp_path / "full"))
    train_job(family_cfg(tiny_prior_dir, tmp_path / "cut", "train.max_steps=2"))
    train_job(family_cfg(tiny_prior_dir, tmp_path / "cut"), resume="latest")
    full = load_file(tmp_path / "full" / "export" / "diffusion_pytorch_model.safetensors")
    cut = load_file(tmp_path / "cut" / "export" / "diffusion_pytorch_model.safetensors")
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)


# -- restoring members -----------------------------------------------------------------------------


def test_the_restorer_restores_members_and_refuses_outsiders(family_export, tiny_prior_dir):
    import davi

    restorer = davi.Restorer.from_pretrained(family_export)
    op = operator_from_params({"name": "deblur", "kernel_size": 9, "kernel_std": 1.7, "sigma_y": 0.08,
                               "resolution": 32, "channels": 1})
    x = torch.zeros(2, 1, 32, 32)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    out = restorer(y, samples=2, operator={"name": "deblur", "kernel_std": 1.7}, sigma_y=0.08, progress=False)
    again = restorer(y, samples=2, operator=op, progress=False)
    assert out.samples.shape == (2, 2, 1, 32, 32) and torch.equal(out.samples, again.samples)
    with pytest.raises(davi.ExportError, match="name the one that measured y"):
        restorer(y, progress=False)
    with pytest.raises(OperatorError, match="sigma_y 0.5 is outside the family's range"):
        restorer(y, operator=op, sigma_y=0.5, progress=False)
    with pytest.raises(OperatorError, match="scale 8 is not one of the family's"):
        restorer(y, operator={"name": "sr", "scale": 8}, sigma_y=0.05, progress=False)
    with pytest.raises(OperatorError, match="'denoise' is not a member"):
        restorer(y, operator={"name": "denoise"}, sigma_y=0.05, progress=False)
    with pytest.raises(OperatorError, match="needs the measurement's noise level"):
        restorer(y, operator={"name": "deblur", "kernel_std": 1.7}, progress=False)


def test_a_dedicated_export_refuses_another_noise_level():
    import davi

    restorer = davi.Restorer.from_pretrained(ROOT / "davi" / "assets" / "mappers" / "sr4")
    y = torch.zeros(1, 1, 8, 8)
    assert restorer(y, sigma_y=0.05, progress=False).samples.shape == (1, 1, 1, 32, 32)
    with pytest.raises(OperatorError, match="at sigma_y 0.05 only"):
        restorer(y, sigma_y=0.08, progress=False)


def test_davi_restore_simulates_a_member_and_refuses_outside_the_family(family_export, tmp_path):
    base = [sys.executable, "-m", "davi", "restore", "--export", str(family_export), "--input", "mnist32:test",
            "--limit", "2", "--samples", "2", "--simulate", "deblur", "--kernel-std", "1.7"]
    ok = subprocess.run([*base, "--sigma-y", "0.08", "--out", str(tmp_path / "ok")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    settings = json.loads((tmp_path / "ok" / "settings.json").read_text())
    assert settings["task"] == "family" and settings["sigma_y"] == 0.08 and "std 1.7" in settings["operator"]
    for extra, message in ((["--sigma-y", "0.5"], "outside the family's range"),
                           ([], "--sigma-y: a family export needs")):
        bad = subprocess.run([*base, *extra, "--out", str(tmp_path / "bad")], capture_output=True, text=True)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_a_warm_start_with_fewer_noise_channels_is_widened(tiny_unet, tmp_path):
    """A paired export without noise channels warm-starts a sampler with one: the image's and the condition's
    input weights are the source's, the noise channel keeps a fresh (non-zero) initialisation, and with that
    channel at zero the widened mapper computes exactly what the source does."""
    from davi.training.recipes.davi import widened_noise_inputs

    source = Mapper.from_prior_unet(tiny_unet, 0.1, False, 1000, cond_channels=2, cond_dim=5)
    with torch.no_grad():
        source.cond_proj.weight.normal_()
        source.net.conv_in.weight[:, 1:].normal_()  # the condition's channels have learned something
    target = Mapper.from_prior_unet(tiny_unet, 0.01, False, 1000, noise_channels=1, cond_channels=2, cond_dim=5)
    fresh = target.net.conv_in.weight[:, 1].detach().clone()
    target.load_state_dict(widened_noise_inputs(source.state_dict(), target, 0))
    w, ws = target.net.conv_in.weight, source.net.conv_in.weight
    assert torch.equal(w[:, :1], ws[:, :1]) and torch.equal(w[:, 2:], ws[:, 1:]) and torch.equal(w[:, 1], fresh)
    assert fresh.abs().sum() > 0
    x, a, cond = torch.randn(2, 1, 32, 32), torch.full((2,), 999), _condition(2, 5)
    with torch.no_grad():
        assert torch.allclose(target(x, a, torch.zeros(2, 1, 32, 32), condition=cond),
                              source(x, a, condition=cond), atol=1e-6)


def test_a_warm_start_of_another_width_is_a_one_line_error(tiny_prior_dir, tmp_path):
    """The shipped family export (32-wide) as the warm start of a run on the tiny (8-wide) prior: the config
    error names the setting, not a tensor-size traceback from widening the noise inputs."""
    from davi.training.recipes import train_job

    with pytest.raises(ConfigError, match="davi.init_mapper=.*not this run's mapper architecture"):
        train_job(family_cfg(tiny_prior_dir, tmp_path / "w", "train.max_steps=1",
                             f"davi.init_mapper={ROOT / 'davi/assets/mappers/family'}", config="family_mnist.yaml"))


def test_a_sampler_stage_adds_a_noise_channel_to_its_paired_warm_start(family_export, tiny_prior_dir, tmp_path):
    """davi.init_mapper on a paired export without noise channels, mapper.noise_channels 1: it trains."""
    from davi.training.recipes import train_job

    paired = family_export.parents[1] / "paired" / "export"
    train_job(family_cfg(tiny_prior_dir, tmp_path / "wide", f"davi.init_mapper={paired}", "davi.score_warmup=1",
                         "mapper.noise_channels=1", "mapper.h=0.005", "train.max_steps=2", config="family_mnist.yaml"))
    card = json.loads((tmp_path / "wide" / "export" / "card.json").read_text())
    assert card["noise_channels"] == 1 and card["h"] == 0.005


def test_a_family_restorer_flags_with_the_threshold_of_its_noise_level(family_export):
    """The restorer's threshold is the card's by_sigma curve at the member's sigma_y (linear in log sigma_y,
    constant outside the calibrated range); a broken curve is a one-line ExportError naming the key."""
    from davi.io.card import ExportCard, ExportError
    from davi.restorer import Restorer

    restorer = Restorer.from_pretrained(family_export)
    levels = restorer.card.consistency["by_sigma"]
    at = lambda s: restorer.with_operator({"name": "sr", "scale": 4}, sigma_y=s).threshold  # noqa: E731
    assert at(levels["sigma_y"][0]) == pytest.approx(levels["threshold"][0])
    assert at(levels["sigma_y"][-1]) == pytest.approx(levels["threshold"][-1])
    mid = math.sqrt(levels["sigma_y"][1] * levels["sigma_y"][2])  # halfway in log sigma_y
    assert at(mid) == pytest.approx((levels["threshold"][1] + levels["threshold"][2]) / 2)
    y = torch.zeros(2, 1, 8, 8)
    out = restorer(y, operator={"name": "sr", "scale": 4}, sigma_y=levels["sigma_y"][1], progress=False)
    assert torch.equal(out.flagged, out.consistency > levels["threshold"][1])
    card = json.loads((family_export / "card.json").read_text())
    card["consistency"]["by_sigma"]["sigma_y"] = [0.2, 0.1]
    with pytest.raises(ExportError, match="consistency.by_sigma: expected increasing"):
        ExportCard.from_dict(card).threshold_at(0.05)
    plain = {**card, "consistency": {k: v for k, v in card["consistency"].items() if k != "by_sigma"}}
    assert ExportCard.from_dict(plain).threshold_at(0.05) == card["consistency"]["threshold"]


def test_davi_export_of_a_family_checkpoint_writes_the_family_card(family_export, tmp_path):
    """`davi export --checkpoint` (export_checkpoint) of a family run: the card the training's own export has
    (family, conditioning, the member drawn from seed 0 as its operator)."""
    from davi.io.export import export_checkpoint, read_card
    from davi.training.checkpoints import list_checkpoints

    _, checkpoint = list_checkpoints(family_export.parent)[-1]
    out = read_card(export_checkpoint(checkpoint, tmp_path / "export"))
    trained = read_card(family_export)
    for key in ("task", "family", "condition", "operator", "sigma_y", "objective", "noise_channels"):
        assert out[key] == trained[key], key
