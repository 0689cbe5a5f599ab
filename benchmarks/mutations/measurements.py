"""Mutations of the measurement sets (davi/data/measurements.py)."""

from benchmarks.mutate import Mutation

M = "davi/data/measurements.py"
T = "tests/test_measurements.py"

MUTATIONS = [
    Mutation("measurements_nan_accepted", M,
             "if not np.isfinite(stack).all():", "if False:",
             f"{T}::test_nan_or_inf_is_refused_naming_the_file",
             "a NaN or inf measurement would turn the whole training run into NaN"),
    Mutation("measurements_unreadable_npy_traceback", M,
             "except (OSError, ValueError) as e:\n            raise DataError(f\"{path}: not a readable .npy",
             "except KeyError as e:\n            raise DataError(f\"{path}: not a readable .npy",
             f"{T}::test_unreadable_npy_is_named",
             "an unreadable .npy is a one-line error naming it"),
    Mutation("measurements_non_numeric_accepted", M,
             "if not np.issubdtype(arr.dtype, np.number):", "if False:",
             f"{T}::test_unreadable_npy_is_named",
             "an array of strings is not a measurement"),
    Mutation("measurements_missing_folder_unnamed", M,
             "if not root.is_dir():", "if False:",
             f"{T}::test_empty_or_missing_folder",
             "a missing folder is said to be missing, not empty"),
    Mutation("measurements_limit_ignored", M,
             "    if uc.limit:\n        y = y[: uc.limit]", "    pass",
             f"{T}::test_stacks_subfolders_sorted_order_and_limit",
             "unpaired.limit keeps the first measurements of a folder"),
    Mutation("measurements_unsorted", M,
             "files = sorted(p for p in root.rglob(\"*\")", "files = list(p for p in root.rglob(\"*\")",
             f"{T}::test_stacks_subfolders_sorted_order_and_limit {T}::test_files_are_read_in_sorted_order_whatever_the_directory_order",
             "files are read in sorted order (the anchors' indices depend on it)"),
    Mutation("measurement_digest_ignores_values", M,
             "    h.update(y.detach().float().cpu().contiguous().numpy().tobytes())\n", "",
             f"{T}::test_digest_follows_the_measurements_and_the_operator",
             "anchors of another measurement set must not match this one's digest"),
]
