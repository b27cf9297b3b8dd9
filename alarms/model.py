"""Alarm identity and content: one ``AlarmDef`` per rule (tag or interlock, level), and its text.

An alarm's ``key`` is its rule's key (``RuleSet.keys``: stable across restarts and config
edits); ``rule`` is the index in this compile only. Priority is the rule's severity, ordered by
``AlarmDef.order`` (GB/T 50493: level 2 over level 1, toxic over combustible at one level).
The ``Catalog`` of a compile costs nothing to build, even for a 650,000-rule province: its
lookup tables and each ``AlarmDef`` are made on first use and kept.

Message templates live here (``_EVENT_TEXT``, ``messages``), not in a file: they are the alarm
list's and the journal's text; SMS text is the notifiers' (approved gateway templates).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import NamedTuple, Protocol

import numpy as np

from alarms.rationale import SIF_DISABLED, Rationale, RationaleDefaults
from alarms.state import Action
from core.conditions import INTERLOCK_KINDS, LABELS, RuleKind, Severity, rank_of
from core.plant import (
    AlarmRationale,
    Detector,
    Enterprise,
    HazardSource,
    InterlockRationalization,
    Plant,
    Tag,
    TagKind,
    TagRationalization,
    resolve_key,
)

__all__ = ["SUPPRESSIBLE_KINDS", "AlarmDef", "Catalog", "Priority", "RuleColumns", "messages"]


class Priority(StrEnum):
    """ISA-18.2 priority, the rule's severity; compare alarms by ``AlarmDef.order``."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @classmethod
    def of(cls, severity: Severity) -> Priority:
        return _PRIORITY[severity]

    @property
    def severity(self) -> Severity:
        return Severity[self.name]


_PRIORITY = {s: Priority[s.name] for s in Severity}


class RuleColumns(Protocol):
    """What the catalog reads of a compiled ``rules.ruleset.RuleSet`` (alarms does not import rules)."""

    @property
    def keys(self) -> tuple[str, ...]: ...
    @property
    def subjects(self) -> tuple[str, ...]: ...
    @property
    def kind(self) -> np.ndarray: ...
    @property
    def severity(self) -> np.ndarray: ...
    @property
    def latched(self) -> np.ndarray: ...
    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class AlarmDef:
    key: str  # the rule's key (stable); an interlock's SIF-disabled alarm: HS.CODE.sif_disabled
    rule: int  # index in this compile; -1 for an alarm without a rule (SIF disabled)
    kind: RuleKind | None  # None: SIF disabled, which no rule raises (the manager does)
    priority: Priority
    rank: int  # rank_of(kind): orders alarms of one priority
    latching: bool
    subject: str  # tag key, or interlock key HAZARD_SOURCE.CODE
    # enterprise, county, hazard_source, unit (None for interlocks), tag or interlock, kind, priority
    labels: Mapping[str, str | None]
    name: str  # the tag's or interlock's name
    place: tuple[str, str]  # enterprise and hazard source names, for messages
    unit: str  # of the value and limit its messages report ("" when they have none)
    rationale: Rationale

    @property
    def label(self) -> str:
        """The condition as the plant's alarm lists name it (core.conditions.LABELS)."""
        return _SIF_LABEL[0] if self.kind is None else LABELS[self.kind]

    @property
    def order(self) -> tuple[int, int]:
        """Larger first: priority, then GB/T 50493's level (see core.conditions.rank_of)."""
        return int(self.priority.severity), self.rank


class _Subject(NamedTuple):
    """One tag or interlock: what its alarms' labels and rationale read."""

    enterprise: Enterprise
    hazard_source: HazardSource
    unit: str | None  # process unit code
    name: str
    tag: Tag | None
    overrides: TagRationalization | InterlockRationalization | None


# A tag's rationalization: key of each kind (core.plant.TagRationalization); gas levels by detector.
_TAG_NAMES = {
    RuleKind.LL: "ll",
    RuleKind.L: "l",
    RuleKind.H: "h",
    RuleKind.HH: "hh",
    RuleKind.GAS_L1: "level1",
    RuleKind.GAS_L2: "level2",
    RuleKind.O2_LOW: "level1",
    RuleKind.O2_HIGH: "level2",
    RuleKind.ROC: "rate",
    RuleKind.DEVIATION: "deviation",
    RuleKind.STATE: "state",
    RuleKind.MISMATCH: "mismatch",
    RuleKind.BAD_QUALITY: "bad_quality",
    RuleKind.STALE: "stale",
    RuleKind.OUT_OF_RANGE: "out_of_range",
    RuleKind.FROZEN: "frozen",
    RuleKind.CLOCK_AHEAD: "clock_ahead",
    **{k: k.name.lower() for k in INTERLOCK_KINDS},
}
# the unit of the value and limit an edge of each kind reports (rules/reference.py), when not the
# tag's: "" for none (states, votes, positions), seconds for delivery and clock checks
_SECONDS = frozenset({RuleKind.STALE, RuleKind.CLOCK_AHEAD})
_NO_UNIT = frozenset({RuleKind.BAD_QUALITY, RuleKind.STATE, *INTERLOCK_KINDS})


# What a unit's suppression by design (core.plant.SuppressWhen) hides: the process alarms, which
# a shut-down unit raises by being shut down (low flow, low level, pump stopped). Never hidden:
# gas detection (GAS_L1/GAS_L2, O2_LOW/O2_HIGH: a leak during a shutdown still matters, GB/T
# 50493), data quality and device faults (BAD_QUALITY, STALE, OUT_OF_RANGE, FROZEN, CLOCK_AHEAD,
# and MISMATCH: a valve or pump not following its command matters most while shutting down),
# interlock alarms (INTERLOCK_KINDS) and SIF disabled (no rule kind). Nor, whatever the kind
# (Catalog.suppressible): a latching alarm (a suppression would clear its latch: only an operator
# resets it, ISA-18.2), any alarm of a GAS tag (its rate or deviation is the leak's first
# sign), and any alarm of a safety function's input, bypass switch or final element (an ESD
# status or a valve failing to its safe position is what a shutdown must show).
SUPPRESSIBLE_KINDS = frozenset(
    {RuleKind.LL, RuleKind.L, RuleKind.H, RuleKind.HH, RuleKind.ROC, RuleKind.DEVIATION, RuleKind.STATE}
)


class Catalog:
    """The alarms of one compile: ``catalog[rule]``, ``by_key``, ``sif_disabled``; ``len`` and
    iteration are over the rules' alarms in rule order (``sif_alarms`` are the others).
    ``defaults`` (alarms.rationale.defaults_for): none gives empty rationales but overrides."""

    def __init__(self, plant: Plant, rules: RuleColumns, defaults: RationaleDefaults | None = None) -> None:
        self.plant = plant
        self.rules = rules
        self.defaults = defaults or RationaleDefaults()
        self._built: dict[int, AlarmDef] = {}
        self._sif: dict[str, AlarmDef] = {}
        self._suppressible: dict[str, tuple[AlarmDef, ...]] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[AlarmDef]:
        return (self[i] for i in range(len(self.rules)))

    def __getitem__(self, rule: int) -> AlarmDef:
        alarm = self._built.get(rule)
        if alarm is None:
            if not 0 <= rule < len(self.rules):
                raise IndexError(f"rule {rule} is not in this compile ({len(self.rules)} rules)")
            alarm = self._built[rule] = self._build(rule)
        return alarm

    def by_key(self, key: str) -> AlarmDef | None:
        """The alarm of a stable key (a rule's, or an interlock's SIF-disabled), None if unknown."""
        rule = self._index.get(key)
        if rule is not None:
            return self[rule]
        interlock, _, suffix = key.rpartition(".")
        if suffix == _SIF_SUFFIX and interlock in self._interlocks:
            return self.sif_disabled(interlock)
        return None

    def sif_alarms(self) -> Iterator[AlarmDef]:
        """Every interlock's SIF-disabled alarm, in plant order."""
        return (self.sif_disabled(k) for k in self._interlocks)

    def sif_disabled(self, interlock: str) -> AlarmDef:
        """The interlock's "SIF disabled" (安全仪表功能失效) alarm, which the manager raises when
        the effective voting drops to 0ooN: critical, routed as the highest gas alarms are; not
        latching (it clears when an input votes again)."""
        alarm = self._sif.get(interlock)
        if alarm is None:
            s = self._interlocks[interlock]
            rationale = self.defaults.of(SIF_DISABLED).overridden(
                getattr(s.overrides, "sif_disabled", None), f"{interlock} rationalization.sif_disabled"
            )
            priority = Priority.CRITICAL
            alarm = self._sif[interlock] = AlarmDef(
                key=f"{interlock}.{_SIF_SUFFIX}",
                rule=-1,
                kind=None,
                priority=priority,
                rank=0,
                latching=False,
                subject=interlock,
                labels=_labels(s, "interlock", interlock, SIF_DISABLED, priority),
                name=s.name,
                place=(s.enterprise.name, s.hazard_source.name),
                unit="",
                rationale=rationale,
            )
        return alarm

    def suppressible(self, unit: str) -> tuple[AlarmDef, ...]:
        """The alarms a suppression by design of ``unit`` (HAZARD_SOURCE.UNIT) hides, in rule
        order: those of ``SUPPRESSIBLE_KINDS`` on tags of the unit's equipment, not latching, not
        of a GAS tag nor of an interlock's input, bypass or final element. Empty for a unit that
        declares no ``suppress_when`` (only those are indexed: one pass over the rules)."""
        alarms = self._suppressible.get(unit)
        if alarms is None:
            alarms = self._suppressible[unit] = tuple(self[i] for i in self._suppressible_rules.get(unit, ()))
        return alarms

    def suppressing_unit(self, alarm: AlarmDef) -> str | None:
        """The unit (HAZARD_SOURCE.UNIT) whose suppression by design hides ``alarm``, if any."""
        if alarm.kind not in SUPPRESSIBLE_KINDS or alarm.latching:
            return None
        return self._suppressing_tags.get(alarm.subject)

    def suppress_when_of(self, unit: str) -> tuple[str, str]:
        """The key of the tag a unit's ``suppress_when`` reads and its reason."""
        return self._suppress_when[unit]

    # --- lookup tables, made on first use -------------------------------------------------

    @cached_property
    def _suppress_when(self) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for ent in self.plant.enterprises:
            for hs in ent.hazard_sources:
                by_code = {t.code: t.key for t in reversed(hs.tags)}
                for u in hs.units:
                    if (sw := u.suppress_when) is not None:
                        key = resolve_key(ent.code, sw.tag) if "." in sw.tag else by_code.get(sw.tag, sw.tag)
                        out[f"{hs.code}.{u.code}"] = (key, sw.reason)
        return out

    @cached_property
    def _index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.rules.keys)}

    @cached_property
    def _tags(self) -> dict[str, _Subject]:
        out = {}
        for ent in self.plant.enterprises:
            for hs in ent.hazard_sources:
                unit_of = {e.code: u.code for u in hs.units for e in u.equipment}
                for t in hs.tags:
                    out[t.key] = _Subject(ent, hs, unit_of.get(t.equipment), t.name, t, t.rationalization)
        return out

    @cached_property
    def _suppressing_tags(self) -> dict[str, str]:
        """Tag key -> HAZARD_SOURCE.UNIT, for the tags of units declaring ``suppress_when``
        whose alarms may be hidden: not GAS tags, not interlock inputs, bypasses, final elements."""
        out: dict[str, str] = {}
        for ent in self.plant.enterprises:
            for hs in ent.hazard_sources:
                unit_of = {
                    e.code: f"{hs.code}.{u.code}" for u in hs.units if u.suppress_when for e in u.equipment
                }
                if unit_of:
                    out.update(
                        (t.key, unit_of[t.equipment])
                        for t in hs.tags
                        if t.equipment in unit_of and t.kind != TagKind.GAS
                    )
        for key in self._safety_tags:
            out.pop(key, None)
        return out

    @cached_property
    def _safety_tags(self) -> set[str]:
        """The keys of every interlock's input, bypass switch and final element tags."""
        out: set[str] = set()
        for ent in self.plant.enterprises:
            for hs in ent.hazard_sources:
                for il in hs.interlocks:
                    refs = [il.final_element.tag]
                    refs += [r for i in il.inputs for r in (i.tag, i.bypass) if r is not None]
                    out.update(resolve_key(ent.code, r) for r in refs)
        return out

    @cached_property
    def _suppressible_rules(self) -> dict[str, list[int]]:
        tags = self._suppressing_tags
        out: dict[str, list[int]] = {}
        if not tags:
            return out
        kinds = np.asarray(self.rules.kind)
        subjects = self.rules.subjects
        hideable = np.isin(kinds, [int(k) for k in SUPPRESSIBLE_KINDS]) & ~np.asarray(
            self.rules.latched, bool
        )
        for i in np.flatnonzero(hideable).tolist():
            unit = tags.get(subjects[i])
            if unit is not None:
                out.setdefault(unit, []).append(i)
        return out

    @cached_property
    def _interlocks(self) -> dict[str, _Subject]:
        return {
            f"{hs.code}.{il.code}": _Subject(ent, hs, None, il.name, None, il.rationalization)
            for ent in self.plant.enterprises
            for hs in ent.hazard_sources
            for il in hs.interlocks
        }

    def _build(self, rule: int) -> AlarmDef:
        kind = RuleKind(int(self.rules.kind[rule]))
        subject = self.rules.subjects[rule]
        priority = Priority.of(Severity(int(self.rules.severity[rule])))
        tag_rule = kind not in INTERLOCK_KINDS
        s = self._tags[subject] if tag_rule else self._interlocks[subject]
        detector = s.tag.gas.detector if s.tag and s.tag.kind == TagKind.GAS and s.tag.gas else None
        name = _TAG_NAMES[kind]
        given: AlarmRationale | None = getattr(s.overrides, name, None)
        rationale = self.defaults.of(kind.name, Detector(detector) if detector else None)
        return AlarmDef(
            key=self.rules.keys[rule],
            rule=rule,
            kind=kind,
            priority=priority,
            rank=rank_of(kind),
            latching=bool(self.rules.latched[rule]),
            subject=subject,
            labels=_labels(s, "tag" if tag_rule else "interlock", subject, kind.name, priority),
            name=s.name,
            place=(s.enterprise.name, s.hazard_source.name),
            unit=_unit(kind, s.tag),
            rationale=rationale.overridden(given, f"{subject} rationalization.{name}"),
        )


_SIF_SUFFIX = "sif_disabled"


def _labels(s: _Subject, what: str, subject: str, kind: str, priority: Priority) -> Mapping[str, str | None]:
    return MappingProxyType(
        {
            "enterprise": s.enterprise.code,
            "county": s.enterprise.county,
            "hazard_source": s.hazard_source.code,
            "unit": s.unit,
            what: subject,
            "kind": kind,
            "priority": priority.value,
        }
    )


def _unit(kind: RuleKind, tag: Tag | None) -> str:
    if kind in _SECONDS:
        return "s"
    if tag is None or kind in _NO_UNIT:
        return ""
    return f"{tag.unit}/min" if kind == RuleKind.ROC and tag.unit else tag.unit


# --- messages ----------------------------------------------------------------------------

# what happened, by state-machine action: (zh, en); 消警 is the national platform's word for clearing
_EVENT_TEXT: dict[Action, tuple[str, str]] = {
    Action.RAISED: ("报警", "alarm"),
    Action.RERAISED: ("再次报警", "alarm again"),
    Action.RETURNED: ("恢复待确认", "returned, unacknowledged"),
    Action.CLEARED: ("消警", "cleared"),
    Action.ACKED: ("已确认", "acknowledged"),
    Action.RESET: ("已复位", "reset"),
    Action.SHELVED: ("已搁置", "shelved"),
    Action.UNSHELVED: ("取消搁置", "unshelved"),
    Action.SHELVE_EXPIRED: ("搁置到期", "shelving expired"),
    Action.SUPPRESSED: ("已抑制", "suppressed by design"),
    Action.UNSUPPRESSED: ("解除抑制", "unsuppressed"),
    Action.REMOVED: ("已停用", "removed from service"),
    Action.RESTORED: ("恢复投用", "returned to service"),
    Action.CONDITION: ("状态变化（未显示）", "condition changed while hidden"),
}
_SIF_LABEL = ("安全仪表功能失效", "SIF disabled")


def _number(v: float, unit: str) -> str:
    if math.isnan(v):
        return "—"
    return f"{v:g} {unit}" if unit else f"{v:g}"


def messages(alarm: AlarmDef, event: Action, value: float, limit: float) -> tuple[str, str]:
    """The alarm's text in Chinese and English: where (enterprise and hazard source names), what
    (tag name and key, condition), the event, and value and limit with the alarm's unit (NaN
    shown as "—")."""
    zh_event, en_event = _EVENT_TEXT[event]
    zh_label, en_label = alarm.label, _SIF_LABEL[1] if alarm.kind is None else alarm.kind.name
    where, (ent, hs) = alarm.labels, alarm.place
    v, lim = _number(value, alarm.unit), _number(limit, alarm.unit)
    zh = f"【{zh_event}】{ent} {hs} {alarm.name}（{alarm.subject}）{zh_label}：当前值 {v}，限值 {lim}"
    en = (
        f"[{en_event}] {where['enterprise']} {where['hazard_source']} {alarm.subject} ({alarm.name}): "
        f"{en_label}, value {v}, limit {lim} ({alarm.priority.value})"
    )
    return zh, en
