"""Compile a validated Plant into a RuleSet: one rule per (tag, level) and (interlock, output).

Runs once at start-up (and for each back-test rule set). Every default lives here and is
documented in docs/configuration.md: severities per kind (DOMAIN.md: level 2 outranks level 1,
toxic outranks combustible at the same level, demand without action is critical), stale time
by source, NAMUR out-of-range margin. Out-of-service tags get no rules. Rules are ordered by
tag, then kind; interlock rules follow, five per interlock in ``INTERLOCK_KINDS`` order.
"""

from __future__ import annotations

import math
from collections import Counter
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


def _op(op: str, v: float) -> tuple[float, float, bool]:
    """An input comparison as ``lo <= x <= hi`` (inverted for ``!=``)."""
    up, down = float(np.nextafter(v, _INF)), float(np.nextafter(v, -_INF))
    return {
        ">": (up, _INF, False),
        ">=": (v, _INF, False),
        "<": (-_INF, down, False),
        "<=": (-_INF, v, False),
        "==": (v, v, False),
        "!=": (v, v, True),
    }[op]


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


class _Builder:
    """The rule table: one tuple per rule, in ``_COLUMNS`` order."""

    def __init__(self, plant: Plant, registry: TagRegistry) -> None:
        self.plant, self.registry = plant, registry
        self.devices: dict[str, OpcUaDevice | ModbusDevice] = {d.id: d for d in plant.devices()}
        self.ahead_s = plant.settings.rules.max_clock_ahead_s
        self.rows: list[tuple[Any, ...]] = []

    def add(
        self,
        kind: RuleKind,
        subject: str,
        text: str,
        *,
        tag: int = -1,
        tag2: int = -1,
        set_at: float = math.nan,
        clear_at: float = math.nan,
        limit: float = math.nan,
        on_us: int = 0,
        off_us: int = 0,
        window_us: int = 0,
        band: float = 0.0,
        params: Any = _NO_PARAMS,
        severity: Severity | None = None,
        latched: bool = False,
    ) -> int:
        self.rows.append(
            (
                subject + _KEY_SUFFIX[kind],
                subject + _DESCRIBED[kind] + text,
                subject,
                kind,
                tag,
                tag2,
                set_at,
                clear_at,
                limit,
                on_us,
                off_us,
                window_us,
                band,
                params,
                _SEVERITY.get(kind, Severity.MEDIUM) if severity is None else severity,
                latched,
            )
        )
        return len(self.rows) - 1

    def ref(self, tag: Tag, ref: str) -> int:
        try:
            return self.registry.index_of(resolve_key(tag.key.split(".", 1)[0], ref))
        except KeyError:
            raise RuleError(f"{tag.key}: unknown tag {ref!r}") from None

    # --- per tag -------------------------------------------------------------------

    def tag(self, i: int, tag: Tag) -> None:
        lo, hi = tag.range if tag.range else (math.nan, math.nan)
        span = hi - lo if tag.range else 0.0
        unit = f" {tag.unit}" if tag.unit else ""
        limits = self.limits(i, tag, unit)
        dq = tag.data_quality
        self.add(RuleKind.BAD_QUALITY, tag.key, "", tag=i, set_at=1.0, clear_at=1.0)
        ahead = self.ahead_s
        self.add(
            RuleKind.CLOCK_AHEAD, tag.key, f" > {ahead:g} s", tag=i, set_at=ahead, clear_at=ahead, limit=ahead
        )
        if tag.range:
            margin = (dq.range_margin_pct if dq else 1.25) / 100 * span
            at = math.nextafter(margin, _INF)
            self.add(
                RuleKind.OUT_OF_RANGE, tag.key, f" [{lo:g}, {hi:g}]{unit} ± {margin:g}", tag=i,
                set_at=at, clear_at=at, params=[lo, hi, math.nan, math.nan],
            )  # fmt: skip
        stale_s = self.stale_s(tag)
        if stale_s:
            self.add(RuleKind.STALE, tag.key, f" {stale_s:g} s", tag=i, on_us=_us(stale_s), limit=stale_s)
        if dq and dq.frozen_s:
            res = tag.resolution or 0.0
            near = (limits + [math.nan] * 4)[:4]
            self.add(
                RuleKind.FROZEN, tag.key, f" {dq.frozen_s:g} s (resolution {res:g}{unit})", tag=i,
                set_at=res, clear_at=res, on_us=_us(dq.frozen_s), band=dq.frozen_band_pct / 100 * span, params=near,
            )  # fmt: skip
        if tag.rate:
            r = tag.rate
            self.add(
                RuleKind.ROC, tag.key, f" ≥ {r.max_per_min:g}{unit}/min over {r.window_s:g} s", tag=i,
                set_at=r.max_per_min, clear_at=r.max_per_min - r.deadband, limit=r.max_per_min,
                window_us=_us(r.window_s), on_us=_us(r.on_delay_s),
            )  # fmt: skip
        if tag.deviation:
            d = tag.deviation
            other = self.ref(tag, d.tag)
            self.add(
                RuleKind.DEVIATION, tag.key, f" |x − {self.registry.key_of(other)}| ≥ {d.max:g}{unit}", tag=i,
                tag2=other, set_at=d.max, clear_at=d.max, limit=d.max, on_us=_us(d.on_delay_s),
            )  # fmt: skip
        if tag.state and tag.state.alarm_value is not None:
            s, value = tag.state, tag.state.alarm_value
            self.add(
                RuleKind.STATE, tag.key, f" = {value:g}", tag=i, set_at=_BELOW_HALF, clear_at=_BELOW_HALF,
                limit=value, params=[value, math.nan, math.nan, math.nan], on_us=_us(s.on_delay_s),
            )  # fmt: skip
        if tag.state and tag.state.command is not None:
            s = tag.state
            cmd = self.ref(tag, tag.state.command)
            at = float(np.nextafter(s.tolerance, _INF))
            self.add(
                RuleKind.MISMATCH, tag.key, f" |x − {self.registry.key_of(cmd)}| > {s.tolerance:g} for {s.travel_s:g} s",
                tag=i, tag2=cmd, set_at=at, clear_at=at, limit=s.tolerance, on_us=_us(s.travel_s),
            )  # fmt: skip

    def limits(self, i: int, tag: Tag, unit: str) -> list[float]:
        lim = tag.limits
        if lim is None:
            return []
        # core.alarm_defaults: the same defaults core resolved a loaded plant's limits with
        db = deadband(tag.kind, lim, tag.range)
        on_s, off_s = on_delay_s(tag.kind, lim), off_delay_s(lim)
        gas = tag.gas.detector if tag.kind == TagKind.GAS and tag.gas else None
        names = _LIMIT_NAMES
        if gas == Detector.OXYGEN:
            names = _OXYGEN_NAMES
        elif gas is not None:
            names = _GAS_NAMES["TOXIC" if gas == Detector.TOXIC else "COMBUSTIBLE"]
        values = []
        on_us, off_us = _us(on_s), _us(off_s)
        for name, kind, severity in names:
            v = getattr(lim, name)
            if v is None:
                continue
            values.append(v)
            low = kind in LOW_KINDS
            sign = "≤" if low else "≥"
            delays = f", on-delay {on_s:g} s" if on_s else ""
            self.add(
                kind, tag.key, f" {sign} {v:g}{unit} (deadband {db:g}{delays})", tag=i, set_at=v,
                clear_at=v + db if low else v - db, limit=v, on_us=on_us,
                off_us=off_us, latched=lim.latched, severity=severity,
            )  # fmt: skip
        return values

    def stale_s(self, tag: Tag) -> float:
        dq = tag.data_quality
        if dq is not None and dq.stale_s is not None:
            return dq.stale_s
        dev = self.devices.get(tag.source.device)
        if isinstance(dev, ModbusDevice):
            return max(STALE_MIN_S, STALE_POLLS * dev.poll_interval_s)
        if isinstance(dev, OpcUaDevice) and dev.mode == OpcUaMode.POLLING:
            return max(STALE_MIN_S, STALE_POLLS * dev.interval_s)
        return 0.0

    # --- interlocks ------------------------------------------------------------------

    def interlock(self, ent: str, hs: str, il: Interlock, table: dict[str, list[Any]]) -> None:
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
        texts = {
            RuleKind.TRIP_DEMAND: f" {il.voting} {il.name}",
            RuleKind.NO_ACTION: f" {fe_key} not within {fe.tolerance:g} of {fe.safe_value:g} in {il.response_s:g} s",
            RuleKind.INPUT_BYPASSED: "",
            RuleKind.BYPASS_OVERDUE: f" > {il.max_bypass_h:g} h",
            RuleKind.OUT_OF_SERVICE: "",
        }
        cols: dict[RuleKind, dict[str, Any]] = {
            RuleKind.TRIP_DEMAND: {"limit": float(m)},
            RuleKind.NO_ACTION: {"limit": fe.safe_value, "on_us": _us(il.response_s)},
            RuleKind.BYPASS_OVERDUE: {"limit": il.max_bypass_h, "on_us": _us(il.max_bypass_h * 3600)},
        }
        rules = [self.add(k, key, texts[k], **cols.get(k, {})) for k in INTERLOCK_KINDS]
        table["keys"].append(key)
        table["names"].append(il.name)
        table["m"].append(int(m))
        table["in_service"].append(il.in_service)
        table["fe"].append((idx(fe.tag), fe.safe_value, fe.tolerance))
        table["rule"].append(rules)
        table["ptr"].append(table["ptr"][-1] + len(il.inputs))
        for inp in il.inputs:
            table["inputs"].append(
                (idx(inp.tag), *_op(inp.op, inp.value), idx(inp.bypass) if inp.bypass else -1)
            )


def compile_rules(plant: Plant, registry: TagRegistry | None = None) -> RuleSet:
    """The RuleSet of a validated plant; raises RuleError on what validation cannot catch."""
    registry = registry or TagRegistry.from_plant(plant)
    b = _Builder(plant, registry)
    for i, tag in enumerate(registry.tags):
        if tag.in_service:
            b.tag(i, tag)
    table: dict[str, list[Any]] = {
        k: [] for k in ("keys", "names", "m", "in_service", "fe", "rule", "inputs")
    }
    table["ptr"] = [0]
    for ent in plant.enterprises:
        for hs in ent.hazard_sources:
            for il in hs.interlocks:
                b.interlock(ent.code, hs.code, il, table)
    return _assemble(b, registry, table, _us(plant.settings.rules.max_clock_ahead_s))


# The RuleSet columns a _Builder row holds, in order, with their dtypes (None: a tuple of str).
_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("keys", None),
    ("descriptions", None),
    ("subjects", None),
    ("kind", np.uint8),
    ("tag", np.int64),
    ("tag2", np.int64),
    ("set_at", np.float64),
    ("clear_at", np.float64),
    ("limit", np.float64),
    ("on_us", np.int64),
    ("off_us", np.int64),
    ("window_us", np.int64),
    ("band", np.float64),
    ("params", np.float64),
    ("severity", np.uint8),
    ("latched", bool),
)


def _assemble(b: _Builder, registry: TagRegistry, table: dict[str, list[Any]], ahead_us: int) -> RuleSet:
    columns = list(zip(*b.rows, strict=True)) if b.rows else [()] * len(_COLUMNS)
    cols: dict[str, Any] = {
        name: values if dtype is None else np.array(values, dtype)
        for (name, dtype), values in zip(_COLUMNS, columns, strict=True)
    }
    cols["params"] = cols["params"].reshape(-1, 4)
    keys = cols["keys"]
    if len(set(keys)) != len(keys):
        dupes = sorted(k for k, n in Counter(keys).items() if n > 1)
        raise RuleError(f"duplicate rule keys: {', '.join(dupes)}")
    inputs = table["inputs"]
    fe = table["fe"]
    interlocks = InterlockTable(
        keys=tuple(table["keys"]),
        names=tuple(table["names"]),
        m=np.array(table["m"], np.int64),
        in_service=np.array(table["in_service"], bool),
        fe_tag=np.array([f[0] for f in fe], np.int64),
        fe_safe=np.array([f[1] for f in fe], np.float64),
        fe_tol=np.array([f[2] for f in fe], np.float64),
        rule=np.array(table["rule"], np.int64).reshape(-1, len(INTERLOCK_KINDS)),
        ptr=np.array(table["ptr"], np.int64),
        in_tag=np.array([x[0] for x in inputs], np.int64),
        in_lo=np.array([x[1] for x in inputs], np.float64),
        in_hi=np.array([x[2] for x in inputs], np.float64),
        in_invert=np.array([x[3] for x in inputs], bool),
        in_bypass=np.array([x[4] for x in inputs], np.int64),
    )
    return RuleSet(**cols, tag_keys=registry.keys, interlocks=interlocks, ahead_us=ahead_us)
