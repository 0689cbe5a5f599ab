"""The one place that imports deepinv, with the one-line error naming the extra when it is missing."""

from __future__ import annotations

DEEPINV_VERSION = "0.5.0"  # the version the adapters and tests were checked against (pyproject's pin)
INSTALL_HINT = "pip install -e .[baselines]"


class BaselineError(ImportError):
    """deepinv is missing (the message names the extra), or a baseline cannot run on this operator."""


def require_deepinv():
    """``import deepinv`` (after davi's torchvision shim: deepinv imports torchvision), or a one-line
    :class:`BaselineError` naming the ``baselines`` extra."""
    import davi._torchvision_compat as compat

    compat.install_import_hook()
    try:
        import deepinv
    except ImportError as e:
        raise BaselineError(f"the DPS / DiffPIR / DDRM baselines need deepinv {DEEPINV_VERSION}: {INSTALL_HINT} "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return deepinv
