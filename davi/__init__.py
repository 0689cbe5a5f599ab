"""DAVI: one-step image restoration with an amortized posterior sampler trained against a diffusion prior.

    import davi
    restorer = davi.Restorer.from_pretrained("davi/assets/mappers/sr4_sampler")
    x = davi.load_images("mnist32:test", limit=4)
    y = restorer.operator.measure(x)
    out = restorer(y, samples=8, seed=0)      # out.samples, out.mean, out.std, out.consistency, out.flagged

Public names (imported on first use, so ``import davi`` stays cheap): :class:`Restorer`,
:class:`Restoration`, :class:`ExportCard`, :mod:`davi.operators`, :class:`DiffusionPrior`,
:class:`RedDiff`, :func:`train`, :func:`load_config`, :func:`load_images`, :func:`read_image`,
:func:`write_image`, :func:`export_checkpoint`, and the one-line errors (:class:`ConfigError`,
:class:`DataError`, :class:`ExportError`, :class:`OperatorError`, :class:`PriorError`,
:class:`TrainingError`). See docs/api.md.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from davi import _torchvision_compat

# Cheap (no torch import): makes the next `import torchvision` work beside a CPU torch.
_torchvision_compat.install_import_hook()

__version__ = "0.1.0"

_PUBLIC = {  # name -> module that defines it
    "Restorer": "davi.restorer",
    "Restoration": "davi.restorer",
    "ExportCard": "davi.io.card",
    "ExportError": "davi.io.card",
    "DiffusionPrior": "davi.models.prior",
    "PriorError": "davi.models.prior",
    "Mapper": "davi.models.mapper",
    "RedDiff": "davi.solvers.red_diff",
    "OperatorError": "davi.operators",
    "Config": "davi.config",
    "ConfigError": "davi.config",
    "load_config": "davi.config",
    "DataError": "davi.data.datasets",
    "TrainingError": "davi.training.checkpoints",
    "load_images": "davi.data.inputs",
    "read_image": "davi.io.images",
    "write_image": "davi.io.images",
    "export_checkpoint": "davi.io.export",
}
_SUBPACKAGES = ("operators", "models", "solvers", "training", "data", "eval", "io", "analytic", "builders", "config")

__all__ = sorted([*_PUBLIC, "train", "operators", "__version__"])

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from davi.config import Config, ConfigError, load_config  # noqa: F401
    from davi.data.datasets import DataError  # noqa: F401
    from davi.data.inputs import load_images  # noqa: F401
    from davi.io.card import ExportCard, ExportError  # noqa: F401
    from davi.io.export import export_checkpoint  # noqa: F401
    from davi.io.images import read_image, write_image  # noqa: F401
    from davi.models.mapper import Mapper  # noqa: F401
    from davi.models.prior import DiffusionPrior, PriorError  # noqa: F401
    from davi.operators import OperatorError  # noqa: F401
    from davi.restorer import Restoration, Restorer  # noqa: F401
    from davi.solvers.red_diff import RedDiff  # noqa: F401
    from davi.training.checkpoints import TrainingError  # noqa: F401


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"davi.{name}")
    else:
        raise AttributeError(f"module 'davi' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})


def train(config: str | Path, overrides: list[str] | None = None, resume: str | None = None) -> Path:
    """Train what a YAML config describes (``job: prior | davi | unpaired``) and return its output folder.

    ``overrides`` are ``key.sub=value`` strings (``["train.max_steps=500"]``); ``resume`` is ``"latest"``
    or a ``checkpoint-N`` folder. A DAVI run's export is ``<returned folder>/export``, ready for
    :meth:`Restorer.from_pretrained`. One process here; ``accelerate launch train.py --config ...``
    runs the same on several GPUs or processes.
    """
    from davi.config import load_config
    from davi.training.recipes import train_job

    return Path(train_job(load_config(config, overrides), resume=resume))
