"""Measurement-only training (job ``unpaired``): measurement sets, RED-Diff anchors, the recipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from davi.data.anchors import AnchorError, compute_anchors, load_anchors
from davi.config import ConfigError, load_config
from davi.data.datasets import DataError
from davi.data.measurements import MeasurementDataset, load_measurements, read_folder
from davi.operators import build_operator

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sr4_mnist_unpaired.yaml"


def small_config(tmp_path, *extra):
    return load_config(CONFIG, ["unpaired.limit=4", "unpaired.anchor_batch_size=2", "red_diff.num_steps=2",
                                f"unpaired.anchors={tmp_path / 'anchors'}", *extra])


def operator_of(cfg):
    return build_operator(cfg.operator, cfg.data.resolution, cfg.data.channels)


def test_simulated_set_drops_the_clean_images(tmp_path):
    cfg = small_config(tmp_path)
    data = load_measurements(cfg, operator_of(cfg))
    assert len(data) == 4 and tuple(data.y.shape) == (4, 1, 8, 8)  # SR x4 of 32x32 digits
    assert set(data[0]) == {"y", "index"}
    with pytest.raises(DataError, match="no clean images"):
        data.tensor()
    with pytest.raises(DataError, match="no clean images"):
        data.images
    # same seed, same measurements; another seed or another operator, another digest
    assert load_measurements(cfg, operator_of(cfg)).digest == data.digest
    other_seed = small_config(tmp_path, "unpaired.seed=1")
    assert load_measurements(other_seed, operator_of(other_seed)).digest != data.digest
    noisier = small_config(tmp_path, "operator.sigma_y=0.1")
    assert MeasurementDataset(data.y, operator_of(noisier).params(), "x").digest != data.digest


def test_folder_of_npy_and_png_measurements(tmp_path):
    from PIL import Image

    cfg = small_config(tmp_path, f"unpaired.measurements={tmp_path / 'meas'}")
    (tmp_path / "meas").mkdir()
    y = torch.rand(3, 1, 8, 8) * 2 - 1
    np.save(tmp_path / "meas" / "a.npy", y[0].numpy())  # (C, h, w)
    np.save(tmp_path / "meas" / "b.npy", y[1, 0].numpy())  # (h, w)
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "meas" / "c.png")
    data = load_measurements(cfg, operator_of(cfg))
    assert tuple(data.y.shape) == (3, 1, 8, 8)
    assert torch.allclose(data.y[:2], y[:2]) and torch.allclose(data.y[2], torch.ones(1, 8, 8))


def test_folder_shape_that_does_not_fit_the_operator(tmp_path):
    (tmp_path / "meas").mkdir()
    np.save(tmp_path / "meas" / "ok.npy", np.zeros((1, 8, 8), np.float32))
    np.save(tmp_path / "meas" / "wrong.npy", np.zeros((1, 16, 16), np.float32))  # SR x2, not x4
    cfg = small_config(tmp_path)
    with pytest.raises(DataError, match=r"wrong\.npy: measurement of shape \(1, 16, 16\).*\(1, 8, 8\)"):
        read_folder(tmp_path / "meas", operator_of(cfg))


def test_anchors_resume_and_refuse_another_set(tmp_path):
    cfg = small_config(tmp_path)
    folder = compute_anchors(cfg, progress=False)
    shards = sorted(folder.glob("shard-*.safetensors"))
    assert len(shards) == 2
    data = load_measurements(cfg, operator_of(cfg))
    anchors = load_anchors(folder, data)
    assert tuple(anchors.shape) == (4, 1, 32, 32) and torch.isfinite(anchors).all()

    # a kill after the first shard: the second is recomputed, identically; the first is left alone
    shards[1].unlink()
    first_mtime = shards[0].stat().st_mtime_ns
    with pytest.raises(AnchorError, match="1 of 2 shards missing"):
        load_anchors(folder, data)
    compute_anchors(cfg, progress=False)
    assert shards[0].stat().st_mtime_ns == first_mtime
    assert torch.equal(load_anchors(folder, data), anchors)

    # another measurement set or operator: one-line error, nothing overwritten
    manifest = (folder / "manifest.json").read_text()
    for override in ("unpaired.seed=1", "operator.sigma_y=0.1"):
        other = small_config(tmp_path, override)
        with pytest.raises(AnchorError, match="another measurement set") as e:
            compute_anchors(other, progress=False)
        assert "\n" not in str(e.value)
        with pytest.raises(AnchorError, match="another measurement set"):
            load_anchors(folder, load_measurements(other, operator_of(other)))
    assert (folder / "manifest.json").read_text() == manifest
    with pytest.raises(AnchorError, match="another red_diff"):
        compute_anchors(small_config(tmp_path, "red_diff.lr=0.5"), progress=False)


def test_nan_anchors_are_refused(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    import davi.solvers.red_diff

    cfg = small_config(tmp_path)
    # a solver that diverges: the shard is not written
    with monkeypatch.context() as m:
        m.setattr(davi.solvers.red_diff.RedDiff, "__call__", lambda self, y, seeds, **kw: torch.full(
            (len(y), 1, 32, 32), float("nan")))
        with pytest.raises(AnchorError, match=r"non-finite .* measurement\(s\) \[0, 1\]"):
            compute_anchors(cfg, progress=False)
    assert not list((tmp_path / "anchors").glob("shard-*"))
    # a shard that holds a NaN (e.g. edited): loading names it
    folder = compute_anchors(cfg, progress=False)
    shard = folder / "shard-00001.safetensors"
    t = load_file(str(shard))
    t["anchor"][1, 0, 3, 3] = float("nan")
    save_file(t, str(shard))
    with pytest.raises(AnchorError, match=r"shard-00001.safetensors: non-finite .* \[3\]"):
        load_anchors(folder, load_measurements(cfg, operator_of(cfg)))


def test_config_fields():
    cfg = load_config(CONFIG)
    assert cfg.job == "unpaired" and cfg.unpaired.measurements == "simulate" and cfg.unpaired.limit == 256
    with pytest.raises(ConfigError, match="unpaired.anchor_batch_size"):
        load_config(CONFIG, ["unpaired.anchor_batch_size=0"])
    with pytest.raises(ConfigError, match="unpaired.measurements: empty"):
        c = load_config(CONFIG, ["unpaired.measurements="])
        load_measurements(c, operator_of(c))


@pytest.mark.slow
def test_no_clean_image_reaches_the_recipe(tmp_path, monkeypatch):
    """Measurements from a folder, anchors attached: the clean-image reader is made to fail, and every
    batch the recipe's iteration receives is checked for its keys."""
    import davi.data.datasets
    from davi.training.recipes import RECIPES
    from davi.training.loop import train

    (tmp_path / "meas").mkdir()
    op = operator_of(small_config(tmp_path))
    y = op.measure(torch.zeros(4, 1, 32, 32), generator=torch.Generator().manual_seed(0))
    for i in range(4):
        np.save(tmp_path / "meas" / f"{i}.npy", y[i].numpy())
    cfg = small_config(tmp_path, f"unpaired.measurements={tmp_path / 'meas'}", "unpaired.lambda_anchor=0.5",
                       "train.batch_size=2", "train.max_steps=2", f"train.output_dir={tmp_path / 'run'}",
                       "log.progress=false", "log.image_every=0", "log.num_val=2", "log.num_samples=2")
    compute_anchors(cfg, progress=False)

    def no_clean_images(self, i):
        raise AssertionError("a clean image was read")

    monkeypatch.setattr(davi.data.datasets.ImageDataset, "__getitem__", no_clean_images)
    seen = []

    def spying_recipe(cfg, accelerator, **kw):
        recipe = RECIPES["unpaired"](cfg, accelerator, **kw)
        iteration = recipe.iteration

        def checked(nets, batch):
            seen.append(set(batch))
            yield from iteration(nets, batch)

        recipe.iteration = checked
        return recipe

    out = train(cfg, spying_recipe)
    assert seen == [{"y", "anchor", "index"}] * 2  # no "image" key, and the anchors arrive
    card = json.loads((out / "export" / "card.json").read_text())
    assert card["objective"] == "unpaired" and card["measurements"]["count"] == 4
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["nonfinite_total"] == 0


@pytest.mark.slow
def test_anchor_cli_bad_folder_is_one_line(tmp_path):
    (tmp_path / "meas").mkdir()
    np.save(tmp_path / "meas" / "x.npy", np.zeros((1, 32, 32), np.float32))
    r = subprocess.run([sys.executable, "-m", "davi", "anchors", "--config", str(CONFIG), "--no-progress",
                        f"unpaired.measurements={tmp_path / 'meas'}", f"unpaired.anchors={tmp_path / 'a'}"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "x.npy: measurement of shape (1, 32, 32)" in r.stderr
    assert not (tmp_path / "a").exists()


class _CpuAccelerator:
    """What the recipe asks of an Accelerator, on the CPU."""

    device = torch.device("cpu")

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()

    def unwrap_model(self, model):
        return model


def _bridge_inputs(cfg, batch):
    """(x_a, a) the unpaired iteration feeds the mapper for ``batch`` (a spy mapper, no score network)."""
    from davi.training.recipes.unpaired import unpaired_recipe

    recipe = unpaired_recipe(cfg, _CpuAccelerator())
    real, seen = recipe.networks["mapper"], {}

    class Spy(torch.nn.Module):
        num_timesteps = real.num_timesteps

        def inference_input(self, lifted, z):
            return real.inference_input(lifted, z)

        def forward(self, x_a, a):
            seen.update(x_a=x_a, a=a)
            return x_a

    updates = list(recipe.iteration({"mapper": Spy()}, batch))
    assert [u.network for u in updates] == ["mapper"]
    return seen["x_a"], seen["a"], recipe


@pytest.mark.slow
def test_bridge_starts_at_the_anchor_and_is_off_without_one(tmp_path):
    torch.manual_seed(0)
    cfg = small_config(tmp_path, "davi.lambda_ikl=0", "davi.ppb_alpha=1", "davi.ppb_beta=1000")
    compute_anchors(cfg, progress=False)
    op = operator_of(cfg)
    data = load_measurements(cfg, op)
    anchors = load_anchors(cfg.unpaired.anchors, data)
    y, lifted = data.y, op.lift(data.y)

    # anchors, bridge times near a = 0 (Beta(1, 1000)): the input is (almost) the anchor itself
    x_a, a, recipe = _bridge_inputs(cfg, {"y": y, "anchor": anchors, "index": torch.arange(4)})
    assert recipe.train_set.anchors is not None and int(a.max()) < 50
    assert (x_a - anchors).abs().max() < 0.05 < (lifted - anchors).abs().max()

    # no anchors: the inference input lift(y) + h z at a = T - 1, whatever the bridge settings
    cfg_off = small_config(tmp_path, "davi.lambda_ikl=0", "davi.ppb_alpha=1", "davi.ppb_beta=1000", "unpaired.anchors=")
    x_a, a, recipe = _bridge_inputs(cfg_off, {"y": y, "index": torch.arange(4)})
    assert recipe.train_set.anchors is None and bool((a == 999).all())
    assert abs(float((x_a - lifted).std()) - cfg.mapper.h) < 0.02


def test_the_benchmark_keeps_earlier_tasks_with_their_protocol_only_when_asked(tmp_path):
    """benchmarks/unpaired.py --keep-earlier: a task measured in --runs replaces its published rows; a
    task not measured there keeps its rows, labelled with the protocol it was measured under."""
    import argparse
    import json

    from unpaired import collect

    runs, out = tmp_path / "runs", tmp_path / "unpaired.json"
    (runs / "sr4-paired").mkdir(parents=True)
    (runs / "sr4-paired" / "result.json").write_text(json.dumps({"psnr": 19.0}))
    out.write_text(json.dumps({"head": "250 steps, 256 measurements", "sr4": {"paired": {"psnr": 1.0}},
                               "deblur": {"paired": {"psnr": 27.8}}}))
    args = argparse.Namespace(runs=str(runs), out=str(out), keep_earlier=True)
    data = collect(args)
    assert data["sr4"] == {"paired": {"psnr": 19.0}}  # measured here: the new result, not the published one
    assert data["deblur"] == {"paired": {"psnr": 27.8}}
    assert data["protocols"] == {"deblur": "250 steps, 256 measurements"}
    args.keep_earlier = False
    assert "deblur" not in collect(args) and "protocols" not in collect(args)


def test_anchor_regression_pulls_the_mapper_towards_the_anchor(tmp_path):
    """``lambda_anchor * mse(anchor, x_hat)`` is added to the mapper's loss (not subtracted): with the other
    terms off, the loss is that regression and a gradient step moves x_hat towards the anchor."""
    from davi.training.recipes.unpaired import unpaired_recipe

    cfg = small_config(tmp_path, "unpaired.anchors=", "davi.lambda_con=0", "unpaired.lambda_anchor=0.5")
    recipe = unpaired_recipe(cfg, _CpuAccelerator())
    y = recipe.train_set.y
    anchor = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    x_hat = torch.zeros(4, 1, 32, 32, requires_grad=True)
    real = recipe.networks["mapper"]

    class Fixed(torch.nn.Module):
        num_timesteps = real.num_timesteps

        def inference_input(self, lifted, z):
            return real.inference_input(lifted, z)

        def forward(self, x_a, a):
            return x_hat + 0 * x_a

    (update,) = recipe.iteration({"mapper": Fixed()}, {"y": y, "anchor": anchor, "index": torch.arange(4)})
    expected = 0.5 * float((anchor ** 2).mean())
    assert float(update.loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert update.logs["loss/anchor"] == pytest.approx(float((anchor ** 2).mean()), rel=1e-5)
    update.loss.backward()
    moved = x_hat.detach() - 100 * x_hat.grad
    assert float(((moved - anchor) ** 2).mean()) < float((anchor ** 2).mean())
