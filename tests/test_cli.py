"""The installed ``davi`` command: every subcommand's help (as the console script and as
``python -m davi``), the repository shims (train.py, infer.py), the CLI as the top layer of the
import graph, one-line errors, and ``davi restore`` writing what ``infer.py restore`` writes."""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_import_graph import PACKAGE, import_graph

from davi.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
# the files of the command-line layer outside davi/cli/restore.py (the repository shims included)
CLI_FILES = [ROOT / name for name in ("train.py", "infer.py", "app.py", "demo.py")] + [
    PACKAGE / "__main__.py", *(p for p in sorted((PACKAGE / "cli").glob("*.py")) if p.name != "restore.py")]


def davi_script() -> str:
    """The console script pip installed (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).with_name("davi")
    found = str(beside) if beside.is_file() else shutil.which("davi")
    if found is None:
        pytest.fail("no `davi` console script: pip install -e . (pyproject.toml [project.scripts])")
    return found


def run(*argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("launcher", ["script", "module"])
def test_every_command_has_help(launcher):
    prefix = [davi_script()] if launcher == "script" else [sys.executable, "-m", "davi"]
    top = run(*prefix, "--help")
    assert top.returncode == 0, top.stderr
    for name in ["train", "restore", "evaluate", "export", "onnx", "card", "app", "demo", "anchors", "convert"]:
        assert name in top.stdout
        r = run(*prefix, name, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: davi {name}"), (name, r.stderr)
    assert list(COMMANDS) == ["train", "restore", "evaluate", "export", "onnx", "card", "app", "demo", "anchors",
                              "convert"]


def test_repository_shims_keep_their_help():
    for argv, usage in ((["train.py", "--help"], "usage: train.py"), (["infer.py", "restore", "--help"],
                                                                      "usage: infer.py restore"),
                        (["app.py", "--help"], "usage: app.py"), (["demo.py", "--help"], "usage: demo.py")):
        r = run(sys.executable, *argv)
        assert r.returncode == 0 and r.stdout.startswith(usage), (argv, r.stderr)


def test_no_module_outside_the_cli_imports_it():
    graph = import_graph()
    entry_points = {"davi.__main__"}  # `python -m davi`: the command itself
    offenders = {m: sorted(t for t in targets if t == "davi.cli" or t.startswith("davi.cli."))
                 for m, targets in graph.items()
                 if not (m == "davi.cli" or m.startswith("davi.cli.")) and m not in entry_points}
    assert not {m: t for m, t in offenders.items() if t}, "the core imports the CLI layer"


def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add((node.module or "").split(".")[0])
    return names


def test_the_cli_imports_only_what_the_core_can():
    """davi/cli is the top layer of an installed package: the standard library, davi and installed
    distributions, never the repository's scripts (infer, app, demo, benchmarks, tests)."""
    local = {p.stem for d in (ROOT, ROOT / "benchmarks", ROOT / "tests", ROOT / "scripts") for p in d.glob("*.py")}
    installed = set(importlib.metadata.packages_distributions())
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        names = _top_level_imports(path)
        assert not names & local, f"{path.name} imports repository scripts {sorted(names & local)}"
        unknown = names - set(sys.stdlib_module_names) - installed - {"davi", "__future__"}
        assert not unknown, f"{path.name} imports {sorted(unknown)}, which no installed distribution provides"


def test_convert_flags_name_the_library_presets():
    from davi.cli.convert import PRESET_NAMES
    from davi.io.convert import PRESETS

    assert PRESET_NAMES == tuple(PRESETS)


def test_command_line_functions_are_short():
    for path in CLI_FILES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path.name}: {node.name} is {length} lines"


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    r = run(davi_script(), "train", "--config", str(tmp_path / "nope.yaml"), "train.max_steps=1")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "nope.yaml: config file not found" in r.stderr
    assert r.stdout == ""


def test_davi_restore_writes_what_infer_restore_writes(tmp_path):
    import infer

    flags = ["--export", str(PACKAGE / "assets" / "mappers" / "sr4"), "--input", "mnist32:test", "--limit", "2",
             "--simulate", "sr", "--samples", "2"]
    assert main(["restore", *flags, "--out", str(tmp_path / "davi")]) == 0
    assert infer.main(["restore", *flags, "--out", str(tmp_path / "infer")]) == 0
    files = {d: sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*") if p.is_file())
             for d in ("davi", "infer")}
    assert files["davi"] == files["infer"] and files["davi"]
    means = [p for p in files["davi"] if p.parts[0] == "mean"]
    assert len(means) == 2
    for p in means:
        assert (tmp_path / "davi" / p).read_bytes() == (tmp_path / "infer" / p).read_bytes(), p
