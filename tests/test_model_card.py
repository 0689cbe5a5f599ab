"""Model cards: Hugging Face front matter from card.json, metrics kept with their command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from davi.io.export import read_card
from davi.io.model_card import ModelCardError, metrics_from_results, model_card, read_front_matter, write_model_card

SHIPPED = Path(__file__).resolve().parents[1] / "davi" / "assets" / "mappers"
TASKS = ("sr4", "deblur", "box")


def _check_required(front: dict, card: dict) -> None:
    assert front["license"] == "mit"
    assert front["library_name"] == "davi"
    assert front["pipeline_tag"] == "image-to-image"
    assert "davi" in front["tags"] and card["task"] in front["tags"]
    d = front["davi"]
    assert d["task"] == card["task"]
    assert d["operator"] == card["operator"]
    assert d["sigma_y"] == card["sigma_y"]
    assert d["prior"] == {"identity": card["prior"]["identity"], "digest": card["prior"]["digest"]}
    assert d["training"]["steps"] == card["steps"]
    assert d["training"]["objective"] == card["config"]["davi"].get("objective", "paired")


@pytest.mark.parametrize("task", TASKS)
def test_shipped_cards_have_hub_front_matter_and_measured_metrics(task):
    card = read_card(SHIPPED / task)
    front = read_front_matter(SHIPPED / task / "README.md")
    _check_required(front, card)
    metrics = front["davi"]["metrics"]
    assert metrics["command"].startswith(("python benchmarks/tasks.py", "python scripts/ship_mapper.py"))
    assert metrics["images"] == 200 and metrics["split"] == "test"
    assert {"psnr", "ssim", "classifier_fd"} <= set(metrics["values"]) <= {"psnr", "ssim", "classifier_fd", "kid"}
    # the hub's model-index repeats the same numbers
    hub = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert hub == metrics["values"]
    assert "not a posterior standard deviation" in (SHIPPED / task / "README.md").read_text()  # paired mappers
    if card.get("consistency"):
        assert front["davi"]["consistency"]["threshold"] == card["consistency"]["threshold"]
    # the committed card is exactly what the code writes today (no stale or hand-edited cards)
    assert (SHIPPED / task / "README.md").read_text() == model_card(card, metrics, onnx=False), (
        f"{SHIPPED / task / 'README.md'} is stale: python infer.py card --export davi/assets/mappers/{task} "
        f"--results {metrics.get('results', 'benchmarks/results/tasks.json')} --row {task} 'davi (shipped, fp16)'")


@pytest.mark.parametrize("task", ["deblur", "sr4", "box"])
def test_shipped_metrics_are_the_benchmarks_shipped_rows(task):
    """Each card's metrics are the "davi (shipped, fp16)" row of a results file: the one the card
    names (scripts/ship_mapper.py writes it), else benchmarks/tasks.py's."""
    repo = SHIPPED.parents[2]
    card_metrics = read_front_matter(SHIPPED / task / "README.md")["davi"]["metrics"]
    results = repo / card_metrics.get("results", "benchmarks/results/tasks.json")
    m = metrics_from_results(results, task, "davi (shipped, fp16)")
    assert m["values"] == card_metrics["values"] and m["command"] == card_metrics["command"]
    lift_psnr = {"deblur": 19.9, "sr4": 15.1, "box": 12.8}[task]  # lift(y) on the same 200 digits (compare.json)
    assert m["values"]["psnr"] > lift_psnr + 2  # the shipped mapper restores, far above the measurement


def _export_copy(tmp_path, objective=None) -> Path:
    out = tmp_path / "export"
    shutil.copytree(SHIPPED / "sr4", out)
    (out / "README.md").unlink()
    if objective:
        card = json.loads((out / "card.json").read_text())
        card["config"]["davi"]["objective"] = objective
        card.pop("objective", None)  # newer cards also record it at the top: the config's must be found
        (out / "card.json").write_text(json.dumps(card))
    return out


def test_objective_comes_from_the_config_and_metrics_survive_a_rewrite(tmp_path):
    out = _export_copy(tmp_path, objective="sampler")
    write_model_card(out, read_card(out))
    front = read_front_matter(out / "README.md")
    _check_required(front, read_card(out))
    assert front["davi"]["training"]["objective"] == "sampler"
    assert "samples of the approximate posterior" in (out / "README.md").read_text()
    assert "metrics" not in front["davi"] and "model-index" not in front  # absent, not invented

    metrics = {"values": {"psnr": 21.5}, "images": 10, "split": "test", "command": "python x.py --images 10"}
    write_model_card(out, read_card(out), metrics)
    (out / "mapper.onnx").write_bytes(b"stand-in")  # e.g. ONNX added later: the card is rewritten
    write_model_card(out, read_card(out))
    front = read_front_matter(out / "README.md")
    assert front["davi"]["metrics"]["values"] == {"psnr": 21.5}
    assert front["davi"]["metrics"]["command"] == "python x.py --images 10"
    assert "onnx" in front["tags"] and "mapper.onnx" in front["davi"]["files"]


def test_results_parsing_and_bad_inputs(tmp_path):
    results = tmp_path / "t.json"
    results.write_text(json.dumps({"command": "python b.py --images 50", "head": "On 50 held-out test images.",
                                   "rows": [{"task": "sr4", "method": "davi", "psnr": 20.0, "ssim": 0.8,
                                             "steps": 9}]}))
    m = metrics_from_results(results, "sr4", "davi")
    assert m == {"values": {"psnr": 20.0, "ssim": 0.8}, "images": 50, "split": "test",
                 "command": "python b.py --images 50", "results": str(results)}
    with pytest.raises(ModelCardError, match="no row with task 'box'"):
        metrics_from_results(results, "box", "davi")
    results.write_text("{not json")
    with pytest.raises(ModelCardError, match="t.json: not a benchmark results JSON"):
        metrics_from_results(results, "sr4", "davi")
    plain = tmp_path / "README.md"
    plain.write_text("# no front matter\n")
    with pytest.raises(ModelCardError, match="no YAML front matter"):
        read_front_matter(plain)


def test_a_card_naming_an_import_path_operator_is_rendered_without_importing_it(tmp_path, capsys):
    """Writing or reading a model card runs no code a card names (the Zen of Python stays unprinted):
    the operator's name stands in for its description, ``h, w`` for its measurement's size."""
    from davi.io.card import ExportCard

    card = read_card(SHIPPED / "sr4")
    card = {**card, "operator": {**card["operator"], "name": "this:Zen"}}
    text = model_card(ExportCard.from_dict(card), onnx=True)
    assert capsys.readouterr().out == ""
    assert "**this:Zen**" in text and "Measurements are 1xhxw images" in text and "| (B, 1, h, w) float32 |" in text
    assert model_card(card, onnx=True) == text  # a card.json dict renders the same


def test_a_family_card_describes_the_family_and_names_its_member(tmp_path):
    """A family export's card: the family (not the member it happened to be exported with) in the title,
    the davi block and the hub's task; the restore command names a member; metrics say which member."""
    from davi.io.card import ExportCard

    family_export = SHIPPED.parents[2] / "resume" / "family_mnist_paired" / "export"
    card = ExportCard.from_dict(read_card(family_export))
    metrics = {"values": {"psnr": 20.0}, "images": 200, "split": "test", "data": "mnist32", "command": "python x",
               "member": "4x super-resolution at sigma_y 0.05"}
    text = model_card(card, metrics)
    front = read_front_matter(_written(tmp_path, text))
    d = front["davi"]
    assert "operator" not in d and d["family"] == card.extra["family"] and d["sigma_y"] == [0.01, 0.2]
    assert d["task_description"].startswith("family of 4: sr (scale in {2, 4}); deblur")
    assert front["model-index"][0]["results"][0]["task"]["name"] == metrics["member"]
    body = text.split("\n---\n", 1)[1]
    assert "One DAVI mapper (Lee et al. 2024) for a **family of 4" in body
    assert "--operator deblur --kernel-std 1.7 --sigma-y 0.08" in body  # a member is named at restore time
    assert "measured by the member 4x super-resolution at sigma_y 0.05" in body
    assert "sigma_y = 0.0833" not in body  # the drawn member of the export is not presented as its task


def _written(tmp_path, text: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(text)
    return path


def test_the_shipped_family_card_is_current_and_names_its_thresholds_per_noise_level():
    card = read_card(SHIPPED / "family")
    front = read_front_matter(SHIPPED / "family" / "README.md")
    metrics = front["davi"]["metrics"]
    assert front["davi"]["family"] == card["family"] and metrics["member"].endswith("at sigma_y 0.05")
    assert metrics["command"].startswith("python scripts/ship_mapper.py") and metrics["images"] == 200
    levels = card["consistency"]["by_sigma"]
    assert levels["sigma_y"][0] == 0.01 and levels["sigma_y"][-1] == 0.2
    text = (SHIPPED / "family" / "README.md").read_text()
    assert f"{levels['threshold'][0]:.2f} at 0.01" in text
    assert text == model_card(card, metrics, onnx=False), "davi/assets/mappers/family/README.md is stale"
