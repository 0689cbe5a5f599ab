"""Operators by name: the registry, import-path operators (opt-in), and rebuilding an operator from its params."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from davi.operators.base import (
    Operator,
    OperatorError,
    _first_line,
    _is_int,
    _is_number,
)

OPERATORS: dict[str, type[Operator]] = {}


def register_operator(name: str) -> Callable[[type[Operator]], type[Operator]]:
    """Class decorator: make an Operator subclass available as ``operator.name: <name>``."""

    def register(cls: type[Operator]) -> type[Operator]:
        if not (isinstance(cls, type) and issubclass(cls, Operator)):
            raise TypeError(f"register_operator({name!r}): {cls!r} is not an Operator subclass")
        if ":" in name or not name:
            raise ValueError(f"register_operator({name!r}): a name is non-empty and has no ':' (import paths do)")
        if name in OPERATORS:
            raise ValueError(f"register_operator({name!r}): already taken by {OPERATORS[name].__qualname__}")
        cls.name = name
        OPERATORS[name] = cls
        return cls

    return register




def operator_class(name: str, trust_remote_code: bool = True) -> type[Operator]:
    """The class ``operator.name`` names: a registered name or a ``"module:Class"`` import path.

    Importing a module runs its code. A config the user wrote names its own code (trusted by
    default); a downloaded export card's name is refused unless ``trust_remote_code`` is set.
    """
    if isinstance(name, str) and name in OPERATORS:
        return OPERATORS[name]
    if not isinstance(name, str) or ":" not in name:
        raise OperatorError(
            f"operator.name: {name!r} is not one of {', '.join(OPERATORS)} "
            f"(or a 'module:Class' import path to an Operator subclass)"
        )
    if not trust_remote_code:
        raise OperatorError(
            f"operator.name: {name!r} is code outside davi: loading it would import and run module "
            f"'{name.partition(':')[0]}'; pass trust_remote_code=True (CLI: --trust-remote-code) if you trust it"
        )
    module_name, _, qualname = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # not found, or any error raised while running the user's module
        raise OperatorError(f"operator.name: cannot import '{module_name}' ({type(e).__name__}: {_first_line(e)})") from None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise OperatorError(f"operator.name: module '{module_name}' has no '{qualname}'")
    if not (isinstance(obj, type) and issubclass(obj, Operator)) or obj is Operator:
        raise OperatorError(f"operator.name: {name} is not a subclass of davi.operators.Operator")
    return obj


def build_operator(cfg: Any, resolution: int, channels: int, trust_remote_code: bool = True) -> Operator:
    """The operator ``cfg`` (an ``OperatorConfig``) names, for ``channels`` x ``resolution`` x ``resolution`` images
    (``trust_remote_code``: see :func:`operator_class`)."""
    cls = operator_class(cfg.name, trust_remote_code)
    if not _is_int(resolution) or resolution < 1:
        raise OperatorError(f"data.resolution: expected a positive integer, got {resolution!r}")
    if not _is_int(channels) or channels < 1:
        raise OperatorError(f"data.channels: expected a positive integer, got {channels!r}")
    if not _is_number(cfg.sigma_y) or cfg.sigma_y < 0:
        raise OperatorError(f"operator.sigma_y: expected a finite number >= 0, got {cfg.sigma_y!r}")
    for key in sorted({k for c in OPERATORS.values() for k in c.data_files} - set(cls.data_files)):
        if getattr(cfg, key, ""):
            readers = ", ".join(n for n, c in OPERATORS.items() if key in c.data_files)
            raise OperatorError(f"operator.{key}: operator '{cls.name}' reads no {key} (it is read by: {readers})")
    return cls.from_config(cfg, resolution, channels)


class _MissingParam(AttributeError):
    """A key absent from a params dict (an AttributeError, so ``getattr(cfg, key, default)`` works)."""


class _ParamsAsConfig:
    """An operator's params() dict read like an ``OperatorConfig``: its keys are the config's keys."""

    def __init__(self, params: dict):
        self._params = params

    def __getattr__(self, key: str) -> Any:
        try:
            return self._params[key]
        except KeyError:
            raise _MissingParam(key) from None


# Version-1 export cards list these ten keys for every operator; rebuilt from such a card, an
# operator ignores those it does not use.
_VERSION1_KEYS = frozenset(
    ("name", "sigma_y", "kernel_size", "kernel_std", "scale", "box_size", "drop_fraction", "mask_seed",
     "resolution", "channels")
)


def operator_from_params(params: dict, trust_remote_code: bool = False) -> Operator:
    """Inverse of :meth:`Operator.params` (e.g. an export card's ``operator`` entry). A card may come from
    anywhere, so an import-path operator is refused unless ``trust_remote_code`` (see :func:`operator_class`)."""
    if not isinstance(params, dict):
        raise OperatorError(f"operator params: expected a mapping, got {type(params).__name__}")
    for key in ("name", "resolution", "channels"):
        if key not in params:
            raise OperatorError(f"operator params: missing key '{key}'")
    try:
        op = build_operator(_ParamsAsConfig(params), params["resolution"], params["channels"], trust_remote_code)
    except _MissingParam as e:
        raise OperatorError(f"operator params: missing key '{e.args[0]}'") from None
    valid = op.params()
    legacy = _VERSION1_KEYS if _VERSION1_KEYS <= set(params) else frozenset()
    unknown = sorted(set(params) - set(valid) - legacy)
    if unknown:
        raise OperatorError(f"operator params: unknown key '{unknown[0]}' (valid: {', '.join(valid)})")
    return op


# -- data files -------------------------------------------------------------------------------
