"""The public Python API (davi.Restorer, davi.ExportCard, davi.load_images, davi.RedDiff): what a user calls
gives what its docstring says, and bad input is a typed one-line error. davi.train, davi.export_checkpoint and
Restorer.from_pretrained on the run's export run as docs/api.md shows them (tests/test_docs.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import davi

ROOT = Path(__file__).resolve().parents[1]
MAPPERS = ROOT / "davi" / "assets" / "mappers"


@pytest.fixture(scope="module")
def restorer():
    return davi.Restorer.from_pretrained(MAPPERS / "sr4_sampler")


@pytest.fixture(scope="module")
def measured(restorer):
    x = davi.load_images("mnist32:test", limit=6)
    return x, restorer.operator.measure(x, generator=torch.Generator().manual_seed(0))


def test_every_public_name_resolves_and_has_a_docstring():
    for name in davi.__all__:
        obj = getattr(davi, name)
        if name != "__version__":
            assert (obj.__doc__ or "").strip(), f"davi.{name} has no docstring"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        davi.nope  # noqa: B018


def test_restoration_shapes_mean_std_and_consistency(restorer, measured):
    x, y = measured
    out = restorer(y, samples=5, seed=0)
    assert out.samples.shape == (5, *x.shape) and out.mean.shape == x.shape == out.std.shape
    assert torch.allclose(out.mean, out.samples.mean(0)) and torch.allclose(out.std, out.samples.std(0))
    assert out.samples.abs().max() <= 1 and (out.std > 0).any()
    assert out.consistency.shape == (6,) and out.flagged.dtype == torch.bool
    assert torch.equal(out.flagged, out.consistency > restorer.card.threshold)
    assert out.network_evaluations == 5.0 and out.refined is None
    one = restorer(y, samples=1, seed=0)
    assert torch.equal(one.std, torch.zeros_like(one.mean))


def test_an_image_draws_depend_on_seed_and_index_not_on_the_batch(restorer, measured):
    _, y = measured
    whole = restorer(y, samples=2, seed=3, batch_size=6).samples
    split = restorer(y, samples=2, seed=3, batch_size=4).samples
    assert torch.allclose(whole, split, atol=1e-5)  # same noise; convolutions round by batch size
    other = restorer(y, samples=2, seed=4).samples
    assert not torch.equal(whole, other)


def test_the_restorer_matches_the_command_line(restorer, measured, tmp_path):
    """`davi restore` (infer.py restore) writes what the API returns (mean PNGs of the same samples)."""
    import infer

    from davi.io.images import read_image, to_uint8

    out_dir = tmp_path / "cli"
    assert infer.main(["restore", "--export", str(MAPPERS / "sr4_sampler"), "--input", "mnist32:test", "--limit", "6",
                       "--simulate", "sr", "--samples", "2", "--seed", "0", "--out", str(out_dir)]) == 0
    _, y = measured
    mean = restorer(y, samples=2, seed=0).mean
    for i in range(6):
        png = read_image(out_dir / "mean" / f"test_{i:05d}.png", 1)
        assert (png - torch.from_numpy(to_uint8(mean[i]).astype("float32") / 127.5 - 1).reshape(png.shape)).abs().max() < 1e-6


def test_refine_auto_refines_only_flagged_images(restorer, measured):
    _, y = measured
    bad = y.clone()
    bad[:2] = -bad[:2]  # inverted digits: nothing like the training data
    out = restorer(bad, samples=1, seed=0, refine="auto")
    assert torch.equal(out.refined, out.flagged) and out.flagged[:2].all()
    assert (out.consistency[out.refined] < out.one_step_consistency[out.refined]).all()
    assert out.network_evaluations == pytest.approx(1 + 19 * float(out.refined.float().mean()))


@pytest.mark.parametrize("bad, error, fragment", [
    (lambda y: y[:, :, :4], davi.OperatorError, "must be square (B, C, h, h), got (6, 1, 4, 8)"),
    (lambda y: y[0], davi.OperatorError, "float tensor (B, C, h, w), got (1, 8, 8)"),
    (lambda y: y.numpy(), davi.OperatorError, "got ndarray"),
    (lambda y: y.index_put((torch.tensor([3]),), torch.tensor(float("nan"))), davi.DataError, "measurement 3: contains NaN"),
])
def test_bad_measurements_are_one_line_typed_errors(restorer, measured, bad, error, fragment):
    _, y = measured
    with pytest.raises(error) as info:
        restorer(bad(y.clone()))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_other_image_sizes_restore_or_name_the_sizes_that_work(restorer, measured):
    _, y = measured
    big = torch.nn.functional.interpolate(y, scale_factor=2)  # 16x16 measurements of 64x64 digits
    assert restorer(big, progress=False).samples.shape == (1, len(y), 1, 64, 64)
    assert restorer.at_size(64).operator.resolution == 64 and restorer.operator.resolution == 32
    with pytest.raises(davi.OperatorError, match=r"30x30 images: this mapper takes square images whose side is a "
                                                 r"multiple of 4 \(e.g. 16, 32, 128\)"):
        restorer.at_size(30)


def test_bad_requests_are_one_line_errors(restorer, measured, tmp_path):
    _, y = measured
    with pytest.raises(ValueError, match="--refine: expected 'auto' or a number of steps"):
        restorer(y, refine="sometimes")
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        restorer(y, samples=0)
    with pytest.raises(davi.ExportError, match="no such mapper export folder"):
        davi.Restorer.from_pretrained(tmp_path / "nope")
    with pytest.raises(davi.ExportError, match="needs a GPU"):
        davi.Restorer.from_pretrained(MAPPERS / "sr4", dtype="fp16")
    export = tmp_path / "no_threshold"
    shutil.copytree(MAPPERS / "sr4", export)
    card = json.loads((export / "card.json").read_text())
    del card["consistency"]
    (export / "card.json").write_text(json.dumps(card))
    with pytest.raises(davi.ExportError, match="no consistency threshold in the card"):
        davi.Restorer.from_pretrained(export)(y, refine="auto")
    card["consistency"] = {"statistic": "other", "threshold": 1.0}
    (export / "card.json").write_text(json.dumps(card))
    with pytest.raises(davi.ExportError, match="expected statistic 'measurement_residual'"):
        davi.Restorer.from_pretrained(export)


@pytest.mark.parametrize("task", sorted(p.name for p in MAPPERS.iterdir() if (p / "card.json").is_file()))
def test_export_card_is_typed_and_round_trips(task):
    raw = json.loads((MAPPERS / task / "card.json").read_text())
    card = davi.ExportCard.read(MAPPERS / task)
    assert card.to_dict() == raw
    assert card.task == raw["task"] and card.objective == raw["objective"] and card.sigma_y == raw["sigma_y"]
    assert card.operator == raw["operator"] and card.prior.identity == raw["prior"]["identity"]
    assert card.threshold == raw["consistency"]["threshold"]
    with pytest.raises(davi.ExportError, match="key 'resolution' must be an integer"):
        davi.ExportCard.from_dict({**raw, "resolution": "32"})
    with pytest.raises(davi.ExportError, match="missing key 'h'"):
        davi.ExportCard.from_dict({k: v for k, v in raw.items() if k != "h"})


def test_red_diff_with_plain_arguments_beats_the_lift():
    x = davi.load_images("mnist32:test", limit=4)
    op = davi.operators.SuperResolution(sigma_y=0.05, resolution=32, channels=1, scale=4)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    prior = davi.DiffusionPrior.from_pretrained("bundled:mnist32")
    x_rd = davi.RedDiff(prior, op, steps=50, lr=0.1, lam=0.0167)(y, seeds=[0, 1, 2, 3])  # compare.json's SR x4 tuning
    assert ((x_rd - x) ** 2).mean() < ((op.lift(y) - x) ** 2).mean()


def test_load_images_from_a_folder_and_a_split(tmp_path):
    x = davi.load_images("mnist32:test", limit=3)
    assert x.shape == (3, 1, 32, 32) and -1 <= x.min() and x.max() <= 1
    for i in range(3):
        davi.write_image(x[i], tmp_path / f"d{i}.png")
    again = davi.load_images(tmp_path)
    assert again.shape == x.shape and (again - x).abs().max() <= 1 / 127.5 + 1e-6
    with pytest.raises(davi.DataError):
        davi.load_images(tmp_path / "missing")
