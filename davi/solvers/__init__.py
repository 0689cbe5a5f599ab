"""Solvers: restoring methods (lift, DAVI one step, RED-Diff), the consistency check and refinement."""
