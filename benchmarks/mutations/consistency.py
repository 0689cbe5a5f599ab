"""Mutations of the consistency statistic and its flag (davi/solvers/consistency.py, davi/restorer.py)."""

from benchmarks.mutate import Mutation

CONSISTENCY = "davi/solvers/consistency.py"
STAT = "tests/test_consistency.py::test_true_image_gives_about_one_and_a_wrong_image_much_more"

MUTATIONS = [
    Mutation("consistency_mask_ignored", CONSISTENCY, "mask = measured_mask(operator, y).expand_as(y)",
             "mask = torch.ones_like(y)", STAT, "only measured entries count (inpainting's hidden pixels do not)"),
    Mutation("consistency_not_normalised_by_sigma_y2", CONSISTENCY,
             "return res.flatten(1).pow(2).sum(1) / (m * operator.sigma_y ** 2)",
             "return res.flatten(1).pow(2).sum(1) / m", STAT, "r = ||A x - y||^2 / (M sigma_y^2): about 1 for the truth"),
    Mutation("consistency_noiseless_guard_dropped", CONSISTENCY,
             "if operator.sigma_y <= 0:\n        raise ConsistencyError(", "if operator.sigma_y < 0:\n        raise ConsistencyError(",
             "tests/test_consistency.py::test_noiseless_operator_has_no_statistic", "sigma_y = 0: no noise scale"),
    Mutation("consistency_report_flag_inverted", CONSISTENCY,
             "flagged = statistic > threshold if threshold is not None else None",
             "flagged = statistic < threshold if threshold is not None else None",
             "tests/test_consistency.py::test_report_rows_and_summary", "flagged = above the threshold"),
    Mutation("consistency_restorer_flag_inverted", "davi/restorer.py", "flagged = one_step > threshold if",
             "flagged = one_step < threshold if",
             "tests/test_refine.py::test_restorer_refine_k_refines_every_image_even_with_a_threshold",
             "Restoration.flagged: the Restorer flags the one-step answers above the threshold"),
    Mutation("consistency_threshold_wrong_quantile", CONSISTENCY, "\"threshold\": float(q[-1]),",
             "\"threshold\": float(q[0]),", "tests/test_consistency.py::test_calibration_is_written_to_the_card_and_read_back",
             "the threshold is the requested quantile (0.99), not the median"),
    Mutation("calibrate_script_drops_the_entry", "scripts/calibrate_consistency.py",
             "raw = {**json.loads((export / \"card.json\").read_text()), \"consistency\": entry}",
             "raw = json.loads((export / \"card.json\").read_text())",
             "tests/test_calibrate_consistency.py::test_calibration_rewrites_the_card_and_leaves_the_weights",
             "the script writes the calibrated entry into card.json"),
]
