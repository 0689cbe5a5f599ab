"""Loading an export runs no code its card names unless the caller opts in (trust_remote_code).

A card is data that may come from anywhere; an operator named by import path ("module:Class")
would be imported, running the module's top level. The module here writes a marker file when
imported, so "refused" means "never imported", not just "raised afterwards".
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import davi
from davi.io.export import ExportError, load_export
from davi.operators import OperatorError, operator_from_params

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "davi" / "assets" / "mappers" / "sr4"

MARKER_MODULE = '''
import pathlib, os
pathlib.Path(os.environ["DAVI_TRUST_MARKER"]).write_text("imported")
from davi.operators import SuperResolution

class Sr(SuperResolution):
    pass
'''


@pytest.fixture
def hostile_export(tmp_path, monkeypatch):
    """A copy of the shipped SR x4 export whose card names an import-path operator in a module that
    leaves a marker file when it runs."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "side_effect_op.py").write_text(MARKER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.setenv("DAVI_TRUST_MARKER", str(tmp_path / "ran"))
    export = tmp_path / "export"
    shutil.copytree(SHIPPED, export)
    card = json.loads((export / "card.json").read_text())
    card["operator"]["name"] = "side_effect_op:Sr"
    (export / "card.json").write_text(json.dumps(card))
    yield export, tmp_path / "ran"
    sys.modules.pop("side_effect_op", None)


def test_an_import_path_operator_in_a_card_is_refused_and_never_imported(hostile_export):
    export, marker = hostile_export
    with pytest.raises(ExportError) as info:
        load_export(export)
    message = str(info.value)
    assert "side_effect_op" in message and "trust_remote_code" in message and "\n" not in message
    with pytest.raises(ExportError, match="trust_remote_code"):
        davi.Restorer.from_pretrained(export)
    assert not marker.exists() and "side_effect_op" not in sys.modules


def test_trusting_the_card_loads_the_operator(hostile_export):
    export, marker = hostile_export
    restorer = davi.Restorer.from_pretrained(export, trust_remote_code=True)
    assert marker.read_text() == "imported" and type(restorer.operator).__name__ == "Sr"


def test_registered_operators_and_file_values_load_without_trust():
    for task in ("sr4", "deblur", "box"):
        _, card, op = load_export(ROOT / "davi" / "assets" / "mappers" / task)
        assert op.name == card["operator"]["name"]
    params = davi.operators.Deblur.gaussian(0.05, 16, 1, 5, 1.0).params()
    params = {k: v for k, v in params.items() if k not in ("kernel_size", "kernel_std")}
    params["kernel"] = [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]  # kernel values, as a file operator stores them
    params["kernel_file"] = "k.npy"
    assert operator_from_params(params).params()["kernel"] == params["kernel"]


def test_the_zen_card_prints_nothing_through_the_cli(tmp_path, capsys):
    """The issue's reproduction: a card naming "this:Zen" printed the Zen of Python during restore."""
    import infer

    export = tmp_path / "export"
    shutil.copytree(SHIPPED, export)
    card = json.loads((export / "card.json").read_text())
    card["operator"]["name"] = "this:Zen"
    (export / "card.json").write_text(json.dumps(card))
    sys.modules.pop("this", None)  # so an import would run the module (and print) again
    code = infer.main(["restore", "--export", str(export), "--input", "mnist32:test", "--limit", "1",
                       "--simulate", "sr", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 2 and "this" not in sys.modules and not (tmp_path / "o").exists()
    assert "Beautiful is better than ugly" not in out + err
    assert err.count("\n") == 1 and "--trust-remote-code" in err and "'this'" in err


def test_a_config_names_its_own_code_and_is_trusted():
    from davi.config import OperatorConfig
    from davi.operators import build_operator

    sys.path.insert(0, str(ROOT / "tests"))
    try:
        op = build_operator(OperatorConfig(name="operator_plugin:Decimate", scale=2), 8, 1)
    finally:
        sys.path.remove(str(ROOT / "tests"))
    assert op.name == "operator_plugin:Decimate"
    with pytest.raises(OperatorError, match="trust_remote_code"):
        operator_from_params(op.params())
