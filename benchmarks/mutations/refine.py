"""Mutations of refinement (davi/solvers/methods.py: Refiner, RefinedDaviMethod; davi/restorer.py's refine)."""

from benchmarks.mutate import Mutation

METHODS = "davi/solvers/methods.py"
START = "tests/test_refine.py::test_refinement_starts_from_the_projection_onto_the_measurement"
AUTO = "tests/test_refine.py::test_auto_refines_only_the_flagged_images"
ALL = "tests/test_refine.py::test_refining_improves_consistency_within_the_network_budget"
WHICH = "stat > self.threshold if self.threshold is not None else torch.ones_like(stat, dtype=torch.bool)"

MUTATIONS = [
    Mutation("refine_projection_skipped", METHODS, "return x_hat + op.pinv(y - op(x_hat))", "return x_hat",
             START, "the warm start is x + A^+(y - A x), on the measurement"),
    Mutation("refine_start_not_used", METHODS, "x0 = self.start(samples[k, idx].to(y), y[idx])",
             "x0 = samples[k, idx].to(y)", START, "RED-Diff begins at the projected start"),
    Mutation("refine_project_flag_inverted", METHODS, "if not (self.project and op.has_pinv):",
             "if self.project and op.has_pinv:", START, "project=True projects, project=False does not"),
    Mutation("refine_auto_refines_everything", METHODS, WHICH, "torch.ones_like(stat, dtype=torch.bool)",
             AUTO, "auto refines only the images above the threshold"),
    Mutation("refine_refines_nothing", METHODS, WHICH, "torch.zeros_like(stat, dtype=torch.bool)",
             f"{ALL} {AUTO}", "refine K refines every image, auto the flagged ones"),
    Mutation("refine_threshold_compare_flipped", METHODS, "stat > self.threshold if", "stat < self.threshold if",
             AUTO, "flagged = above the threshold"),
    Mutation("refine_k_uses_the_threshold", "davi/restorer.py",
             "return RefinedDaviMethod(self.one_step_method(), refiner, threshold if steps == \"auto\" else None)",
             "return RefinedDaviMethod(self.one_step_method(), refiner, threshold)",
             "tests/test_refine.py::test_restorer_refine_k_refines_every_image_even_with_a_threshold",
             "refine=K refines every image, whatever the card's threshold"),
]
