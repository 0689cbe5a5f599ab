"""An export's ``card.json`` as a typed, read-only record (:class:`ExportCard`).

The card says what a user of the weights needs besides them: the task and its operator's
settings, the measurement noise ``sigma_y``, the bridge's ``h``, the image size, the prior it was
trained against, the objective (``paired``: a point estimator; ``sampler``: posterior samples), the
calibrated consistency threshold, and the training config. ``ExportCard.from_dict`` checks the
keys a restore needs and names the one at fault; keys it does not know are kept in ``extra``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CARD = "card.json"
STATISTIC = "measurement_residual"  # the consistency statistic a threshold is calibrated on (davi.solvers.consistency)


class ExportError(ValueError):
    """A mapper export that cannot be used (the message names the file and the problem)."""


@dataclass(frozen=True)
class PriorRef:
    """The diffusion prior an export was trained against: a folder, ``bundled:NAME`` or a hub id, and
    the sha256 (16 hex digits) of its safetensors."""

    identity: str
    digest: str = ""


def _number(card: dict, key: str, where: str, kind: type = float) -> Any:
    value = card.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise ExportError(f"{where}: key '{key}' must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


@dataclass(frozen=True)
class ExportCard:
    """What an export folder's ``card.json`` says about its mapper.

    ``operator`` holds the operator's settings (``Operator.params()``; rebuild it with
    ``davi.operators.operator_from_params``); ``threshold`` is the calibrated consistency threshold
    (None when the card has none); ``objective`` is ``paired`` (a point estimator: the spread of its
    samples is not a posterior std) or ``sampler`` (posterior samples).
    """

    task: str
    operator: dict[str, Any]
    sigma_y: float
    h: float
    resolution: int
    channels: int
    prior: PriorRef
    tanh: bool = False
    noise_channels: int = 0
    steps: int = 0
    objective: str = "paired"
    consistency: dict[str, Any] | None = None
    shipped_dtype: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # the keys the card was read with: to_dict() writes a default only where the card had it
    present: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def from_dict(cls, card: dict[str, Any], where: str = CARD) -> "ExportCard":
        """The typed card of a parsed ``card.json``; ExportError naming ``where`` and the key at fault."""
        if not isinstance(card, dict):
            raise ExportError(f"{where}: expected a JSON object, got {type(card).__name__}")
        for key in ("operator", "resolution", "channels", "h"):
            if key not in card:
                raise ExportError(f"{where}: missing key '{key}'")
        if not isinstance(card["operator"], dict) or "name" not in card["operator"]:
            raise ExportError(f"{where}: key 'operator' must be an object with a 'name'")
        prior = card.get("prior") or {}
        known = {f.name for f in fields(cls)} - {"extra", "present"}
        return cls(
            task=str(card.get("task", card["operator"]["name"])),
            operator=dict(card["operator"]),
            sigma_y=float(card.get("sigma_y", card["operator"].get("sigma_y", 0.0))),
            h=_number(card, "h", where),
            resolution=_number(card, "resolution", where, int),
            channels=_number(card, "channels", where, int),
            prior=PriorRef(str(prior.get("identity", "")), str(prior.get("digest", ""))),
            tanh=bool(card.get("tanh", False)),
            noise_channels=_number(card, "noise_channels", where, int) if "noise_channels" in card else 0,
            steps=_number(card, "steps", where, int) if "steps" in card else 0,
            # cards written before the key existed: the training config says which objective it was
            objective=str(card.get("objective") or (card.get("config") or {}).get("davi", {}).get("objective")
                          or "paired"),
            consistency=card.get("consistency") or None,
            shipped_dtype=card.get("shipped_dtype"),
            config=dict(card.get("config") or {}),
            extra={k: v for k, v in card.items() if k not in known},
            present=frozenset(card),
        )

    @classmethod
    def coerce(cls, card: "ExportCard | dict[str, Any]", where: str = CARD) -> "ExportCard":
        """``card`` as an ExportCard: itself, or a parsed card.json checked by :meth:`from_dict`."""
        return card if isinstance(card, cls) else cls.from_dict(card, where)

    @classmethod
    def read(cls, export_dir: str | Path) -> "ExportCard":
        """The card of an export folder (see :func:`read_card` for the checks)."""
        return cls.from_dict(read_card(export_dir), str(Path(export_dir) / CARD))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object this card was read from (key order aside)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "prior", "present")}
        out["prior"] = {"identity": self.prior.identity, "digest": self.prior.digest}
        defaults = {f.name: f.default for f in fields(self) if not callable(f.default_factory)}
        derived = {"objective"} if self.objective == (self.config.get("davi") or {}).get("objective") else set()
        out = {k: v for k, v in out.items() if k in self.present or not (
            v is None or k in defaults and v == defaults[k] or v == {} or self.present and k in derived)}
        return {**self.extra, **out}

    @property
    def threshold(self) -> float | None:
        """The calibrated consistency threshold on ``||A x - y||^2 / (M sigma_y^2)``, or None."""
        return parse_threshold(self.consistency)

    def threshold_at(self, sigma_y: float) -> float | None:
        """The threshold for a measurement at noise level ``sigma_y``: a family export's per-noise-level
        thresholds (``consistency.by_sigma``), linear in log sigma_y between its levels and constant
        outside; else :attr:`threshold`."""
        import numpy as np

        threshold, levels = self.threshold, parse_sigma_thresholds(self.consistency)
        if threshold is None or levels is None or sigma_y <= 0:
            return threshold
        sigmas, values = levels
        return float(np.interp(np.log(sigma_y), np.log(sigmas), values))

    @property
    def trained_data(self) -> dict[str, Any]:
        """The training run's ``data`` section (where its held-out images are), or {}."""
        return dict(self.config.get("data") or {})

    @property
    def red_diff(self) -> dict[str, Any]:
        """The training config's ``red_diff`` section (the RED-Diff settings tuned for this task), or {}."""
        return dict(self.config.get("red_diff") or {})


def parse_threshold(entry: Any, where: str = f"{CARD}: consistency") -> float | None:
    """The threshold of a card's ``consistency`` entry; None when there is none; ExportError when broken."""
    if not entry:
        return None
    if not isinstance(entry, dict) or entry.get("statistic") != STATISTIC:
        got = entry.get("statistic") if isinstance(entry, dict) else entry
        raise ExportError(f"{where}: expected statistic '{STATISTIC}', got {got!r}")
    thr = entry.get("threshold")
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not thr > 0:
        raise ExportError(f"{where}.threshold: expected a positive number, got {thr!r}")
    return float(thr)


def _positive_numbers(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(
        isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in v)


def parse_sigma_thresholds(entry: Any, where: str = f"{CARD}: consistency.by_sigma"):
    """(noise levels, thresholds) of a family card's ``consistency.by_sigma``, None when absent; ExportError
    when broken (levels must be positive and increasing, thresholds positive, as many of each)."""
    by_sigma = entry.get("by_sigma") if isinstance(entry, dict) else None
    if by_sigma is None:
        return None
    sigmas = by_sigma.get("sigma_y") if isinstance(by_sigma, dict) else None
    values = by_sigma.get("threshold") if isinstance(by_sigma, dict) else None
    if not (_positive_numbers(sigmas) and _positive_numbers(values) and len(sigmas) == len(values)
            and all(a < b for a, b in itertools.pairwise(sigmas))):
        raise ExportError(f"{where}: expected increasing positive 'sigma_y' and as many positive 'threshold' values, "
                          f"got {by_sigma!r}")
    return [float(v) for v in sigmas], [float(v) for v in values]


def read_card(export_dir: str | Path) -> dict[str, Any]:
    """The parsed ``card.json`` of an export folder (after finishing an interrupted atomic write), with
    the keys a restore needs; ExportError naming the folder, the file or the key."""
    from davi.io.atomic import recover_folder

    recover_folder(export_dir)
    path = Path(export_dir) / CARD
    if not Path(export_dir).is_dir():
        raise ExportError(f"{export_dir}: no such mapper export folder")
    if not path.is_file():
        raise ExportError(f"{path}: missing (not a DAVI mapper export)")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    for key in ("operator", "resolution", "channels", "h"):
        if key not in card:
            raise ExportError(f"{path}: missing key '{key}'")
    return card
