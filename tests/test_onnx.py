"""ONNX export of the one-step restore: parity with PyTorch (random and real inputs, batch 1 and 7),
a dynamic batch axis, infer.py's --runtime onnx, and a one-line error without onnxruntime."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="the optional extra davi[onnx] is not installed")
onnx = pytest.importorskip("onnx", reason="the optional extra davi[onnx] is not installed")

from davi.config import DataConfig  # noqa: E402
from davi.data.datasets import load_split  # noqa: E402
from davi.io.export import ExportError, load_export  # noqa: E402
from davi.solvers.methods import DaviMethod  # noqa: E402
from davi.io.model_card import read_front_matter  # noqa: E402
from davi.io.onnx import (  # noqa: E402
    INSTALL_HINT, OnnxDaviMethod, RestoreGraph, example_inputs, make_session, run_session,
)

SHIPPED = Path(__file__).resolve().parents[1] / "davi" / "assets" / "mappers"
TOL = 1e-4


@pytest.fixture(scope="module")
def infer_main():
    import infer  # the repository root is on pytest's pythonpath (pyproject.toml)

    return infer.main


@pytest.fixture(scope="module", params=["sr4", "box"])
def onnx_export(request, tmp_path_factory, infer_main):
    """A copy of a shipped export with mapper.onnx added by `infer.py onnx` (the existing-export path)."""
    out = tmp_path_factory.mktemp("onnx") / request.param
    shutil.copytree(SHIPPED / request.param, out)
    assert infer_main(["onnx", "--export", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def test_digits():
    return load_split(DataConfig(source="mnist32", resolution=32, channels=1), "test").tensor(limit=7)


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_matches_pytorch_on_random_and_real_inputs(onnx_export, test_digits, batch):
    mapper, card, operator = load_export(onnx_export)
    graph = RestoreGraph(mapper, operator).eval()
    session = make_session(onnx_export / "mapper.onnx", threads=1)
    y_random, z = example_inputs(card, operator, batch=batch, seed=batch)
    y_real = operator.measure(test_digits[:batch], generator=torch.Generator().manual_seed(0))
    for y in (y_random, y_real):
        with torch.no_grad():
            reference = graph(y, z)
        out = run_session(session, y, z)
        assert out.shape == reference.shape == (batch, 1, 32, 32)
        assert float((out - reference).abs().max()) <= TOL
    # a real restore is not trivial: it moved away from the lifted measurement
    assert float((reference - operator.lift(y_real)).abs().mean()) > 0.01


def test_graph_has_a_dynamic_batch_axis_and_documents_its_inputs(onnx_export):
    model = onnx.load(str(onnx_export / "mapper.onnx"))
    names = [i.name for i in model.graph.input]
    assert names == ["y", "z"] and [o.name for o in model.graph.output] == ["x_hat"]
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and all(d.dim_value > 0 for d in dims[1:])
    meta = {p.key: p.value for p in model.metadata_props}
    assert "lift(y) + h z" in meta["davi.convention"]
    # the model card was refreshed: it lists the ONNX file and its inputs
    front = read_front_matter(onnx_export / "README.md")
    assert "onnx" in front["tags"] and "mapper.onnx" in front["davi"]["files"]
    assert "metrics" in front["davi"]  # the shipped metrics survived the rewrite


def test_onnx_method_reproduces_the_pytorch_samples(onnx_export, test_digits):
    mapper, _, operator = load_export(onnx_export)
    y = operator.measure(test_digits, generator=torch.Generator().manual_seed(1))
    seeds = list(range(10, 17))
    expected = DaviMethod(mapper, operator)(y, seeds, 3)
    got = OnnxDaviMethod(onnx_export, operator, threads=1)(y, seeds, 3)
    assert got.shape == expected.shape == (3, 7, 1, 32, 32)
    assert float((got - expected).abs().max()) <= TOL
    assert float((got[0] - got[1]).abs().max()) > 0.01  # different samples, not one repeated


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_infer_restore_runtime_onnx_matches_torch(onnx_export, tmp_path, infer_main):
    outs = {}
    for runtime in ("torch", "onnx"):
        outs[runtime] = tmp_path / runtime
        assert infer_main(["restore", "--export", str(onnx_export), "--input", "mnist32:test", "--limit", "3",
                           "--simulate", onnx_export_task(onnx_export), "--samples", "2", "--runtime", runtime,
                           "--out", str(outs[runtime])]) == 0
    files = sorted(p.relative_to(outs["torch"]) for p in outs["torch"].rglob("*.png"))
    assert len(files) == 3 * 6  # mean, std, lift, reference and 2 samples per image
    for f in files:
        # PNGs quantise to 1/127.5; a 1e-6 difference can flip one rounding, never more
        assert np.abs(_png(outs["torch"] / f) - _png(outs["onnx"] / f)).max() <= 1, f
    settings = (outs["onnx"] / "settings.json").read_text()
    assert '"runtime": "onnx"' in settings and '"method": "davi-onnx"' in settings


def test_missing_onnxruntime_is_one_line_naming_the_extra(onnx_export, tmp_path, infer_main, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    capsys.readouterr()
    code = infer_main(["restore", "--export", str(onnx_export), "--input", "mnist32:test", "--limit", "2",
                       "--simulate", onnx_export_task(onnx_export), "--runtime", "onnx", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error:")
    assert "onnxruntime is not installed" in err[0] and INSTALL_HINT in err[0]
    assert not (tmp_path / "o").exists()


def test_missing_onnx_file_and_wrong_method_are_named(tmp_path, infer_main, capsys):
    plain = tmp_path / "plain"
    shutil.copytree(SHIPPED / "sr4", plain)
    for extra, fragment in ((["--runtime", "onnx"], "davi onnx --export"),
                            (["--runtime", "onnx", "--method", "lift"], "only --method davi")):
        capsys.readouterr()
        code = infer_main(["restore", "--export", str(plain), "--input", "mnist32:test", "--limit", "2",
                           "--simulate", "sr", "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and fragment in err[0], err
    with pytest.raises(ExportError, match="mapper.onnx: missing"):
        OnnxDaviMethod(plain, load_export(plain)[2])


def onnx_export_task(export: Path) -> str:
    import json

    return json.loads((export / "card.json").read_text())["task"]


@pytest.mark.slow
def test_export_of_a_checkpoint_with_onnx_writes_model_card_and_graph(tiny_prior_dir, tmp_path, infer_main):
    from davi.config import load_config
    from davi.training.recipes import train_job

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    train_job(load_config(root / "configs" / "sr4_mnist.yaml", [
        f"train.output_dir={run}", f"prior.path={tiny_prior_dir}", "train.batch_size=4", "train.max_steps=2",
        "train.checkpoint_every=2", "log.image_every=0", "log.progress=false", "log.num_val=2", "log.num_samples=2"]))
    assert read_front_matter(run / "export" / "README.md")["davi"]["training"]["steps"] == 2  # export's own card
    out = tmp_path / "exported"
    assert infer_main(["export", "--checkpoint", str(run / "checkpoint-2"), "--out", str(out), "--onnx"]) == 0
    front = read_front_matter(out / "README.md")
    assert front["davi"]["training"] == {**front["davi"]["training"], "steps": 2, "objective": "paired"}
    assert "onnx" in front["tags"] and (out / "mapper.onnx").is_file()
    mapper, card, operator = load_export(out)
    y, z = example_inputs(card, operator, batch=3)
    with torch.no_grad():
        reference = RestoreGraph(mapper, operator)(y, z)
    assert float((run_session(make_session(out / "mapper.onnx", 1), y, z) - reference).abs().max()) <= TOL


def test_an_export_with_noise_channels_runs_in_onnx_and_its_card_is_checked(tmp_path, test_digits, infer_main):
    """A mapper with its own noise channels: the graph's z carries them, PyTorch and ONNX agree, and
    a card that disagrees with the weights is refused."""
    from davi.io.export import export_mapper, read_card
    from davi.models.mapper import Mapper

    shipped, card, operator = load_export(SHIPPED / "box")
    mapper = Mapper.from_prior_unet(shipped.net, h=0.1, tanh=False, noise_channels=1)
    card = {k: v for k, v in card.items() if k not in ("format", "version")}
    out = export_mapper(mapper, tmp_path / "noisy", {**card, "noise_channels": 1})
    assert infer_main(["onnx", "--export", str(out)]) == 0
    y = operator.measure(test_digits[:3], generator=torch.Generator().manual_seed(0))
    mapper, _, _ = load_export(out)
    expected = DaviMethod(mapper, operator)(y, [1, 2, 3], 2)
    got = OnnxDaviMethod(out, operator, threads=1)(y, [1, 2, 3], 2)
    assert float((got - expected).abs().max()) <= TOL
    assert float((got[0] - got[1]).abs().max()) > 0.01
    bad = read_card(out)
    bad["noise_channels"] = 0
    (out / "card.json").write_text(__import__("json").dumps(bad))
    with pytest.raises(ExportError, match="noise_channels 0 but the weights have 1"):
        load_export(out)


def test_runtime_onnx_with_refine_refines_the_onnx_samples_like_torch(onnx_export, tmp_path, infer_main):
    """--runtime onnx --refine K: ONNX Runtime's one-step samples, then the same K warm-started RED-Diff steps as
    the PyTorch runtime (same seeds): the same PNGs to within one rounding, every image refined."""
    outs = {}
    for runtime in ("torch", "onnx"):
        outs[runtime] = tmp_path / runtime
        assert infer_main(["restore", "--export", str(onnx_export), "--input", "mnist32:test", "--limit", "2",
                           "--simulate", onnx_export_task(onnx_export), "--samples", "2", "--refine", "2",
                           "--runtime", runtime, "--out", str(outs[runtime])]) == 0
    import json

    settings = json.loads((outs["onnx"] / "settings.json").read_text())
    assert settings["method"] == "davi-onnx+refine-2" and settings["runtime"] == "onnx"
    assert settings["network_evaluations_per_image"] == pytest.approx(2 * 3)
    assert settings["consistency"]["refined"] == 2 and settings["consistency"]["refine"]["steps"] == 2
    files = sorted(p.relative_to(outs["torch"]) for p in outs["torch"].rglob("*.png"))
    assert len(files) == 2 * 6
    for f in files:
        assert np.abs(_png(outs["torch"] / f) - _png(outs["onnx"] / f)).max() <= 1, f
    rows = (outs["onnx"] / "consistency.csv").read_text().splitlines()
    assert rows[0].split(",")[3] == "refined" and [r.split(",")[3] for r in rows[1:]] == ["1", "1"]


def test_an_onnx_graph_that_disagrees_with_pytorch_is_refused(tmp_path, infer_main, monkeypatch, capsys):
    """The export's own parity check: ONNX Runtime's output off by more than the tolerance (1e-4, or the one
    given) -> one-line error naming the difference, no mapper.onnx, the model card untouched."""
    from davi.io import onnx as onnx_io

    out = tmp_path / "sr4"
    shutil.copytree(SHIPPED / "sr4", out)
    readme = (out / "README.md").read_bytes()
    real = onnx_io.run_session
    monkeypatch.setattr(onnx_io, "run_session", lambda session, y, z: real(session, y, z) + 1e-3)
    capsys.readouterr()
    code = infer_main(["onnx", "--export", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error:"), err
    assert "ONNX graph differs from PyTorch by 1.00e-03 (> 0.0001)" in err[0], err
    assert not (out / "mapper.onnx").exists() and (out / "README.md").read_bytes() == readme
    monkeypatch.setattr(onnx_io, "run_session", lambda session, y, z: real(session, y, z) + 2e-5)
    with pytest.raises(ExportError, match=r"differs from PyTorch by 2\.\d+e-05 \(> 1e-05\)"):
        onnx_io.export_onnx(out, tolerance=1e-5)
    assert not (out / "mapper.onnx").exists()
