"""Mutations of the comparison (benchmarks/compare.py): its bootstrap intervals, realism verdicts and options.
Its tests import the module and call its functions in-process."""

from benchmarks.mutate import Mutation

C = "benchmarks/compare.py"
RT = "tests/test_readme_tables.py"
VERDICT = f"{RT}::test_compare_realism_needs_fd_and_kid_better_than_every_red_diff"
HEADLINE = f"{RT}::test_headline_verdict_reads_fd_and_kid_of_its_own_row"
BOOT = "tests/test_compare.py::test_bootstrap_realism_intervals_are_against_the_independent_digits"
MAPPER = "tests/test_compare.py::test_mapper_option_is_checked_before_any_work"
JUDGED = 'intervals = [boot[k][m] for k in measured for m in ("fd_independent", "kid_independent")]'

MUTATIONS = [
    Mutation("compare_realism_first_red_diff_only", C, JUDGED,
             'intervals = [boot[k][m] for k in measured[:1] for m in ("fd_independent", "kid_independent")]',
             VERDICT, "DAVI must beat every RED-Diff setting, not the first one listed"),
    Mutation("compare_realism_fd_only", C, JUDGED,
             'intervals = [boot[k][m] for k in measured for m in ("fd_independent",)]',
             VERDICT, "realism is FD and KID"),
    Mutation("compare_realism_first_red_diff_fd_only", C, JUDGED,
             'intervals = [boot[k]["fd_independent"] for k in measured[:1]]',
             VERDICT, "the issue's bug: only the first RED-Diff and only FD"),
    Mutation("compare_realism_miss_needs_every_interval", C,
             'if any(i["low"] > 0 for i in intervals):\n        judgement = "not met"',
             'if all(i["low"] > 0 for i in intervals):\n        judgement = "not met"',
             VERDICT, "one interval showing DAVI worse is a miss"),
    Mutation("compare_kid_independent_against_measured", C,
             '"kid_independent": kid_ind[k].as_dict()', '"kid_independent": kid_i[k].as_dict()',
             BOOT, "KID against the independent digits, not the measured ones (realism alone)"),
    Mutation("compare_fd_independent_against_measured", C,
             '"fd_independent": fd_ind[k].as_dict()', '"fd_independent": fd_i[k].as_dict()',
             BOOT, "FD against the independent digits, not the measured ones"),
    Mutation("compare_floor_against_measured", C,
             'fd_ind, kid_ind = realism_differences(base, {**feats, "real_digits": floor[:, None]}, independent, resamples=n)',
             'fd_ind, kid_ind = realism_differences(base, {**feats, "real_digits": floor[:, None]}, measured, resamples=n)',
             BOOT, "the floor and the realism intervals are against the independent digits"),
    Mutation("compare_headline_kid_ignored", C,
             '"DAVI more real" if all(i["high"] < 0 for i in intervals)',
             '"DAVI more real" if intervals[0]["high"] < 0',
             HEADLINE, "the headline's 'more real' needs FD and KID"),
    Mutation("compare_headline_worse_needs_both", C,
             'else "DAVI less real" if any(i["low"] > 0 for i in intervals) else "tie")',
             'else "DAVI less real" if all(i["low"] > 0 for i in intervals) else "tie")',
             HEADLINE, "either measure showing DAVI worse makes it less real"),
    Mutation("compare_mapper_task_unchecked", C,
             "if task not in TASKS or not path:", "if not path:",
             MAPPER, "--mapper names one of the tasks"),
    Mutation("compare_mapper_folder_unchecked", C,
             'if not (Path(path) / "card.json").is_file():', "if False:",
             MAPPER, "--mapper's folder is checked before minutes of work"),
]
