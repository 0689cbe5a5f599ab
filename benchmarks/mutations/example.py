"""Mutations of the measurement operators (a template for the other areas)."""

from benchmarks.mutate import Mutation

MUTATIONS = [
    Mutation("sr_adjoint_missing_scale", "davi/operators/super_resolution.py",
             "return self._nearest(y) / self.scale**2", "return self._nearest(y)",
             "tests/test_operators.py", "A^T of average pooling is nearest upsampling divided by s^2"),
]
