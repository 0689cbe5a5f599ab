"""Functions a reader can hold: none longer than 60 lines in the library (davi/) or the command-line
entry points (train.py, infer.py, app.py, demo.py). Nested functions count on their own; a
function's length includes its docstring and decorators' line, not its nested functions twice."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60
ENTRY_POINTS = ("train.py", "infer.py", "app.py", "demo.py")


def long_functions(paths, limit: int = LIMIT) -> list[str]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_60_lines():
    paths = sorted((ROOT / "davi").rglob("*.py")) + [ROOT / p for p in ENTRY_POINTS]
    assert long_functions(paths) == []


def test_the_checker_sees_a_long_function(tmp_path):
    src = tmp_path / "long.py"
    src.write_text("def f():\n" + "    x = 1\n" * 61 + "\n\ndef g():\n    return 1\n")
    global ROOT
    root, ROOT = ROOT, tmp_path
    try:
        assert long_functions([src]) == ["long.py:1 f (62 lines)"]
    finally:
        ROOT = root
