"""Mutations of the RED-Diff anchors (davi/data/anchors.py) and the anchor regression of recipe unpaired."""

from benchmarks.mutate import Mutation

A = "davi/data/anchors.py"
T = "tests/test_anchors.py"

MUTATIONS = [
    Mutation("anchor_regression_sign_flipped", "davi/training/recipes/unpaired.py",
             "loss = loss + uc.lambda_anchor * l_anchor", "loss = loss - uc.lambda_anchor * l_anchor",
             "tests/test_unpaired.py::test_anchor_regression_pulls_the_mapper_towards_the_anchor",
             "the anchor regression must pull x_hat towards the anchor, not push it away"),
    Mutation("anchors_all_zero", A,
             "anchor = solver(data.y[idx].to(device), seeds=idx).float().cpu()",
             "anchor = torch.zeros_like(solver(data.y[idx].to(device), seeds=idx).float().cpu())",
             f"{T}::test_each_anchor_is_red_diff_of_its_measurement_with_its_index_as_seed",
             "an anchor is RED-Diff's solution of its measurement"),
    Mutation("anchor_seeds_by_batch_position", A,
             "anchor = solver(data.y[idx].to(device), seeds=idx).float().cpu()",
             "anchor = solver(data.y[idx].to(device), seeds=list(range(len(idx)))).float().cpu()",
             f"{T}::test_each_anchor_is_red_diff_of_its_measurement_with_its_index_as_seed "
             f"{T}::test_anchors_do_not_depend_on_the_batch_size",
             "measurement i gets seed i, so the anchors do not depend on the batch size"),
    Mutation("anchors_overwrite_a_foreign_folder", A,
             "elif folder.exists() and any(p.name != MANIFEST for p in folder.iterdir()):",
             "elif False:",
             f"{T}::test_a_folder_that_is_not_an_anchor_folder_is_never_written",
             "a folder holding other files is refused, never written to"),
    Mutation("anchors_overwrite_a_foreign_manifest", A,
             "            read_manifest(folder)  # another tool's manifest.json is not ours to overwrite\n",
             "            pass\n",
             f"{T}::test_a_folder_that_is_not_an_anchor_folder_is_never_written",
             "another tool's manifest.json is refused, not replaced"),
    Mutation("anchor_shard_index_unchecked", A,
             'if "anchor" not in t or t.get("index") is None or t["index"].tolist() != want:',
             'if "anchor" not in t:',
             f"{T}::test_a_damaged_folder_is_a_one_line_error_naming_the_file",
             "a shard holding other measurements' anchors (moved, swapped) is refused"),
    Mutation("anchor_unreadable_shard_traceback", A,
             "except (SafetensorError, OSError) as e:\n            raise AnchorError",
             "except KeyError as e:\n            raise AnchorError",
             f"{T}::test_a_damaged_folder_is_a_one_line_error_naming_the_file",
             "an unreadable shard is a one-line error naming it, not a safetensors traceback"),
    Mutation("anchor_manifest_invalid_json_traceback", A,
             "except json.JSONDecodeError as e:\n        raise AnchorError",
             "except KeyError as e:\n        raise AnchorError",
             f"{T}::test_a_damaged_folder_is_a_one_line_error_naming_the_file",
             "an invalid manifest.json is a one-line error naming it"),
    Mutation("anchor_red_diff_setting_unchecked", A,
             'for key in ("operator", "prior", "red_diff", "shard_size"):',
             'for key in ("operator", "prior", "shard_size"):',
             "tests/test_unpaired.py::test_anchors_resume_and_refuse_another_set",
             "anchors computed with other RED-Diff settings are refused"),
]
