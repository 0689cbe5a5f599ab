"""Configuration at the edge: the one place a :class:`davi.config.Config` becomes objects.

The library's classes take plain arguments (``RedDiff(prior, operator, steps=100, lr=0.1)``,
``DiffusionPrior.from_pretrained(path)``, ``SuperResolution(sigma_y, resolution, channels, scale)``);
a YAML run, the benchmarks and the command line turn their config sections into those arguments
here, so a config key at fault is still named in a one-line :class:`~davi.config.ConfigError`.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from davi.config import Config, ConfigError, PriorConfig, RedDiffConfig


def operator_from_config(cfg: Config):
    """The measurement operator of a run: ``cfg.operator`` for ``cfg.data``'s image size and channels."""
    from davi.operators import build_operator

    return build_operator(cfg.operator, cfg.data.resolution, cfg.data.channels)


def run_operator(cfg: Config):
    """(the operator a DAVI run's card names, the run's OperatorFamily or None): ``cfg.operator``; for a family,
    one member drawn from seed 0 (what load_export builds; a family export's restores name their own)."""
    import torch

    from davi.operators.family import family_from_config

    family = family_from_config(cfg.operator, cfg.data.resolution, cfg.data.channels)
    if family is None:
        return operator_from_config(cfg), None
    return family.draw(torch.Generator().manual_seed(0)), family


def prior_from_config(cfg: Config | PriorConfig):
    """The frozen diffusion prior ``prior.path`` names (a folder, ``bundled:NAME`` or a hub id)."""
    from davi.models.prior import DiffusionPrior

    section = cfg.prior if isinstance(cfg, Config) else cfg
    return DiffusionPrior.from_pretrained(section.path)


def red_diff_settings(section: RedDiffConfig | dict[str, Any] | None = None, **overrides) -> dict[str, Any]:
    """:class:`davi.solvers.red_diff.RedDiff`'s keyword arguments from a ``red_diff:`` section (or its
    dict, e.g. an export card's ``config.red_diff``), with ``overrides`` under the section's names
    (``num_steps``, ``lr``, ``lam``, ...) on top."""
    values = asdict(section) if is_dataclass(section) else dict(section or {})
    values = {**asdict(RedDiffConfig()), **values, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(values) - set(asdict(RedDiffConfig())))
    if unknown:
        raise ConfigError(f"red_diff.{unknown[0]}: unknown key")
    if not isinstance(values["num_steps"], int) or values["num_steps"] < 1:
        raise ConfigError(f"red_diff.num_steps must be >= 1, got {values['num_steps']!r}")
    if values["init"] not in ("pinv", "lift"):
        raise ConfigError(f"red_diff.init must be 'pinv' or 'lift', got {values['init']!r}")
    return {"steps": values["num_steps"], "lr": values["lr"], "lam": values["lam"], "init": values["init"],
            "obs_weight": values["obs_weight"], "betas": (values["adam_beta1"], values["adam_beta2"])}


def red_diff_from_config(prior, operator, section: RedDiffConfig | dict[str, Any] | None = None, **overrides):
    """``RedDiff(prior, operator, **red_diff_settings(section, **overrides))``."""
    from davi.solvers.red_diff import RedDiff

    return RedDiff(prior, operator, **red_diff_settings(section, **overrides))
