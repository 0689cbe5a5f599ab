"""Named mutations, one module per area: each module defines ``MUTATIONS``, a list of
:class:`benchmarks.mutate.Mutation` (see benchmarks/mutate.py)."""
