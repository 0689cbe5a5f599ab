r"""Operator families: one sampler for many degradations and noise levels.

A family is a list of member operators, each with some settings given as ranges, and a noise
range; every training image draws its own concrete operator ``A_i`` and noise level
``sigma_i``, so one batch mixes degradations::

    operator:
      family:
        - {name: sr, scale: [2, 4]}
        - {name: deblur, kernel_std: [0.5, 3.0]}          # a range: drawn per image
        - {name: box_inpaint, box_size: [8, 16]}          # position random too
        - {name: random_inpaint, drop_fraction: [0.2, 0.8]}
      sigma_y: [0.01, 0.2]                                 # log-uniform per image

The rules of a member (its keys are ``operator.*`` keys; docs/family.md):

* a two-element list ``[lo, hi]`` is a range. A float key draws uniformly in ``[lo, hi]``; an
  integer key draws uniformly from the integers in ``[lo, hi]`` that the operator accepts at the
  data's resolution, found by building it (``scale: [2, 4]`` at 32 px is ``{2, 4}``: 3 does not
  divide 32); no accepted integer is an error. Acceptance of one integer key is tried with the
  member's other ranged keys at their lower ends (integers: their smallest accepted value);
* a scalar is fixed, and every other key of the operator (``kernel_size``, ``kernel_file``,
  ``mask_file``, ...) keeps its ``operator.*`` default unless given: ``kernel_file`` /
  ``mask_file`` operators are members with fixed settings, and so is a registered or import-path
  operator whose settings are scalars;
* ``box_inpaint`` also draws its box's top-left corner uniformly among the positions where the
  drawn box fits, unless ``box_top`` or ``box_left`` is given; ``random_inpaint`` draws a fresh
  ``mask_seed`` (so a fresh mask) per image unless ``mask_seed`` is given;
* ``operator.sigma_y``: ``[lo, hi]`` (``0 < lo <= hi``) draws ``log sigma`` uniformly in
  ``[log lo, log hi]`` per image; a number is fixed.

A draw takes, in this order, the member (uniformly), its ranged keys in the order written, the
box position or mask seed, then sigma_y, all from the caller's ``torch.Generator``: the same seed
gives the same operators.

The **condition vector** of a concrete operator (:meth:`OperatorFamily.condition_vector`, length
``cond_dim``) is the one-hot of its member, then every member's ranged keys in order, each
``(v - lo) / (hi - lo)`` in [0, 1] (0 in the slots of the other members, and for ``lo == hi``),
then ``(log sigma_y - log lo) / (log hi - log lo)``. Box positions and random masks are not in
it: the coverage map ``A^T A 1`` (:meth:`OperatorBatch.coverage`) shows them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from davi.operators.base import Operator, OperatorError, _is_int, _is_number
from davi.operators.inpainting import BoxInpaint, RandomInpaint
from davi.operators.registry import (
    _ParamsAsConfig,
    build_operator,
    operator_class,
    operator_from_params,
)

__all__ = ["FamilyMember", "OperatorFamily", "OperatorBatch", "family_from_config", "family_spec"]

# An integer range is enumerated (each value built once) to find the accepted ones: keep it small.
_MAX_INTEGERS = 1024
# Keys that every params() dict carries and that a member never ranges over.
_COMMON = ("name", "sigma_y", "resolution", "channels")
_POSITION = ("box_top", "box_left")


# -- the member spec as written ---------------------------------------------------------------


def _spec_value(where: str, v: Any, default: Any) -> Any:
    """A member's scalar or [lo, hi] value, typed like the ``operator.*`` default (None: untyped)."""
    tp = None if default is None else type(default)
    if isinstance(v, (list, tuple)):
        if tp is str:
            raise OperatorError(f"{where}: a name or file is fixed, not a range; got {list(v)!r}")
        if len(v) != 2 or not all(_is_number(e) for e in v):
            raise OperatorError(f"{where}: a range is [lo, hi] with two finite numbers, got {list(v)!r}")
        if tp is int and not all(_is_int(e) for e in v):
            raise OperatorError(f"{where}: an integer setting ranges over integers, got {list(v)!r}")
        if v[0] > v[1]:
            raise OperatorError(f"{where}: a range [lo, hi] needs lo <= hi, got {list(v)!r}")
        return [float(e) for e in v] if tp is float else list(v)
    if tp is float and _is_number(v):
        return float(v)
    if tp is int and not _is_int(v):
        raise OperatorError(f"{where}: expected an integer or [lo, hi], got {v!r}")
    if tp is str and not isinstance(v, str):
        raise OperatorError(f"{where}: expected a string, got {v!r}")
    return v


def family_spec(family: Any, defaults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``operator.family`` checked and typed: a list of ``{name, key: scalar | [lo, hi], ...}``.

    ``defaults`` (``{key: default}`` of the ``operator.*`` keys) types each value and limits the
    keys; without it any key is taken and a range of two integers is an integer range. A fault is
    an OperatorError naming ``operator.family[i].key``.
    """
    if not isinstance(family, (list, tuple)):
        raise OperatorError(f"operator.family: expected a list of members like {{name: sr, scale: [2, 4]}}, got {family!r}")
    out = []
    for i, spec in enumerate(family):
        where = f"operator.family[{i}]"
        if not isinstance(spec, dict):
            raise OperatorError(f"{where}: expected a mapping like {{name: sr, scale: [2, 4]}}, got {spec!r}")
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise OperatorError(f"{where}.name: every member names its operator, got {spec.get('name')!r}")
        clean = {"name": spec["name"]}
        for key, v in spec.items():
            if key == "name":
                continue
            if key == "sigma_y":
                raise OperatorError(f"{where}.sigma_y: the noise level is the family's (operator.sigma_y: a number or [lo, hi])")
            if defaults is not None and key not in defaults:
                raise OperatorError(f"{where}.{key}: unknown key (valid: name, {', '.join(defaults)})")
            clean[key] = _spec_value(f"{where}.{key}", v, None if defaults is None else defaults[key])
        out.append(clean)
    if not out:
        raise OperatorError("operator.family: a family needs at least one member")
    return out


def sigma_range(sigma_y: Any, key: str = "operator.sigma_y") -> tuple[float, float]:
    """``(lo, hi)`` of a family's noise level: a number >= 0 (fixed) or ``[lo, hi]`` with 0 < lo <= hi."""
    if _is_number(sigma_y) and sigma_y >= 0:
        return float(sigma_y), float(sigma_y)
    if (isinstance(sigma_y, (list, tuple)) and len(sigma_y) == 2 and all(_is_number(v) for v in sigma_y)
            and 0 < sigma_y[0] <= sigma_y[1]):
        return float(sigma_y[0]), float(sigma_y[1])
    raise OperatorError(f"{key}: expected a number >= 0 or a log-uniform range [lo, hi] with 0 < lo <= hi, got {sigma_y!r}")


# -- one member -------------------------------------------------------------------------------


def _renamed(e: OperatorError, where: str) -> OperatorError:
    """The operator's own ``operator.key: ...`` message as ``operator.family[i].key: ...``."""
    text = str(e)
    return OperatorError(where + text[len("operator"):] if text.startswith("operator.") else f"{where}: {text}")


def _uniform(g: torch.Generator | None) -> float:
    device = g.device if g is not None else "cpu"
    return float(torch.rand((), generator=g, dtype=torch.float64, device=device))


def _randint(g: torch.Generator | None, low: int, high: int) -> int:
    """An integer uniform in [low, high]."""
    device = g.device if g is not None else "cpu"
    return int(torch.randint(low, high + 1, (), generator=g, device=device))


def _fmt_set(values: tuple[int, ...]) -> str:
    if len(values) <= 8:
        return "{" + ", ".join(map(str, values)) + "}"
    return f"{{{values[0]}, {values[1]}, ..., {values[-1]}}} ({len(values)} values)"


@dataclass
class FamilyMember:
    """One member: ``base``, the params() of a concrete operator of it (the ranged keys at some
    value in range); ``ranges``, ``{key: (lo, hi)}``; ``choices``, the accepted integers of each
    integer key; ``draw_position`` / ``draw_mask_seed``: the box's corner / the random mask is drawn."""

    base: dict[str, Any]
    ranges: dict[str, tuple[float, float]]
    choices: dict[str, tuple[int, ...]]
    draw_position: bool = False
    draw_mask_seed: bool = False
    trust_remote_code: bool = True

    @property
    def name(self) -> str:
        return self.base["name"]

    def build(self, values: dict[str, Any], sigma_y: float) -> Operator:
        """The concrete operator with ``values`` (drawn keys) over ``base``, noise ``sigma_y``."""
        params = {**self.base, **values, "sigma_y": sigma_y}
        return build_operator(_ParamsAsConfig(params), params["resolution"], params["channels"], self.trust_remote_code)

    def draw_values(self, g: torch.Generator | None) -> dict[str, Any]:
        """The drawn keys, in the family's draw order (see the module's docstring)."""
        values: dict[str, Any] = {}
        for key, (lo, hi) in self.ranges.items():
            if key in self.choices:
                values[key] = self.choices[key][_randint(g, 0, len(self.choices[key]) - 1)]
            else:
                values[key] = min(hi, lo + (hi - lo) * _uniform(g))
        if self.draw_position:
            box = values.get("box_size", self.base["box_size"])
            free = self.base["resolution"] - box
            values["box_top"], values["box_left"] = _randint(g, 0, free), _randint(g, 0, free)
        if self.draw_mask_seed:
            values["mask_seed"] = _randint(g, 0, 2**62)
        return values

    def reason(self, op: Operator) -> str | None:
        """Why ``op`` (same name) is not this member's (one line), or None when it is."""
        p = op.params()
        drawn = set(self.ranges) | (set(_POSITION) if self.draw_position else set())
        drawn |= {"mask_seed"} if self.draw_mask_seed else set()
        for key in sorted((set(p) | set(self.base)) - drawn - {"name", "sigma_y"}):
            if key not in p:
                return f"{self.name}: the family's member sets {key}, this operator does not"
            if key not in self.base:
                return f"{self.name}: this operator sets {key}, the family's member does not"
            if p[key] != self.base[key]:
                if isinstance(p[key], list):
                    return f"{self.name}: {key} differs from the family's"
                return f"{self.name}: {key} {p[key]!r} is not the family's {self.base[key]!r}"
        for key, (lo, hi) in self.ranges.items():
            v = p.get(key)
            if key in self.choices and v not in self.choices[key]:
                return f"{self.name}: {key} {v!r} is not one of the family's {_fmt_set(self.choices[key])}"
            if key not in self.choices and not (_is_number(v) and lo <= v <= hi):
                return f"{self.name}: {key} {v!r} is outside the family's range [{lo:g}, {hi:g}]"
        return None

    def params(self) -> dict[str, Any]:
        draw = [k for k, on in (("box_position", self.draw_position), ("mask_seed", self.draw_mask_seed)) if on]
        return {"operator": dict(self.base), "ranges": {k: list(v) for k, v in self.ranges.items()}, "draw": draw}

    def describe(self) -> str:
        parts = [f"{k} in {_fmt_set(self.choices[k])}" if k in self.choices else f"{k} in [{lo:g}, {hi:g}]"
                 for k, (lo, hi) in self.ranges.items()]
        parts += ["position drawn"] * self.draw_position + ["mask drawn per image"] * self.draw_mask_seed
        return f"{self.name} ({', '.join(parts)})" if parts else self.name


def _integer_choices(settings: dict, key: str, lo: int, hi: int, where: str, build) -> tuple[int, ...]:
    """The integers in [lo, hi] for which ``build(settings | {key: v})`` succeeds; none is an error."""
    if hi - lo + 1 > _MAX_INTEGERS:
        raise OperatorError(f"{where}: [{lo}, {hi}] holds more than {_MAX_INTEGERS} integers to try")
    accepted, first_error = [], None
    for v in range(lo, hi + 1):
        try:
            build({**settings, key: v})
            accepted.append(v)
        except OperatorError as e:
            first_error = first_error or e
    if not accepted:
        res = settings.get("resolution")
        raise OperatorError(f"{where}: no integer in [{lo}, {hi}] is accepted at {res} px ({first_error})")
    return tuple(accepted)


def _member(settings: dict, ranges: dict, where: str, trust: bool, draws: tuple[bool, bool]) -> FamilyMember:
    """The member with fixed ``settings`` (a params-like dict: name, sigma_y, resolution, channels,
    keys) and ``ranges`` (``{key: (lo, hi)}``, integer ends: an integer key); ``draws``: (position, mask seed)."""

    def build(s: dict) -> Operator:
        try:
            return build_operator(_ParamsAsConfig(s), s["resolution"], s["channels"], trust)
        except OperatorError as e:
            raise _renamed(e, where) from None

    settings = {**settings, **{k: lo for k, (lo, hi) in ranges.items()}}
    choices = {}
    for key, (lo, hi) in ranges.items():
        if _is_int(lo) and _is_int(hi):
            choices[key] = _integer_choices(settings, key, lo, hi, f"{where}.{key}", build)
            settings[key] = choices[key][0]
    for key, (lo, hi) in ranges.items():
        if key not in choices:
            build({**settings, key: hi})  # both ends must be accepted (lo is in settings)
    base = build(settings).params()
    for key in ranges:
        if key not in base:
            raise OperatorError(f"{where}.{key}: operator '{base['name']}' has no setting {key} to range over")
    return FamilyMember(base, dict(ranges), choices, draws[0], draws[1], trust)


def _member_from_spec(i: int, spec: dict, defaults: dict, sigma_lo: float, resolution: int, channels: int) -> FamilyMember:
    """Member ``i`` as written in ``operator.family`` (``spec``, typed by :func:`family_spec`)."""
    where = f"operator.family[{i}]"
    try:
        cls = operator_class(spec["name"])
    except OperatorError as e:
        raise _renamed(e, where) from None
    fixed = {k: v for k, v in spec.items() if not isinstance(v, list)}
    ranges = {k: tuple(v) for k, v in spec.items() if isinstance(v, list)}
    settings = {**defaults, **fixed, "sigma_y": sigma_lo, "resolution": resolution, "channels": channels}
    draws = (issubclass(cls, BoxInpaint) and not set(_POSITION) & set(spec),
             issubclass(cls, RandomInpaint) and "mask_seed" not in spec)
    return _member(settings, ranges, where, True, draws)


def _config_defaults(operator_cfg: Any) -> dict[str, Any] | None:
    """``{key: default}`` of an ``OperatorConfig``'s single-operator keys (None: not a dataclass)."""
    if not dataclasses.is_dataclass(operator_cfg):
        return None
    fresh = type(operator_cfg)()
    return {f.name: getattr(fresh, f.name) for f in dataclasses.fields(fresh) if f.name not in ("name", "sigma_y", "family")}


class OperatorFamily:
    """A family of operators and a noise range (see the module docstring for the rules).

    ``members``: :class:`FamilyMember` objects (built by :meth:`from_config` / :meth:`from_params`);
    ``sigma_y``: a number or ``[lo, hi]``. :meth:`draw` gives one concrete operator, :meth:`check`
    refuses one outside the family, :meth:`condition_vector` encodes one for a conditioned mapper.
    """

    def __init__(self, members: list[FamilyMember], sigma_y: float | list[float], resolution: int, channels: int):
        if not members:
            raise OperatorError("operator.family: a family needs at least one member")
        self.members = list(members)
        self.sigma_lo, self.sigma_hi = sigma_range(sigma_y)
        self.resolution, self.channels = int(resolution), int(channels)

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, operator_cfg: Any, resolution: int, channels: int) -> "OperatorFamily":
        """The family of an ``operator:`` section with a non-empty ``family`` (an OperatorConfig)."""
        if not _is_int(resolution) or resolution < 1:
            raise OperatorError(f"data.resolution: expected a positive integer, got {resolution!r}")
        if not _is_int(channels) or channels < 1:
            raise OperatorError(f"data.channels: expected a positive integer, got {channels!r}")
        defaults = _config_defaults(operator_cfg)
        spec = family_spec(operator_cfg.family, defaults)
        lo, hi = sigma_range(operator_cfg.sigma_y)
        members = [_member_from_spec(i, m, defaults or {}, lo, resolution, channels) for i, m in enumerate(spec)]
        return cls(members, operator_cfg.sigma_y if lo != hi else lo, resolution, channels)

    def params(self) -> dict[str, Any]:
        """JSON-able (export cards); :meth:`from_params` rebuilds the same family without data files."""
        sigma = [self.sigma_lo, self.sigma_hi] if self.sigma_lo != self.sigma_hi else self.sigma_lo
        return {"members": [m.params() for m in self.members], "sigma_y": sigma,
                "resolution": self.resolution, "channels": self.channels}

    @classmethod
    def from_params(cls, params: dict, trust_remote_code: bool = False) -> "OperatorFamily":
        """Inverse of :meth:`params`; an import-path member needs ``trust_remote_code`` (a card may come from anywhere)."""
        if not isinstance(params, dict) or not isinstance(params.get("members"), list):
            raise OperatorError("family params: expected a mapping with a list 'members'")
        for key in ("sigma_y", "resolution", "channels"):
            if key not in params:
                raise OperatorError(f"family params: missing key '{key}'")
        members = []
        for i, m in enumerate(params["members"]):
            where = f"family params: members[{i}]"
            if not isinstance(m, dict) or not {"operator", "ranges", "draw"} <= set(m):
                raise OperatorError(f"{where}: expected a mapping with 'operator', 'ranges' and 'draw'")
            base = operator_from_params(m["operator"], trust_remote_code).params()
            ranges = {k: tuple(_spec_value(f"{where}.ranges.{k}", v, None)) for k, v in m["ranges"].items()}
            draws = ("box_position" in m["draw"], "mask_seed" in m["draw"])
            members.append(_member(base, ranges, where, trust_remote_code, draws))
        return cls(members, params["sigma_y"], params["resolution"], params["channels"])

    # -- drawing --------------------------------------------------------------------------------
    def draw(self, generator: torch.Generator | None = None) -> Operator:
        """One concrete operator: a member (uniformly), its drawn settings, its own sigma_y."""
        member = self.members[_randint(generator, 0, len(self.members) - 1)]
        values = member.draw_values(generator)
        return member.build(values, self.draw_sigma(generator))

    def draw_sigma(self, generator: torch.Generator | None = None) -> float:
        """A noise level, log-uniform in [lo, hi] (a fixed one: lo, drawing nothing)."""
        if self.sigma_lo == self.sigma_hi:
            return self.sigma_lo
        log_lo, log_hi = math.log(self.sigma_lo), math.log(self.sigma_hi)
        return min(self.sigma_hi, max(self.sigma_lo, math.exp(log_lo + (log_hi - log_lo) * _uniform(generator))))

    def draw_many(self, n: int, generator: torch.Generator | None = None) -> list[Operator]:
        """``n`` independent draws, one per image of a batch (in order, from the same generator)."""
        return [self.draw(generator) for _ in range(n)]

    # -- membership -----------------------------------------------------------------------------
    def member_index(self, operator: Operator) -> int:
        """The index of the member ``operator`` belongs to; OperatorError (one line) when it is outside."""
        if not isinstance(operator, Operator):
            raise OperatorError(f"operator outside the family: expected an Operator, got {type(operator).__name__}")
        names = [m.name for m in self.members]
        if operator.name not in names:
            raise OperatorError(f"operator outside the family: '{operator.name}' is not a member "
                                f"(members: {', '.join(dict.fromkeys(names))})")
        reasons = []
        for i, m in enumerate(self.members):
            if m.name == operator.name:
                reason = m.reason(operator)
                if reason is None:
                    self._check_sigma(operator.sigma_y)
                    return i
                reasons.append(reason)
        raise OperatorError(f"operator outside the family: {reasons[0]}")

    def _check_sigma(self, sigma_y: float) -> None:
        if self.sigma_lo == self.sigma_hi and sigma_y != self.sigma_lo:
            raise OperatorError(f"operator outside the family: sigma_y {sigma_y:g} is not the family's {self.sigma_lo:g}")
        if not self.sigma_lo <= sigma_y <= self.sigma_hi:
            raise OperatorError(f"operator outside the family: sigma_y {sigma_y:g} is outside the family's range "
                                f"[{self.sigma_lo:g}, {self.sigma_hi:g}]")

    def check(self, operator: Operator) -> None:
        """Raise a one-line OperatorError unless ``operator`` is one the family draws (member, settings, sigma_y)."""
        self.member_index(operator)

    def __contains__(self, operator: Operator) -> bool:
        try:
            self.member_index(operator)
        except OperatorError:
            return False
        return True

    # -- conditioning ---------------------------------------------------------------------------
    @property
    def cond_dim(self) -> int:
        """Length of :meth:`condition_vector`: members + every member's ranged keys + 1 (log sigma_y)."""
        return len(self.members) + sum(len(m.ranges) for m in self.members) + 1

    def condition_vector(self, operator: Operator) -> torch.Tensor:
        """(cond_dim,) float32: one-hot member, ranged keys in [0, 1], log sigma_y in [0, 1] (module docstring)."""
        index = self.member_index(operator)
        v = torch.zeros(self.cond_dim)
        v[index] = 1.0
        offset = len(self.members) + sum(len(m.ranges) for m in self.members[:index])
        p = operator.params()
        for j, (key, (lo, hi)) in enumerate(self.members[index].ranges.items()):
            v[offset + j] = (p[key] - lo) / (hi - lo) if hi > lo else 0.0
        if self.sigma_hi > self.sigma_lo:
            log_lo, log_hi = math.log(self.sigma_lo), math.log(self.sigma_hi)
            v[-1] = (math.log(operator.sigma_y) - log_lo) / (log_hi - log_lo)
        return v

    def describe(self) -> str:
        """One line, e.g. 'family of 2: sr (scale in {2, 4}); deblur (...); sigma_y log-uniform in [0.01, 0.2]'."""
        if self.sigma_lo == self.sigma_hi:
            noise = f"sigma_y {self.sigma_lo:g}"
        else:
            noise = f"sigma_y log-uniform in [{self.sigma_lo:g}, {self.sigma_hi:g}]"
        return f"family of {len(self.members)}: " + "; ".join(m.describe() for m in self.members) + f"; {noise}"

    def __repr__(self) -> str:
        return f"OperatorFamily({self.describe()})"


def family_from_config(operator_cfg: Any, resolution: int, channels: int) -> OperatorFamily | None:
    """The family of an ``operator:`` section (an OperatorConfig), or None when it has no ``family``."""
    if not getattr(operator_cfg, "family", None):
        return None
    return OperatorFamily.from_config(operator_cfg, resolution, channels)


# -- one training batch -----------------------------------------------------------------------


class OperatorBatch:
    r"""The per-image operators ``A_i`` of one batch (one per image, e.g. ``family.draw_many(B, g)``).

    Measurement shapes differ between members, so measurements are lists: ``ys[i]`` is
    ``(1, C, h_i, w_i)``. With ``M_i`` the number of entries of ``A_i x_i`` (unobserved pixels
    of the inpainting operators included, as ``consistency_loss`` counts them):

    * ``residual(ys, x)_i = (1 / M_i) ||y_i - A_i x_i||^2`` (= ``consistency_loss(A_i, y_i, x_i)``);
    * ``coverage()_i = A_i^T A_i 1``: the mask for inpainting, ``1 / s^2`` for SR x s, 1 for a blur
      away from the borders (reflect padding folds the kernel's tails back there).
    """

    def __init__(self, operators: list[Operator]):
        self.operators = list(operators)
        if not self.operators:
            raise OperatorError("OperatorBatch: needs at least one operator")

    def __len__(self) -> int:
        return len(self.operators)

    def __getitem__(self, i: int) -> Operator:
        return self.operators[i]

    def __iter__(self):
        return iter(self.operators)

    def _check_batch(self, n: int, what: str) -> None:
        if n != len(self.operators):
            raise OperatorError(f"OperatorBatch: {what} has {n} images, the batch has {len(self.operators)} operators")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[A_i x_i]``, each (1, C, h_i, w_i)."""
        self._check_batch(x.shape[0], "x")
        return [op(x[i : i + 1]) for i, op in enumerate(self.operators)]

    __call__ = forward

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """``[A_i x_i + sigma_i n_i]``, the noise drawn image by image in order from ``generator``."""
        self._check_batch(x.shape[0], "x")
        return [op.measure(x[i : i + 1], generator) for i, op in enumerate(self.operators)]

    def lift(self, ys: list[torch.Tensor]) -> torch.Tensor:
        """``(B, C, H, W)``: each measurement's ``lift``."""
        self._check_batch(len(ys), "ys")
        return torch.cat([op.lift(y) for op, y in zip(self.operators, ys)])

    def residual(self, ys: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` float32: per image the mean over its own ``M_i`` entries of ``(y_i - A_i x_i)^2``."""
        self._check_batch(len(ys), "ys")
        self._check_batch(x.shape[0], "x")
        return torch.stack([F.mse_loss(op(x[i : i + 1].float()), y.float())
                            for i, (op, y) in enumerate(zip(self.operators, ys))])

    @property
    def sigma_y(self) -> torch.Tensor:
        """``(B,)`` float32 on the CPU: each image's noise level."""
        return torch.tensor([op.sigma_y for op in self.operators], dtype=torch.float32)

    @property
    def measurement_numel(self) -> list[int]:
        """``M_i``: the entries of ``A_i x_i`` for one image (every channel)."""
        return [math.prod(op.measurement_shape((1, op.channels, op.resolution, op.resolution))) for op in self.operators]

    def coverage(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(B, C, H, W)``: ``A_i^T A_i 1`` per image, the per-pixel measurement coverage."""
        out = []
        for op in self.operators:
            ones = torch.ones(1, op.channels, op.resolution, op.resolution, device=device, dtype=dtype)
            out.append(op.adjoint(op(ones)))
        return torch.cat(out)

    def condition_vectors(self, family: OperatorFamily) -> torch.Tensor:
        """``(B, family.cond_dim)``: each operator's :meth:`OperatorFamily.condition_vector`."""
        return torch.stack([family.condition_vector(op) for op in self.operators])
