"""Shared CLI plumbing: known errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from typing import Callable

EXIT_USAGE = 2


def known_errors() -> tuple[type[BaseException], ...]:
    from davi.config import ConfigError
    from davi.data import DataError
    from davi.prior import PriorError
    from davi.trainer import TrainingError

    errors: list[type[BaseException]] = [ConfigError, DataError, PriorError, TrainingError]
    try:
        from davi.operators import OperatorError

        errors.append(OperatorError)
    except ImportError:
        pass
    try:
        from davi.export import ExportError

        errors.append(ExportError)
    except ImportError:
        pass
    return tuple(errors)


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
