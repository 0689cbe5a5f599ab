"""The documents' result tables (README.md, docs/*.md) are the ones their JSONs in benchmarks/results/ render to."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import common
import compare
import posterior
import pytest
import readme_tables as rt
import tasks
import train_cost
from classifier import render_classifier

ROOT = Path(__file__).resolve().parents[1]


def _copy_documents(tmp_path: Path) -> tuple[Path, Path]:
    """(README, docs folder) copied into ``tmp_path`` with every table rendered, to edit without touching
    the checkout (test_readme_tables_match_their_results checks the checkout itself)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(rt.README, tmp_path / "README.md")
    for page in rt.DOCS.glob("*.md"):
        shutil.copy(page, docs / page.name)
    assert rt.main(["--readme", str(tmp_path / "README.md"), "--docs", str(docs)]) == 0
    return tmp_path / "README.md", docs


def _holding(name: str, readme: Path, docs: Path) -> Path:
    """The document among ``readme`` and ``docs/*.md`` that holds table ``name``'s markers."""
    return next(d for d in [readme, *sorted(docs.glob("*.md"))] if f"<!-- table:{name} -->" in d.read_text())


def test_readme_tables_match_their_results():
    assert rt.check() == [], "run: python benchmarks/readme_tables.py"


def test_every_benchmark_table_is_registered_once_with_its_render_function():
    assert {"tasks", "compare", "headline", "ood_shifts", "sweep_box", "convergence_sr4", "speed_gpu"} <= set(rt.TABLES)
    assert rt.TABLES["tasks"].render is tasks.render_tasks and rt.TABLES["headline"].render is compare.render_headline
    with pytest.raises(ValueError, match="registered twice"):
        common.table("tasks", "tasks.json")(lambda data: "")


def test_check_names_a_table_edited_in_its_document(tmp_path):
    readme, docs = _copy_documents(tmp_path)
    doc = _holding("tasks", readme, docs)
    text = doc.read_text()
    row = "| sr4 | davi | 250 | 20.61 |"
    assert row in text
    doc.write_text(text.replace(row, "| sr4 | davi | 250 | 20.71 |"))
    assert rt.check(readme, docs=docs) == ["tasks"]
    assert rt.main(["--check", "--readme", str(readme), "--docs", str(docs)]) == 1
    # rewriting restores it, and only the marked region changed
    assert rt.main(["--readme", str(readme), "--docs", str(docs)]) == 0
    assert doc.read_text() == text


def test_check_names_every_table_fed_by_a_changed_json(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(rt.RESULTS, results)
    data = json.loads((results / "tasks.json").read_text())
    lift = next(r for r in data["rows"] if r["task"] == "box" and r["method"] == "lift(y)")
    lift["psnr"] -= 1.0  # every box gain grows by 1 dB: the table and the gain range change
    (results / "tasks.json").write_text(json.dumps(data))
    changed = rt.check(rt.README, results)
    assert {"tasks", "tasks_psnr_gain"} <= set(changed)  # the table and the range derived from it
    assert not {"tasks_fd_drop", "compare", "prior"} & set(changed)  # tables that do not read the lift's PSNR


def test_missing_marker_or_results_file_is_one_line_error(tmp_path):
    readme, docs = _copy_documents(tmp_path)
    doc = _holding("compare", readme, docs)
    doc.write_text(doc.read_text().replace("<!-- /table:compare -->", ""))
    with pytest.raises(SystemExit, match="'compare' has no .*markers"):
        rt.check(readme, docs=docs)
    results = tmp_path / "results"
    results.mkdir()
    with pytest.raises(SystemExit, match=r"results file .*\.json is missing"):
        rt.check(rt.README, results)


def test_a_table_in_two_documents_is_an_error(tmp_path):
    readme, docs = _copy_documents(tmp_path)
    doc = _holding("tasks", readme, docs)
    other = next(d for d in [readme, *sorted(docs.glob("*.md"))] if d != doc)
    other.write_text(other.read_text() + "\n<!-- table:tasks -->\n<!-- /table:tasks -->\n")
    with pytest.raises(SystemExit, match="'tasks' has markers in more than one place"):
        rt.check(readme, docs=docs)


def test_tables_in_any_docs_page_are_checked_too(tmp_path):
    readme, docs = _copy_documents(tmp_path)
    assert "ood_shifts" not in rt.check(readme, docs=docs)
    page = _holding("ood_shifts", readme, docs)
    text = page.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| sr4/none |"))
    page.write_text(text.replace(row, row.replace("| sr4/none |", "| sr4/none | 0.00 |", 1)))
    assert rt.check(readme, docs=docs) == ["ood_shifts"]
    # moved to a new page of its own: found there
    (docs / "new_page.md").write_text("# moved\n\n" + text[text.index("<!-- table:ood_shifts -->"):
                                                           text.index("<!-- /table:ood_shifts -->") + 27])
    page.write_text(text.replace("<!-- table:ood_shifts -->", "").replace("<!-- /table:ood_shifts -->", ""))
    assert "ood_shifts" not in rt.check(readme, docs=docs)
    (docs / "new_page.md").write_text("nothing here")
    with pytest.raises(SystemExit, match="'ood_shifts' has no .*markers"):
        rt.check(readme, docs=docs)


@pytest.mark.parametrize("name, render", [
    ("tasks", tasks.render_tasks), ("train_cost", train_cost.render_train_cost),
    ("compare", compare.render_compare_md),
    ("classifier", render_classifier)])
def test_results_markdown_is_rendered_from_its_json(name, render):
    data = json.loads((common.RESULTS / f"{name}.json").read_text())
    assert common.results_markdown(data, render) == (common.RESULTS / f"{name}.md").read_text()


def test_publish_writes_json_and_markdown_that_agree(tmp_path, capsys):
    data = {"command": "python benchmarks/x.py", "head": "Settings.", "rows": [
        {"what": "a", "seconds": 0.12345}, {"what": "b", "seconds": 2.0, "ratio": 1.5}]}
    common.publish(tmp_path / "x.json", data, train_cost.render_train_cost)
    assert json.loads((tmp_path / "x.json").read_text()) == data
    md = (tmp_path / "x.md").read_text()
    assert md.startswith("Settings.\n\nCommand: python benchmarks/x.py\n\n| what | seconds |")
    assert "| a | 0.123 |  |  |\n| b | 2.000 | 1.50 |  |\n" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.md"]  # no temp files left


def test_posterior_goals_are_counted_from_the_rows():
    rows = [{"prior": "gauss", "task": t, "method": m, "mean_err": e, "var_tr": v, "var_top5": [lo, hi],
             "seconds": 60.0}
            for m, t, e, v, lo, hi in (("sampler", "a", 0.04, 0.4, 0.3, 0.9), ("sampler", "b", 0.2, 1.0, 0.6, 1.5),
                                       ("sampler", "c", 0.05, 2.5, 0.7, 2.1), ("paired", "a", 0.3, 0.1, 0.01, 0.2))]
    rows.append({"prior": "gauss", "task": "a", "method": "exact", "mean_err": 0.01, "var_tr": 1.0})
    text = posterior.render_posterior({"rows": rows})
    assert "| Gaussian: posterior mean within 5% | met on 2 of 3 (4.0%-20.0%) | **not met** on any of 1 (30.0%) |" in text
    assert "| Gaussian: trace variance ratio in [0.5, 2] | met on 1 of 3 (0.40-2.50) |" in text
    assert "| Gaussian: top-5 eigen-direction variance ratios in [0.5, 2] (smallest ratio shown) | met on 1 of 3" in text
    assert "Monte-Carlo floor) | 1.0% |" in text
    assert "mixture: mode weights within 0.1 |  |  |" in text  # no mixture rows: nothing claimed


def _compare_data(rd1000: bool):
    row = lambda psnr, fd, kid, seeds=1: {"psnr": psnr, "ssim": 0.9, "classifier_fd": fd, "kid": kid,  # noqa: E731
                                          "kid_std": 0.01, "seeds": seeds}
    sr4 = {"davi": row(20.0, 10.0, 0.10, 3), "red_diff_100": row(19.5, 12.0, 0.20)}
    if rd1000:
        sr4["red_diff_1000"] = row(20.5, 8.0, 0.05)
    return {"seeds": [0, 1, 2], "images": 200, "sr4": sr4,
            "timing": {"sr4": {"davi": 0.01, "red_diff_1000": 6.0, "red_diff_100": 0.4}}}


def test_compare_goals_wait_for_every_red_diff_before_a_pass_but_not_before_a_miss():
    partial = compare.render_compare_goals(_compare_data(rd1000=False))
    assert "KID 0.100 vs 0.200: met so far (RED-Diff-1000 pending)" in partial
    assert "600x: met" in partial and "40x: **not met**" in partial
    verdict = compare.render_compare_verdict(_compare_data(rd1000=False))
    assert "better realism (FD and KID) than every RED-Diff setting: met on 0 of 1 tasks, pending on sr4" in verdict
    full = compare.render_compare_goals(_compare_data(rd1000=True))
    assert "FD 10.00 vs 8.00, KID 0.100 vs 0.050: **not met**" in full and "-0.50 dB: met" in full
    status = compare.render_compare_status(_compare_data(rd1000=False))
    assert status.startswith("RED-Diff-1000 0 on sr4; RED-Diff-100 1 on sr4 (seeds of 3, 200 test images each")
    table = compare.render_compare(_compare_data(rd1000=False))
    assert "| sr4 | RED-Diff-1000 | 0 | pending |" in table  # timed, not yet restored


def _with_independent_intervals(data: dict, fd: tuple, kid: tuple, floor: tuple = (-1.0, 1.0),
                                per_method: dict | None = None) -> dict:
    """``data`` with realism against other real digits and bootstrap intervals (low, high) of DAVI minus
    every RED-Diff (``fd``, ``kid``; ``per_method``: {key: (fd, kid)} for RED-Diffs whose intervals differ)
    and of DAVI minus the real-digit floor (``floor``, both measures)."""
    iv = lambda lo, hi: {"estimate": (lo + hi) / 2, "low": lo, "high": hi, "level": 0.95, "resamples": 100}  # noqa: E731
    for r in data["sr4"].values():
        r.update(fd_independent=r["classifier_fd"], kid_independent=r["kid"], kid_std_independent=0.01)
    own = lambda k: (per_method or {}).get(k, (fd, kid))  # noqa: E731
    boot = {k: {"psnr": iv(-1, 1), "classifier_fd": iv(-1, 1), "kid": iv(-1, 1), "fd_independent": iv(*own(k)[0]),
                "kid_independent": iv(*own(k)[1]), "seeds": [3, 1]} for k in data["sr4"] if k.startswith("red_diff")}
    boot["real_digits"] = {"fd_independent": iv(*floor), "kid_independent": iv(*floor), "seeds": [3, 1]}
    return {**data, "bootstrap": {"sr4": boot}}


@pytest.mark.parametrize("fd, kid, expected, counted", [
    ((-2.0, -0.5), (-0.2, -0.01), ": met; 95% intervals of the differences exclude 0", "met on 1 of 1 tasks (sr4)"),
    ((-2.0, 0.5), (-0.2, -0.01), ": **tie** (95% intervals of the differences include 0", "a **tie**"),
    ((0.1, 2.0), (-0.2, -0.01), ": **not met**; 95% intervals of the differences exclude 0", "**missed** on sr4"),
])
def test_compare_realism_is_judged_by_the_intervals_against_other_real_digits(fd, kid, expected, counted):
    # the point estimates favour RED-Diff-1000 (FD 10 vs 8): with intervals, only the intervals decide
    data = _with_independent_intervals(_compare_data(rd1000=True), fd, kid)
    goals = compare.render_compare_goals(data)
    assert "(vs other real digits)" + expected in goals
    assert "DAVI as real as real digits" in goals  # the floor's interval includes 0
    assert counted in compare.render_compare_verdict(data)
    table = compare.render_compare_bootstrap(data)
    assert "| sr4 | DAVI - other real digits (the floor) | 3 vs 1 |  |  |  |" in table
    assert "FD vs other real digits" in table


BETTER, WORSE, EITHER = (-2.0, -0.5), (0.1, 2.0), (-1.0, 1.0)  # intervals of DAVI minus a RED-Diff


@pytest.mark.parametrize("per_method, verdict", [
    # every RED-Diff counts, not only the first (RED-Diff-1000) ...
    ({"red_diff_1000": (BETTER, BETTER), "red_diff_100": (WORSE, BETTER)}, ": **not met**; 95% intervals"),
    ({"red_diff_1000": (BETTER, BETTER), "red_diff_100": (EITHER, BETTER)}, ": **tie** (95% intervals"),
    ({"red_diff_1000": (WORSE, BETTER), "red_diff_100": (BETTER, BETTER)}, ": **not met**; 95% intervals"),
    # ... and KID counts as much as FD
    ({"red_diff_1000": (BETTER, WORSE), "red_diff_100": (BETTER, BETTER)}, ": **not met**; 95% intervals"),
    ({"red_diff_1000": (BETTER, BETTER), "red_diff_100": (BETTER, WORSE)}, ": **not met**; 95% intervals"),
    ({"red_diff_1000": (BETTER, EITHER), "red_diff_100": (BETTER, BETTER)}, ": **tie** (95% intervals"),
    ({"red_diff_1000": (BETTER, BETTER), "red_diff_100": (BETTER, BETTER)}, ": met; 95% intervals"),
])
def test_compare_realism_needs_fd_and_kid_better_than_every_red_diff(per_method, verdict):
    data = _with_independent_intervals(_compare_data(rd1000=True), BETTER, BETTER, per_method=per_method)
    assert "(vs other real digits)" + verdict in compare.render_compare_goals(data)
    counted = {": met;": "met on 1 of 1 tasks (sr4)", ": **not met**": "**missed** on sr4", ": **tie**": "a **tie**"}
    assert next(v for k, v in counted.items() if verdict.startswith(k)) in compare.render_compare_verdict(data)


@pytest.mark.parametrize("fd, kid, word", [(BETTER, BETTER, "DAVI more real"), (BETTER, WORSE, "DAVI less real"),
                                           (WORSE, BETTER, "DAVI less real"), (BETTER, EITHER, "tie"),
                                           (EITHER, BETTER, "tie")])
def test_headline_verdict_reads_fd_and_kid_of_its_own_row(fd, kid, word):
    # RED-Diff-1000 gets the intervals under test; RED-Diff-100 the opposite, so a row reading another's fails
    other = {BETTER: WORSE, WORSE: BETTER, EITHER: BETTER}
    data = _with_independent_intervals(_compare_data(rd1000=True), BETTER, BETTER,
                                       per_method={"red_diff_1000": (fd, kid), "red_diff_100": (other[fd], other[kid])})
    row = next(line for line in compare.render_headline(data).splitlines() if "| RED-Diff-1000 |" in line)
    assert f"| {word} (FD {sum(fd) / 2:+.2f}, [{fd[0]:+.2f}, {fd[1]:+.2f}]) |" in row


def test_compare_realism_says_nothing_of_the_floor_when_davi_is_measurably_above_it():
    data = _with_independent_intervals(_compare_data(rd1000=True), (-2.0, 0.5), (-0.1, 0.1), floor=(0.5, 2.0))
    assert "**tie**" in compare.render_compare_goals(data) and "as real as real digits" not in compare.render_compare_goals(data)


def test_compare_tie_with_a_red_diff_pending_stays_a_tie_and_names_what_is_pending():
    data = _with_independent_intervals(_compare_data(rd1000=False), (-2.0, 0.5), (-0.2, -0.01))
    assert "(RED-Diff-1000 pending)" in compare.render_compare_goals(data)
    assert "a **tie** (no difference the test digits resolve) on sr4" in compare.render_compare_verdict(data)


def test_headline_gives_each_task_davi_and_both_red_diffs_with_verdicts_and_speed():
    data = _with_independent_intervals(_compare_data(rd1000=True), (-2.0, -0.5), (-0.2, -0.01))
    data["sr4"]["real_digits"] = {"fd_independent": 4.5, "kid_independent": 0.0}
    table = compare.render_headline(data)
    assert "| SR x4 | DAVI | 20.00 | 10.00 | as real as real digits (their own FD: 4.50) | 0.01 |" in table
    assert "| SR x4 | RED-Diff-100 | 19.50 | 12.00 | DAVI more real (FD -1.25, [-2.00, -0.50]) | 0.4 (40x DAVI's) |" in table
    assert "| SR x4 | RED-Diff-1000 | 20.50 | 8.00 | DAVI more real" in table and "6 (600x DAVI's)" in table
    tie = compare.render_headline(_with_independent_intervals(_compare_data(rd1000=True), (-2.0, 0.5), (-0.2, 0.1)))
    assert "| tie (FD -0.75, [-2.00, +0.50]) |" in tie
    pending = compare.render_headline(_compare_data(rd1000=False))  # no intervals, RED-Diff-1000 only timed
    assert "| SR x4 | RED-Diff-1000 | pending |  |  | 6 (600x DAVI's) |" in pending
    assert "10.00 (vs the measured digits)" in pending  # older results: FD against the measured digits, said so
