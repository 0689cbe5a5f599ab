"""The README's result tables are the ones their JSONs in benchmarks/results/ render to."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import readme_tables as rt

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_their_results():
    assert rt.check() == [], "run: python benchmarks/readme_tables.py"


def test_check_names_a_table_edited_in_the_readme(tmp_path):
    readme = tmp_path / "README.md"
    text = rt.README.read_text()
    row = "| sr4 | davi | 250 | 20.61 |"
    assert row in text
    readme.write_text(text.replace(row, "| sr4 | davi | 250 | 20.71 |"))
    assert rt.check(readme) == ["tasks"]
    assert rt.main(["--check", "--readme", str(readme)]) == 1
    # rewriting restores it, and only the marked region changed
    assert rt.main(["--readme", str(readme)]) == 0
    assert readme.read_text() == text


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
    readme = tmp_path / "README.md"
    readme.write_text(rt.README.read_text().replace("<!-- /table:compare -->", ""))
    with pytest.raises(SystemExit, match="'compare' has no .*markers"):
        rt.check(readme)
    results = tmp_path / "results"
    results.mkdir()
    with pytest.raises(SystemExit, match=r"results file .*\.json is missing"):
        rt.check(rt.README, results)


@pytest.mark.parametrize("name, render", [
    ("tasks", rt.render_tasks), ("train_cost", rt.render_train_cost),
    ("compare", rt.render_compare_md),
    ("classifier", rt.render_classifier)])
def test_results_markdown_is_rendered_from_its_json(name, render):
    data = json.loads((rt.RESULTS / f"{name}.json").read_text())
    assert rt.results_markdown(data, render) == (rt.RESULTS / f"{name}.md").read_text()


def test_publish_writes_json_and_markdown_that_agree(tmp_path, capsys):
    data = {"command": "python benchmarks/x.py", "head": "Settings.", "rows": [
        {"what": "a", "seconds": 0.12345}, {"what": "b", "seconds": 2.0, "ratio": 1.5}]}
    rt.publish(tmp_path / "x.json", data, rt.render_train_cost)
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
    text = rt.render_posterior({"rows": rows})
    assert "| Gaussian: posterior mean within 5% | met on 2 of 3 (4.0%-20.0%) | **not met** on any of 1 (30.0%) |" in text
    assert "| Gaussian: trace variance ratio in [0.5, 2] | met on 1 of 3 (0.40-2.50) |" in text
    assert "| Gaussian: top-5 eigen-direction variance ratios in [0.5, 2] (smallest ratio shown) | met on 1 of 3" in text
    assert "Monte-Carlo floor) | 1.0% |" in text
    assert "mixture: mode weights within 0.1 |  |  |" in text  # no mixture rows: nothing claimed

def test_tables_in_the_results_page_are_checked_too(tmp_path, monkeypatch):
    page = tmp_path / "results.md"
    text = rt.RESULTS_PAGE.read_text()
    assert "ood_shifts" not in rt.check()
    row = next(line for line in text.splitlines() if line.startswith("| sr4/none |"))
    page.write_text(text.replace(row, row.replace("| sr4/none |", "| sr4/none | 0.00 |", 1)))
    monkeypatch.setattr(rt, "RESULTS_PAGE", page)
    assert rt.check() == ["ood_shifts"]
    page.write_text(text.replace("<!-- /table:ood_shifts -->", ""))
    with pytest.raises(SystemExit, match="'ood_shifts' has no .*markers"):
        rt.check()


def _compare_data(rd1000: bool):
    row = lambda psnr, fd, kid, seeds=1: {"psnr": psnr, "ssim": 0.9, "classifier_fd": fd, "kid": kid,  # noqa: E731
                                          "kid_std": 0.01, "seeds": seeds}
    sr4 = {"davi": row(20.0, 10.0, 0.10, 3), "red_diff_100": row(19.5, 12.0, 0.20)}
    if rd1000:
        sr4["red_diff_1000"] = row(20.5, 8.0, 0.05)
    return {"seeds": [0, 1, 2], "images": 200, "sr4": sr4,
            "timing": {"sr4": {"davi": 0.01, "red_diff_1000": 6.0, "red_diff_100": 0.4}}}


def test_compare_goals_wait_for_every_red_diff_before_a_pass_but_not_before_a_miss():
    partial = rt.render_compare_goals(_compare_data(rd1000=False))
    assert "KID 0.100 vs 0.200: met so far (RED-Diff-1000 pending)" in partial
    assert "600x: met" in partial and "40x: **not met**" in partial
    verdict = rt.render_compare_verdict(_compare_data(rd1000=False))
    assert "better realism (FD and KID) than every RED-Diff setting: met on 0 of 1 tasks, pending on sr4" in verdict
    full = rt.render_compare_goals(_compare_data(rd1000=True))
    assert "FD 10.00 vs 8.00, KID 0.100 vs 0.050: **not met**" in full and "-0.50 dB: met" in full
    status = rt.render_compare_status(_compare_data(rd1000=False))
    assert status.startswith("RED-Diff-1000 0 on sr4; RED-Diff-100 1 on sr4 (seeds of 3, 200 test images each")
    table = rt.render_compare(_compare_data(rd1000=False))
    assert "| sr4 | RED-Diff-1000 | 0 | pending |" in table  # timed, not yet restored


def _with_independent_intervals(data: dict, fd: tuple, kid: tuple, floor: tuple = (-1.0, 1.0)) -> dict:
    """``data`` with realism against other real digits and bootstrap intervals (low, high) of DAVI minus
    every RED-Diff (``fd``, ``kid``) and of DAVI minus the real-digit floor (``floor``, both measures)."""
    iv = lambda lo, hi: {"estimate": (lo + hi) / 2, "low": lo, "high": hi, "level": 0.95, "resamples": 100}  # noqa: E731
    for r in data["sr4"].values():
        r.update(fd_independent=r["classifier_fd"], kid_independent=r["kid"], kid_std_independent=0.01)
    boot = {k: {"psnr": iv(-1, 1), "classifier_fd": iv(-1, 1), "kid": iv(-1, 1), "fd_independent": iv(*fd),
                "kid_independent": iv(*kid), "seeds": [3, 1]} for k in data["sr4"] if k.startswith("red_diff")}
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
    goals = rt.render_compare_goals(data)
    assert "(vs other real digits)" + expected in goals
    assert "DAVI as real as real digits" in goals  # the floor's interval includes 0
    assert counted in rt.render_compare_verdict(data)
    table = rt.render_compare_bootstrap(data)
    assert "| sr4 | DAVI - other real digits (the floor) | 3 vs 1 |  |  |  |" in table
    assert "FD vs other real digits" in table


def test_compare_realism_says_nothing_of_the_floor_when_davi_is_measurably_above_it():
    data = _with_independent_intervals(_compare_data(rd1000=True), (-2.0, 0.5), (-0.1, 0.1), floor=(0.5, 2.0))
    assert "**tie**" in rt.render_compare_goals(data) and "as real as real digits" not in rt.render_compare_goals(data)


def test_compare_tie_with_a_red_diff_pending_stays_a_tie_and_names_what_is_pending():
    data = _with_independent_intervals(_compare_data(rd1000=False), (-2.0, 0.5), (-0.2, -0.01))
    assert "(RED-Diff-1000 pending)" in rt.render_compare_goals(data)
    assert "a **tie** (no difference the test digits resolve) on sr4" in rt.render_compare_verdict(data)
