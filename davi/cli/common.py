"""Shared CLI plumbing: known errors become one line on stderr and a non-zero exit; ``--device``/``--dtype`` names."""

from __future__ import annotations

import sys
from typing import Callable

EXIT_USAGE = 2


def known_errors() -> tuple[type[BaseException], ...]:
    from davi.config import ConfigError
    from davi.data.datasets import DataError
    from davi.io.export import ExportError
    from davi.io.model_card import ModelCardError
    from davi.models.prior import PriorError
    from davi.operators import OperatorError
    from davi.training.checkpoints import TrainingError

    return ConfigError, DataError, PriorError, TrainingError, OperatorError, ExportError, ModelCardError


def resolve_device(name: str = "auto"):
    """The torch device a ``--device`` flag names: ``auto`` is CUDA when there is one, else the CPU;
    a CUDA device where there is none is a one-line ConfigError, not a traceback later on."""
    import torch

    from davi.config import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device {name!r}: not a torch device ({str(e).splitlines()[0]})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here")
    return device


def resolve_dtype(name: str):
    """The torch dtype a ``--dtype`` flag names: fp32, bf16 or fp16."""
    import torch

    from davi.config import ConfigError

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in dtypes:
        raise ConfigError(f"--dtype {name!r}: not one of {', '.join(dtypes)}")
    return dtypes[name]


def run_cli(job: Callable[[], object]) -> int:
    try:
        job()
    except known_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
