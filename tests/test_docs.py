"""The documentation is executable: the README and docs/api.md run as written, every documented
command answers ``--help``, the README's layout table matches the package, and the README stays a
front door (at most 250 lines).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PACKAGE = ROOT / "davi"

# documented command lines, by how they start (after any VAR=value prefixes)
COMMAND_PREFIXES = ("davi ", "python infer.py", "python train.py", "accelerate launch train.py",
                    "python benchmarks/", "python scripts/")


def code_blocks(path: Path, lang: str) -> list[str]:
    """The fenced ```lang blocks of a Markdown file, in order (fences at the start of a line)."""
    pattern = re.compile(rf"^```{re.escape(lang)}[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
    return [m.group(1) for m in pattern.finditer(path.read_text())]


# ----------------------------------------------------------------------------------------------
# (a) the Python blocks run as written
# ----------------------------------------------------------------------------------------------
RUN_BLOCKS = """
import sys, traceback
for doc, code in {docs!r}:
    try:
        exec(compile(code, doc, "exec"), {{"__name__": "__main__"}})  # each file in a namespace of its own
    except BaseException:
        print(f"FAILED {{doc}}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


@pytest.mark.slow  # one interpreter for both files (README about 4 s, api.md about 9 s: a 2-step training run)
def test_python_blocks_run_as_written(tmp_path):
    docs = []
    for doc in ("README.md", "docs/api.md"):
        blocks = code_blocks(ROOT / doc, "python")
        assert blocks, f"{doc} has no ```python block"
        docs.append((doc, "\n\n".join(blocks)))
    script = tmp_path / "blocks.py"
    script.write_text(RUN_BLOCKS.format(docs=docs))
    (ROOT / "outputs").mkdir(exist_ok=True)  # git-ignored; where the blocks write
    run = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"```python blocks fail:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"


# ----------------------------------------------------------------------------------------------
# (b) every documented command answers --help
# ----------------------------------------------------------------------------------------------
def documented_commands() -> dict[tuple[str, ...], str]:
    """{(program, subcommand?): first documented line} for the ```bash lines of README.md and docs/*.md."""
    found: dict[tuple[str, ...], str] = {}
    for doc in [README, *sorted(DOCS.glob("*.md"))]:
        for block in code_blocks(doc, "bash"):
            for line in block.splitlines():
                line = re.sub(r"^\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*", "", line)  # PYTHONPATH=. OMP_...=1
                if not line.startswith(COMMAND_PREFIXES):
                    continue
                words = line.split()
                if words[0] == "davi":
                    key = ("davi", words[1])
                elif words[0] == "accelerate":
                    key = ("train.py",)
                elif words[1] == "infer.py":
                    key = ("infer.py", words[2])
                else:
                    key = (words[1],)
                found.setdefault(key, f"{doc.relative_to(ROOT)}: {line.strip()}")
    return found


def davi_entry_point() -> str:
    """'module:function' of the installed `davi` command, from pyproject.toml."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("project", {}).get("scripts", {})
    assert "davi" in scripts, "pyproject.toml has no [project.scripts] davi entry"
    return scripts["davi"]


# One subprocess runs every --help in turn (imports are paid once): scripts through runpy with their
# own folder first on sys.path, `davi` through its entry point.
_RUNNER = r"""
import contextlib, importlib, io, json, runpy, sys
entry, commands = json.loads(sys.argv[1])
module, _, function = entry.partition(":")
root = str(__import__('pathlib').Path.cwd())
results = {}
base_path = list(sys.path)
for key in commands:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if key[0] == "davi":
                sys.argv = ["davi", key[1], "--help"]
                getattr(importlib.import_module(module), function)()
            else:
                sys.argv = [key[0]] + key[1:] + ["--help"]
                sys.path[:] = [str(__import__("pathlib").Path(key[0]).resolve().parent)] + base_path
                runpy.run_path(key[0], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:
        code = f"{type(e).__name__}: {e}"
    results[" ".join(key)] = [code, out.getvalue()[-1500:]]
    # forget the scripts' own modules (benchmarks' helpers register tables at import), keep davi's
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        if f.startswith(root) and not f.startswith(root + "/davi/") and "/.venv/" not in f:
            del sys.modules[name]
print(json.dumps(results))
"""


def test_every_documented_command_answers_help():
    commands = documented_commands()
    assert ("davi", "restore") in commands and ("train.py",) in commands, sorted(commands)
    run = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps([davi_entry_point(), sorted(commands)])],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    failed = {name: (code, out) for name, (code, out) in results.items() if code != 0}
    where = {" ".join(k): v for k, v in commands.items()}
    assert not failed, "\n".join(f"{name} --help exits {code} (documented in {where[name]}):\n{out}"
                                 for name, (code, out) in failed.items())


# ----------------------------------------------------------------------------------------------
# (c) the README's layout table matches the package; (d) its length
# ----------------------------------------------------------------------------------------------
def layout_paths() -> list[str]:
    text = README.read_text()
    section = text.split("## Library layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [p for row in rows for p in re.findall(r"`([^`]+)`", row.split("|")[1])]


def test_readme_layout_table_matches_the_package():
    paths = layout_paths()
    assert paths, "README.md has no layout table under '## Library layout'"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README.md's layout table names paths that do not exist: {missing}"
    subpackages = sorted(f"davi/{d.name}/" for d in PACKAGE.iterdir() if (d / "__init__.py").is_file())
    named = {p.rstrip("/") + "/" for p in paths}
    unnamed = [s for s in subpackages + ["davi/config.py", "davi/builders.py"] if s not in named and s.rstrip("/") not in paths]
    assert not unnamed, f"README.md's layout table lacks: {unnamed}"


def test_readme_is_at_most_250_lines():
    n = len(README.read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines (at most 250: move the rest to docs/)"


def test_readme_links_resolve():
    for doc in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to a missing {target}"
