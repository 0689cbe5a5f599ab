"""Mutations of the measurement operators."""

from benchmarks.mutate import Mutation

SR = "davi/operators/super_resolution.py"

MUTATIONS = [
    Mutation("sr_adjoint_missing_scale", SR,
             "return self._nearest(y) / self.scale**2", "return self._nearest(y)",
             "tests/test_operators.py", "A^T of average pooling is nearest upsampling divided by s^2"),
    Mutation("sr_pinv_scaled_like_the_adjoint", SR,
             "\"measurement\")\n        return self._nearest(y)\n", "\"measurement\")\n        return self._nearest(y) / self.scale**2\n",
             "tests/test_refine.py::test_refinement_starts_from_the_projection_onto_the_measurement",
             "A^+ of average pooling is nearest upsampling (A A^+ = I): refinement's start fits y exactly"),
]
