"""Named mutations: each applies one deliberate bug to a temporary copy of the repository and runs
the tests that should catch it. A mutation is *caught* when those tests fail (a test that passes on
the bug it names is a defect). The specs live in ``benchmarks/mutations/<area>.py`` as
``MUTATIONS = [Mutation(...), ...]``; the last report is ``benchmarks/results/mutations.json``.

    python benchmarks/mutate.py                     # every mutation -> benchmarks/results/mutations.json
    python benchmarks/mutate.py --only NAME [NAME]  # some (the report keeps the others' last results)
    python benchmarks/mutate.py --list

The copy is imported through ``PYTHONPATH`` (ahead of the editable install), so name tests that run
in-process: a test whose subprocess replaces the environment would import the unmutated package.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutations.json"
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Mutation:
    """Replace ``find`` (which must occur exactly once in ``module``, a repository path) by ``replace``;
    ``tests`` (pytest paths or node ids, space-separated) must then fail."""

    name: str
    module: str
    find: str
    replace: str
    tests: str
    why: str = ""


def all_mutations() -> dict[str, Mutation]:
    import benchmarks.mutations as pkg

    found: dict[str, Mutation] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        for m in importlib.import_module(f"benchmarks.mutations.{info.name}").MUTATIONS:
            if m.name in found:
                raise SystemExit(f"mutation {m.name!r} is defined twice")
            found[m.name] = m
    return found


def _copy_repository(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def apply(m: Mutation, copy: Path) -> None:
    path = copy / m.module
    text = path.read_text()
    if text.count(m.find) != 1:
        raise SystemExit(f"mutation {m.name!r}: {m.module} holds {text.count(m.find)} copies of its 'find' text, not 1")
    path.write_text(text.replace(m.find, m.replace))


def run_tests(tests: str, copy: Path, timeout: int) -> tuple[bool, float]:
    """(tests passed, seconds) in ``copy`` with the copy first on the import path."""
    env = {**os.environ, "PYTHONPATH": f"{copy}{os.pathsep}{copy / 'tests'}{os.pathsep}{copy / 'benchmarks'}",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests.split()],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        passed = proc.returncode == 0
    except subprocess.TimeoutExpired:
        passed = False  # a hang under the bug is a failure the suite would report
    return passed, time.perf_counter() - t0


def check(m: Mutation, timeout: int) -> dict:
    """The mutation's report entry: caught = its tests pass on the clean copy and fail on the mutated one."""
    with tempfile.TemporaryDirectory(prefix="davi-mutant-") as tmp:
        copy = Path(tmp)
        _copy_repository(copy)
        clean, _ = run_tests(m.tests, copy, timeout)
        if not clean:
            return {"module": m.module, "tests": m.tests, "caught": False, "error": "tests fail without the mutation"}
        apply(m, copy)
        passed, seconds = run_tests(m.tests, copy, timeout)
    return {"module": m.module, "tests": m.tests, "caught": not passed, "why": m.why, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, help="mutation names (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--timeout", type=int, default=600, help="seconds per test run")
    args = p.parse_args(argv)
    mutations = all_mutations()
    if args.list:
        for name, m in mutations.items():
            print(f"{name:45s} {m.module}  [{m.tests}]")
        return 0
    unknown = sorted(set(args.only or ()) - set(mutations))
    if unknown:
        raise SystemExit(f"--only: no mutation named {unknown[0]!r} (see --list)")
    report = json.loads(RESULTS.read_text()) if RESULTS.is_file() and args.only else {}
    for name in args.only or mutations:
        report[name] = check(mutations[name], args.timeout)
        print(f"{name}: {'caught' if report[name]['caught'] else 'NOT CAUGHT'}", flush=True)
    report = {k: report[k] for k in mutations if k in report}  # spec order; drop removed mutations
    from davi.io.atomic import write_json

    write_json(RESULTS, report)
    missed = [k for k, v in report.items() if not v["caught"]]
    print(f"{len(report) - len(missed)} of {len(report)} caught" + (f"; not caught: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
