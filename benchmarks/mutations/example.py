"""The template's mutation (the SR adjoint's scale) now lives in benchmarks/mutations/operators.py, the
operators' area file: copy that file's form for a new area (one module per area, each a ``MUTATIONS`` list)."""

MUTATIONS: list = []
