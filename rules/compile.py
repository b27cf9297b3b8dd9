"""Compile a validated Plant into a RuleSet: one rule per (tag, level) and (interlock, output).

Runs once at start-up (and for each back-test rule set). Every default lives here and is
documented in docs/configuration.md: severities per kind (DOMAIN.md: level 2 outranks level 1,
toxic outranks combustible at the same level, demand without action is critical), stale time
by source, NAMUR out-of-range margin. Out-of-service tags get no rules. Rules are ordered by
tag, then kind; interlock rules follow, five per interlock in ``INTERLOCK_KINDS`` order.
Each kind's rules are built as columns in one pass over the tags, then sorted by tag (issue 10:
a Python call and tuple per rule took 3 s for a 100,000-tag plant).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.alarm_defaults import deadband, off_delay_s, on_delay_s
from core.clock import US_PER_S
from core.conditions import INTERLOCK_KINDS, LABELS, LOW_KINDS, RuleKind, Severity
from core.errors import RuleError
from core.plant import (
    Detector,
    Interlock,
    ModbusDevice,
    OpcUaDevice,
    OpcUaMode,
    Plant,
    Tag,
    TagKind,
    resolve_key,
)
from core.registry import TagRegistry
from rules.ruleset import InterlockTable, RuleSet

__all__ = ["compile_rules"]

STALE_POLLS = 10  # a polled tag is stale after this many missed polls ...
STALE_MIN_S = 60.0  # ... but never sooner than this
_INF = math.inf
_BELOW_HALF = float(np.nextafter(0.5, -_INF))  # discrete states: |x - a| < 0.5

_GAS_SEVERITY = {  # (detector, level) -> severity; DOMAIN.md "Gas detection defaults"
    ("COMBUSTIBLE", 1): Severity.MEDIUM,
    ("COMBUSTIBLE", 2): Severity.HIGH,
    ("TOXIC", 1): Severity.HIGH,
    ("TOXIC", 2): Severity.CRITICAL,
}
_SEVERITY = {
    RuleKind.LL: Severity.HIGH,
    RuleKind.L: Severity.MEDIUM,
    RuleKind.H: Severity.MEDIUM,
    RuleKind.HH: Severity.HIGH,
    RuleKind.O2_LOW: Severity.HIGH,
    RuleKind.O2_HIGH: Severity.HIGH,
    RuleKind.ROC: Severity.MEDIUM,
    RuleKind.DEVIATION: Severity.MEDIUM,
    RuleKind.BAD_QUALITY: Severity.MEDIUM,
    RuleKind.STALE: Severity.MEDIUM,
    RuleKind.OUT_OF_RANGE: Severity.MEDIUM,
    RuleKind.FROZEN: Severity.LOW,  # HIGH while frozen near an alarm limit
    RuleKind.STATE: Severity.MEDIUM,
    RuleKind.MISMATCH: Severity.MEDIUM,
    RuleKind.TRIP_DEMAND: Severity.HIGH,
    RuleKind.NO_ACTION: Severity.CRITICAL,
    RuleKind.INPUT_BYPASSED: Severity.MEDIUM,
    RuleKind.BYPASS_OVERDUE: Severity.HIGH,
    RuleKind.OUT_OF_SERVICE: Severity.HIGH,
    RuleKind.CLOCK_AHEAD: Severity.MEDIUM,
}


def _us(seconds: float | None) -> int:
    return round((seconds or 0.0) * US_PER_S)


# An input comparison as ``lo <= x <= hi`` (inverted for ``!=``), by operator.
_OPS: dict[str, Callable[[float], tuple[float, float, bool]]] = {
    ">": lambda v: (math.nextafter(v, _INF), _INF, False),
    ">=": lambda v: (v, _INF, False),
    "<": lambda v: (-_INF, math.nextafter(v, -_INF), False),
    "<=": lambda v: (-_INF, v, False),
    "==": lambda v: (v, v, False),
    "!=": lambda v: (v, v, True),
}


# Per kind, the suffix of its rule key and the middle of its description (an enum's .name
# is a property lookup: 650,000 of them are a measurable part of a province's compile).
_KEY_SUFFIX = {k: f":{k.name}" for k in RuleKind}
_DESCRIBED = {k: f" {LABELS[k]} {k.name}" for k in RuleKind}
_NO_PARAMS = (math.nan,) * 4
# The limit rules of a tag's limits: (field, kind, severity) by what the tag measures.
_LIMIT_NAMES: tuple[tuple[str, RuleKind, Severity], ...] = (
    ("ll", RuleKind.LL, _SEVERITY[RuleKind.LL]),
    ("l", RuleKind.L, _SEVERITY[RuleKind.L]),
    ("h", RuleKind.H, _SEVERITY[RuleKind.H]),
    ("hh", RuleKind.HH, _SEVERITY[RuleKind.HH]),
)
_OXYGEN_NAMES = (
    ("l", RuleKind.O2_LOW, _SEVERITY[RuleKind.O2_LOW]),
    ("h", RuleKind.O2_HIGH, _SEVERITY[RuleKind.O2_HIGH]),
)
_GAS_NAMES = {
    family: (
        ("h", RuleKind.GAS_L1, _GAS_SEVERITY[(family, 1)]),
        ("hh", RuleKind.GAS_L2, _GAS_SEVERITY[(family, 2)]),
    )
    for family in ("TOXIC", "COMBUSTIBLE")
}


Live = list[tuple[int, Tag]]  # the in-service tags with their registry indexes, in registry order


class _Family:
    """Rules of one family as columns. ``tails``: per rule what its description adds to its
    subject (``_DESCRIBED`` of its kind and its text), or one for all; every other RuleSet
    column in ``_COLUMNS`` one per rule (a sequence) or one for all (a scalar; absent: its
    default). ``kind``: one kind or one per rule; severity defaults to the kind's."""

    def __init__(
        self, kind: RuleKind | Sequence[RuleKind], tails: Sequence[str] | str, **columns: Any
    ) -> None:
        self.columns = columns
        columns["kind"] = kind
        self.size = len(kind) if not isinstance(kind, RuleKind) else len(columns["tag"])
        self.tails = [tails] * self.size if isinstance(tails, str) else tails
        if "severity" not in columns:
            columns["severity"] = (
                _SEVERITY[kind] if isinstance(kind, RuleKind) else [_SEVERITY[k] for k in kind]
            )

    def column(self, name: str, dtype: Any, default: Any) -> np.ndarray:
        value = self.columns.get(name, default)
        return (
            np.full(self.size, value, dtype) if np.isscalar(value) else np.fromiter(value, dtype, self.size)
        )


def _columns(rows: list[tuple[Any, ...]], n: int) -> list[Sequence[Any]]:
    """``rows`` of ``n`` values as ``n`` columns."""
    return list(zip(*rows, strict=True)) if rows else [()] * n


class _Builder:
    """The rule families of a plant's tags, a pass over the tags each, and its interlocks."""

    def __init__(self, plant: Plant, registry: TagRegistry) -> None:
        self.plant, self.registry = plant, registry
        self.devices: dict[str, OpcUaDevice | ModbusDevice] = {d.id: d for d in plant.devices()}
        self.ahead_s = plant.settings.rules.max_clock_ahead_s
        self.units: dict[str | None, str] = {}

    def unit(self, tag: Tag) -> str:
        """The unit as descriptions append it ("" for none), one string per unit."""
        u = self.units.get(tag.unit)
        if u is None:
            u = self.units[tag.unit] = f" {tag.unit}" if tag.unit else ""
        return u

    def ref(self, tag: Tag, ref: str) -> int:
        try:
            return self.registry.index_of(resolve_key(tag.key.split(".", 1)[0], ref))
        except KeyError:
            raise RuleError(f"{tag.key}: unknown tag {ref!r}") from None

    # --- per tag, in the order of a tag's rules --------------------------------------------

    def limits(self, live: Live) -> _Family:
        rows = []
        for i, tag in live:
            lim = tag.limits
            if lim is None:
                continue
            # core.alarm_defaults: the same defaults core resolved a loaded plant's limits with
            db = deadband(tag.kind, lim, tag.range)
            on_s, off_s = on_delay_s(tag.kind, lim), off_delay_s(lim)
            on_us, off_us = _us(on_s), _us(off_s)
            unit = self.unit(tag)
            tail = f"{unit} (deadband {db:g}, on-delay {on_s:g} s)" if on_s else f"{unit} (deadband {db:g})"
            names = _LIMIT_NAMES if tag.gas is None else _limit_names(tag)  # (no call for most tags)
            for name, kind, severity in names:
                v = getattr(lim, name)
                if v is None:
                    continue
                low = kind in LOW_KINDS
                text = f"{_DESCRIBED[kind]} {'≤' if low else '≥'} {v:g}{tail}"
                rows.append(
                    (kind, i, text, v, v + db if low else v - db, on_us, off_us, severity, lim.latched)
                )
        kinds, tags, tails, set_at, clear_at, on_us_, off_us_, severities, latched = _columns(rows, 9)
        return _Family(
            kinds, tails, tag=tags, set_at=set_at, clear_at=clear_at, limit=set_at, on_us=on_us_, off_us=off_us_,
            severity=severities, latched=latched,
        )  # fmt: skip

    def bad_quality(self, live: Live) -> _Family:
        k = RuleKind.BAD_QUALITY
        return _Family(k, _DESCRIBED[k], tag=[i for i, _ in live], set_at=1.0, clear_at=1.0)

    def clock_ahead(self, live: Live) -> _Family:
        k, ahead = RuleKind.CLOCK_AHEAD, self.ahead_s
        return _Family(
            k,
            f"{_DESCRIBED[k]} > {ahead:g} s",
            tag=[i for i, _ in live],
            set_at=ahead,
            clear_at=ahead,
            limit=ahead,
        )

    def out_of_range(self, live: Live) -> _Family:
        rows = []
        described = _DESCRIBED[RuleKind.OUT_OF_RANGE]
        for i, tag in live:
            if not tag.range:
                continue
            lo, hi = tag.range
            dq = tag.data_quality
            margin = (dq.range_margin_pct if dq else 1.25) / 100 * (hi - lo)
            tail = f"{described} [{lo:g}, {hi:g}]{self.unit(tag)} ± {margin:g}"
            rows.append((i, tail, math.nextafter(margin, _INF), (lo, hi, math.nan, math.nan)))
        tags, tails, at, params = _columns(rows, 4)
        return _Family(RuleKind.OUT_OF_RANGE, tails, tag=tags, set_at=at, clear_at=at, params=params)

    def stale(self, live: Live) -> _Family:
        rows = []
        described = _DESCRIBED[RuleKind.STALE]
        by_device: dict[str, tuple[float, str, int]] = {}  # the stale time of tags that set none

        def rule(stale_s: float) -> tuple[float, str, int]:
            return stale_s, f"{described} {stale_s:g} s", _us(stale_s)

        for i, tag in live:
            dq = tag.data_quality
            if dq is not None and dq.stale_s is not None:
                stale_s, tail, on_us = rule(dq.stale_s)
            else:
                device = tag.source.device
                if device not in by_device:
                    by_device[device] = rule(self.stale_s(device))
                stale_s, tail, on_us = by_device[device]
            if stale_s:
                rows.append((i, tail, on_us, stale_s))
        tags, tails, on_us_, limit = _columns(rows, 4)
        return _Family(RuleKind.STALE, tails, tag=tags, on_us=on_us_, limit=limit)

    def stale_s(self, device: str) -> float:
        """The stale time of a tag of ``device`` that sets none."""
        dev = self.devices.get(device)
        if isinstance(dev, ModbusDevice):
            return max(STALE_MIN_S, STALE_POLLS * dev.poll_interval_s)
        if isinstance(dev, OpcUaDevice) and dev.mode == OpcUaMode.POLLING:
            return max(STALE_MIN_S, STALE_POLLS * dev.interval_s)
        return 0.0

    def frozen(self, live: Live) -> _Family:
        rows = []
        described = _DESCRIBED[RuleKind.FROZEN]
        for i, tag in live:
            dq = tag.data_quality
            if not (dq and dq.frozen_s):
                continue
            res = tag.resolution or 0.0
            near = (*_limit_values(tag), *_NO_PARAMS)[:4]
            span = tag.range[1] - tag.range[0] if tag.range else 0.0
            tail = f"{described} {dq.frozen_s:g} s (resolution {res:g}{self.unit(tag)})"
            rows.append((i, tail, res, _us(dq.frozen_s), dq.frozen_band_pct / 100 * span, near))
        tags, tails, resolution, on_us, band, params = _columns(rows, 6)
        return _Family(
            RuleKind.FROZEN, tails, tag=tags, set_at=resolution, clear_at=resolution, on_us=on_us, band=band,
            params=params,
        )  # fmt: skip

    def roc(self, live: Live) -> _Family:
        rows = []
        described = _DESCRIBED[RuleKind.ROC]
        for i, tag in live:
            r = tag.rate
            if not r:
                continue
            tail = f"{described} ≥ {r.max_per_min:g}{self.unit(tag)}/min over {r.window_s:g} s"
            rows.append(
                (i, tail, r.max_per_min, r.max_per_min - r.deadband, _us(r.window_s), _us(r.on_delay_s))
            )
        tags, tails, set_at, clear_at, window_us, on_us = _columns(rows, 6)
        return _Family(
            RuleKind.ROC, tails, tag=tags, set_at=set_at, clear_at=clear_at, limit=set_at, window_us=window_us,
            on_us=on_us,
        )  # fmt: skip

    def pairs(self, live: Live) -> tuple[_Family, _Family]:
        """DEVIATION and MISMATCH in one pass: an unknown partner is reported at its first tag."""
        deviations, mismatches = [], []
        key_of = self.registry.key_of
        for i, tag in live:
            d = tag.deviation
            if d:
                other = self.ref(tag, d.tag)
                tail = f"{_DESCRIBED[RuleKind.DEVIATION]} |x − {key_of(other)}| ≥ {d.max:g}{self.unit(tag)}"
                deviations.append((i, other, tail, d.max, _us(d.on_delay_s)))
            s = tag.state
            if s and s.command is not None:
                cmd = self.ref(tag, s.command)
                tail = f"{_DESCRIBED[RuleKind.MISMATCH]} |x − {key_of(cmd)}| > {s.tolerance:g} for {s.travel_s:g} s"
                mismatches.append(
                    (i, cmd, tail, math.nextafter(s.tolerance, _INF), s.tolerance, _us(s.travel_s))
                )
        tags, partners, tails, max_x, on_us = _columns(deviations, 5)
        deviation = _Family(
            RuleKind.DEVIATION, tails, tag=tags, tag2=partners, set_at=max_x, clear_at=max_x, limit=max_x,
            on_us=on_us,
        )  # fmt: skip
        tags, commands, tails, above, tolerance, on_us = _columns(mismatches, 6)
        mismatch = _Family(
            RuleKind.MISMATCH, tails, tag=tags, tag2=commands, set_at=above, clear_at=above, limit=tolerance,
            on_us=on_us,
        )  # fmt: skip
        return deviation, mismatch

    def state(self, live: Live) -> _Family:
        rows = []
        described = _DESCRIBED[RuleKind.STATE]
        for i, tag in live:
            s = tag.state
            if s and s.alarm_value is not None:
                value = s.alarm_value
                rows.append(
                    (i, f"{described} = {value:g}", value, (value, *_NO_PARAMS[1:]), _us(s.on_delay_s))
                )
        tags, tails, limit, params, on_us = _columns(rows, 5)
        return _Family(
            RuleKind.STATE, tails, tag=tags, set_at=_BELOW_HALF, clear_at=_BELOW_HALF, limit=limit, params=params,
            on_us=on_us,
        )  # fmt: skip

    # --- interlocks ------------------------------------------------------------------

    def interlock(self, ent: str, hs: str, il: Interlock, table: dict[str, list[Any]]) -> None:
        """The interlock's row of ``table``, and its rules' (tail, limit, on_us) in
        INTERLOCK_KINDS order in ``table["rules"]``."""
        key = f"{hs}.{il.code}"
        m, _, n = il.voting.partition("oo")
        if not (m.isdigit() and n.isdigit() and 1 <= int(m) <= int(n) == len(il.inputs)):
            raise RuleError(f"{key}: voting {il.voting} does not fit {len(il.inputs)} inputs")

        def idx(ref: str) -> int:
            full = resolve_key(ent, ref)
            if full not in self.registry:
                raise RuleError(f"{key}: unknown tag {ref!r}")
            return self.registry.index_of(full)

        fe = il.final_element
        fe_key = resolve_key(ent, fe.tag)
        no_action = f" {fe_key} not within {fe.tolerance:g} of {fe.safe_value:g} in {il.response_s:g} s"
        table["rules"] += [
            (f"{_IL_DESCRIBED[0]} {il.voting} {il.name}", float(m), 0),
            (f"{_IL_DESCRIBED[1]}{no_action}", fe.safe_value, _us(il.response_s)),
            (_IL_DESCRIBED[2], math.nan, 0),
            (f"{_IL_DESCRIBED[3]} > {il.max_bypass_h:g} h", il.max_bypass_h, _us(il.max_bypass_h * 3600)),
            (_IL_DESCRIBED[4], math.nan, 0),
        ]
        table["keys"].append(key)
        table["names"].append(il.name)
        table["m"].append(int(m))
        table["in_service"].append(il.in_service)
        table["fe"].append((idx(fe.tag), fe.safe_value, fe.tolerance))
        table["ptr"].append(table["ptr"][-1] + len(il.inputs))
        for inp in il.inputs:
            table["inputs"].append(
                (idx(inp.tag), *_OPS[inp.op](inp.value), idx(inp.bypass) if inp.bypass else -1)
            )


_IL_DESCRIBED = [_DESCRIBED[k] for k in INTERLOCK_KINDS]


def _limit_names(tag: Tag) -> tuple[tuple[str, RuleKind, Severity], ...]:
    """The limit rules of a tag's limits: (field, kind, severity) by what the tag measures."""
    gas = tag.gas.detector if tag.kind == TagKind.GAS and tag.gas else None
    if gas is None:
        return _LIMIT_NAMES
    if gas == Detector.OXYGEN:
        return _OXYGEN_NAMES
    return _GAS_NAMES["TOXIC" if gas == Detector.TOXIC else "COMBUSTIBLE"]


def _limit_values(tag: Tag) -> list[float]:
    """The values a tag's limits set, in _limit_names order."""
    lim = tag.limits
    if lim is None:
        return []
    return [v for name, _, _ in _limit_names(tag) if (v := getattr(lim, name)) is not None]


def compile_rules(plant: Plant, registry: TagRegistry | None = None) -> RuleSet:
    """The RuleSet of a validated plant; raises RuleError on what validation cannot catch."""
    registry = registry or TagRegistry.from_plant(plant)
    b = _Builder(plant, registry)
    live = [(i, tag) for i, tag in enumerate(registry.tags) if tag.in_service]
    # the tags that may have a FROZEN, ROC, DEVIATION, STATE or MISMATCH rule: a few of a
    # plant's, found in one pass rather than one per family
    some = [(i, tag) for i, tag in live if tag.data_quality or tag.rate or tag.deviation or tag.state]
    deviation, mismatch = b.pairs(some)  # first: the one family that can fail
    # a tag's rules in this order (limits in _limit_names order)
    families = [
        b.limits(live), b.bad_quality(live), b.clock_ahead(live), b.out_of_range(live), b.stale(live),
        b.frozen(some), b.roc(some), deviation, b.state(some), mismatch,
    ]  # fmt: skip
    table: dict[str, list[Any]] = {
        k: [] for k in ("keys", "names", "m", "in_service", "fe", "rules", "inputs")
    }
    table["ptr"] = [0]
    for ent in plant.enterprises:
        for hs in ent.hazard_sources:
            for il in hs.interlocks:
                b.interlock(ent.code, hs.code, il, table)
    return _assemble(families, registry, table, _us(plant.settings.rules.max_clock_ahead_s))


# The numeric RuleSet columns with their dtypes and the value of a rule that does not set them.
_COLUMNS: tuple[tuple[str, Any, Any], ...] = (
    ("kind", np.uint8, None),  # always set (_Family)
    ("tag", np.int64, -1),
    ("tag2", np.int64, -1),
    ("set_at", np.float64, math.nan),
    ("clear_at", np.float64, math.nan),
    ("limit", np.float64, math.nan),
    ("on_us", np.int64, 0),
    ("off_us", np.int64, 0),
    ("window_us", np.int64, 0),
    ("band", np.float64, 0.0),
    ("severity", np.uint8, None),  # always set (_Family)
    ("latched", bool, False),
)


def _assemble(
    families: list[_Family], registry: TagRegistry, table: dict[str, list[Any]], ahead_us: int
) -> RuleSet:
    il_keys = table["keys"]
    il_kinds = list(INTERLOCK_KINDS) * len(il_keys)
    tails, limit, on_us = _columns(table["rules"], 3)
    families = [*families, _Family(il_kinds, tails, limit=limit, on_us=on_us)]
    cols = {
        name: np.concatenate([f.column(name, dtype, default) for f in families])
        for name, dtype, default in _COLUMNS
    }
    cols["params"] = np.full((len(cols["kind"]), 4), math.nan)
    at = 0
    for f in families:
        if "params" in f.columns and f.size:
            cols["params"][at : at + f.size] = f.columns["params"]
        at += f.size
    # Rules by tag, each tag's in family order (a stable sort), interlock rules last in theirs.
    tag = cols["tag"]
    order = np.argsort(np.where(tag >= 0, tag, len(registry)), kind="stable")
    cols = {name: col[order] for name, col in cols.items()}
    tag_keys = registry.keys
    subjects = [tag_keys[t] for t in cols["tag"][: len(tag) - len(il_kinds)].tolist()]
    subjects += [k for k in il_keys for _ in INTERLOCK_KINDS]
    keys = tuple([s + _KEY_SUFFIX[k] for s, k in zip(subjects, cols["kind"].tolist(), strict=True)])
    tails = [t for f in families for t in f.tails]
    descriptions = tuple([s + tails[r] for s, r in zip(subjects, order.tolist(), strict=True)])
    # A key is its subject's and its kind's (a kind has no colon): tags are unique in the
    # registry with one rule per kind, and interlock kinds are not tag kinds, so only two
    # interlocks of one key can repeat one (the full count runs only then).
    if len(set(il_keys)) != len(il_keys) and len(set(keys)) != len(keys):
        dupes = sorted(k for k, n in Counter(keys).items() if n > 1)
        raise RuleError(f"duplicate rule keys: {', '.join(dupes)}")
    inputs = table["inputs"]
    fe = table["fe"]
    interlocks = InterlockTable(
        keys=tuple(il_keys),
        names=tuple(table["names"]),
        m=np.array(table["m"], np.int64),
        in_service=np.array(table["in_service"], bool),
        fe_tag=np.array([f[0] for f in fe], np.int64),
        fe_safe=np.array([f[1] for f in fe], np.float64),
        fe_tol=np.array([f[2] for f in fe], np.float64),
        rule=np.arange(len(keys) - len(il_kinds), len(keys), dtype=np.int64).reshape(
            -1, len(INTERLOCK_KINDS)
        ),
        ptr=np.array(table["ptr"], np.int64),
        in_tag=np.array([x[0] for x in inputs], np.int64),
        in_lo=np.array([x[1] for x in inputs], np.float64),
        in_hi=np.array([x[2] for x in inputs], np.float64),
        in_invert=np.array([x[3] for x in inputs], bool),
        in_bypass=np.array([x[4] for x in inputs], np.int64),
    )
    return RuleSet(
        keys=keys, descriptions=descriptions, subjects=tuple(subjects), **cols, tag_keys=tag_keys,
        interlocks=interlocks, ahead_us=ahead_us,
    )  # fmt: skip
