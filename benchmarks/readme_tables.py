"""Document tables generated from the benchmark results, so the documents cannot drift from them.

A table lives between two markers, ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``, in
README.md or in one of docs/*.md (exactly one of them). Each benchmark registers the tables it
produces (``@table("name", "file.json")`` from benchmarks/common.py, beside its render function);
this tool imports the benchmarks to collect them, renders each from its JSON(s) in
benchmarks/results/ and rewrites (or checks) its marked block wherever it is.

    python benchmarks/readme_tables.py            # rewrite every marked table from the JSONs
    python benchmarks/readme_tables.py --check    # exit 1 naming every table that differs

Adding a table: write a render function in the benchmark that writes the JSON, decorate it with
``@table("name", "file.json")``, put the two markers in a document and run this script once.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

from common import RESULTS, ROOT, TABLES
from davi.io.atomic import write_text

README = ROOT / "README.md"
DOCS = ROOT / "docs"
# the benchmarks that register tables (importing one runs nothing but its definitions)
PRODUCERS = ("tasks", "compare", "train_cost", "onnx_speed", "classifier", "speed", "memory", "posterior", "ood",
             "ood_statistics", "unpaired", "sweep", "convergence", "realism_floor", "calibration", "baselines", "photos", "family")

for _module in PRODUCERS:
    importlib.import_module(_module)

# Registered tables that a document is about to quote: without markers anywhere they are named on
# stderr, not an error (so a table can be registered before its page is written); once a document
# holds their markers they are checked like any other. Remove a name once its markers are placed.
AWAITING_MARKERS: tuple[str, ...] = ()


def _region(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{re.escape(name)} -->)(.*?)(<!-- /table:{re.escape(name)} -->)", re.S)


def render(name: str, results: Path = RESULTS) -> str:
    """The text between ``name``'s markers, rendered from its JSON(s) in ``results``."""
    entry = TABLES[name]
    data = []
    for source in entry.sources:
        path = Path(results) / source
        if not path.is_file():
            raise SystemExit(f"error: table {name!r}: results file {path} is missing")
        try:
            data.append(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: table {name!r}: {path} is not valid JSON ({e})") from None
    try:
        text = entry.render(*data).strip()
    except (KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"error: table {name!r}: {', '.join(entry.sources)} lacks what the table needs "
                         f"({type(e).__name__}: {e})") from None
    return text if entry.inline else f"\n{text}\n"


def _place(name: str, texts: dict[Path, str]) -> tuple[Path, re.Match] | str:
    """(the document holding ``name``'s markers, the match), or the error naming where they are not."""
    found = [(doc, m) for doc, text in texts.items() if (m := _region(name).search(text))]
    if len(found) == 1 and len(_region(name).findall(texts[found[0][0]])) == 1:
        return found[0]
    if not found:
        return (f"table {name!r} has no <!-- table:{name} --> ... <!-- /table:{name} --> markers in "
                + (", ".join(d.name for d in texts) or "any document"))
    where = [d.name for d, _ in found for _ in range(len(_region(name).findall(texts[d])))]
    return f"table {name!r} has markers in more than one place ({', '.join(where)}): keep one"


def update(texts: dict[Path, str], results: Path = RESULTS) -> tuple[dict[Path, str], list[str]]:
    """(each document's text with every registered table re-rendered, names of the tables that changed).

    ``texts`` maps a document to its text; a table's markers sit in exactly one of them. A registered
    table whose markers are in no document (it would never be checked) or in two, and a missing or
    unusable JSON, are errors; every such table is named, in one line."""
    texts, changed, errors = dict(texts), [], []
    for name in TABLES:
        placed = _place(name, texts)
        if isinstance(placed, str) and name in AWAITING_MARKERS and "has no" in placed:
            print(f"note: {placed} (awaiting them)", file=sys.stderr)
            continue
        if isinstance(placed, str):
            errors.append(placed)
            continue
        try:
            new = render(name, results)
        except SystemExit as e:
            errors.append(str(e).removeprefix("error: "))
            continue
        doc, match = placed
        if match.group(2) != new:
            changed.append(name)
            texts[doc] = texts[doc][:match.start(2)] + new + texts[doc][match.end(2):]
    if errors:
        raise SystemExit("error: " + "; ".join(errors))
    return texts, changed


def documents(readme: Path = README, docs: Path | None = None) -> dict[Path, str]:
    """The README and every docs/*.md page beside it (``docs``: default DOCS), as texts."""
    pages = sorted(Path(DOCS if docs is None else docs).glob("*.md"))
    return {d: d.read_text() for d in [Path(readme), *pages] if d.is_file()}


def check(readme: Path = README, results: Path = RESULTS, docs: Path | None = None) -> list[str]:
    """Names of the tables (README.md, docs/*.md) that differ from what their JSONs render to."""
    return update(documents(readme, docs), results)[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--docs", type=Path, default=None, help="folder of the other pages (default: docs/)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not args.readme.is_file():
        raise SystemExit(f"error: {args.readme} does not exist")
    before = documents(args.readme, args.docs)
    after, changed = update(before, args.results)
    if args.check:
        for name in changed:
            print(f"table {name!r} differs from {', '.join(TABLES[name].sources)} "
                  f"(run python benchmarks/readme_tables.py)", file=sys.stderr)
        return 1 if changed else 0
    written = [doc for doc, text in after.items() if text != before[doc]]
    for doc in written:
        write_text(doc, after[doc])
    pages = ", ".join(str(d.relative_to(ROOT)) if d.is_relative_to(ROOT) else str(d) for d in written)
    print(f"rewrote {', '.join(changed)} in {pages}" if changed else "all tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
