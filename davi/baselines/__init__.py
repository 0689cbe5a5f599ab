"""The field's baselines through deepinv (optional: ``pip install -e .[baselines]``).

DPS (Chung et al. 2023), DiffPIR (Zhu et al. 2023) and DDRM (Kawar et al. 2022), run by deepinv's own
implementations on davi's prior and operators, as davi Methods (``method(y, seeds, num_samples)``)::

    from davi.baselines import baseline_method
    method = baseline_method("diffpir", prior, operator)      # or DpsMethod / DiffPirMethod / DdrmMethod
    samples = method(y, seeds=[0, 1], num_samples=4)          # (4, 2, C, H, W), pixels in [-1, 1]

The adapters (:mod:`davi.baselines.adapters`: the prior as a deepinv denoiser, operators as deepinv
physics, the [-1, 1] <-> [0, 1] conversion) import deepinv; importing this package does not. Without
deepinv, using any of these names raises :class:`BaselineError` naming the extra.
"""

from __future__ import annotations

from davi.baselines._require import (
    DEEPINV_VERSION,
    INSTALL_HINT,
    BaselineError,
    require_deepinv,
)

_LAZY = {
    "DpsMethod": "methods", "DiffPirMethod": "methods", "DdrmMethod": "methods", "DeepinvMethod": "methods",
    "BASELINES": "methods", "baseline_method": "methods",
    "PriorDenoiser": "adapters", "as_physics": "adapters", "to_unit": "adapters", "from_unit": "adapters",
    "noise_std": "adapters", "BaselineUnsupported": "adapters",
}
NAMES = ("dps", "diffpir", "ddrm")  # the method names (davi restore --method), known without deepinv

__all__ = ["DEEPINV_VERSION", "INSTALL_HINT", "BaselineError", "require_deepinv", "NAMES", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'davi.baselines' has no attribute {name!r}")
    import importlib

    require_deepinv()
    return getattr(importlib.import_module(f"davi.baselines.{_LAZY[name]}"), name)
