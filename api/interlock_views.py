"""Interlocks as the API shows them: configured and effective MooN voting from the latest values.

Pure functions of the plant and the tag_latest rows (no database here). The voting mirrors
rules/interlock.py, which api may not import: an input bypassed (its switch's value >= 0.5) or
failed (BAD quality, or never reported) drops out of the vote, so a 2oo3 with one input out is
2oo2, and the effective M is min(M, inputs left); a function with no input left, or out of
service, cannot trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from core.plant import Enterprise, HazardSource, Interlock, Plant, resolve_key
from core.quality import is_bad

__all__ = [
    "BYPASS_ON",
    "Defined",
    "FinalElementView",
    "InputView",
    "InterlockView",
    "Latest",
    "Voting",
    "defined_interlocks",
    "effective_voting",
    "interlock_view",
    "tag_keys",
    "trips",
]

BYPASS_ON = 0.5  # a bypass switch at or above this is on (1 = bypassed), as the SIS reads it


@dataclass(frozen=True, slots=True)
class Latest:
    """A tag's newest reading (tag_latest)."""

    value: float
    quality: int
    time: datetime


@dataclass(frozen=True, slots=True)
class Defined:
    """One configured interlock with where it sits."""

    key: str  # HAZARD_SOURCE.CODE, as alarms.model.Catalog keys interlocks
    enterprise: Enterprise
    hazard_source: HazardSource
    interlock: Interlock

    @property
    def input_keys(self) -> list[str]:
        return [resolve_key(self.enterprise.code, i.tag) for i in self.interlock.inputs]


def defined_interlocks(plant: Plant | None) -> Iterator[Defined]:
    """Every interlock of the plant, in plant order (none without a plant)."""
    if plant is None:
        return
    for ent in plant.enterprises:
        for hs in ent.hazard_sources:
            for il in hs.interlocks:
                yield Defined(f"{hs.code}.{il.code}", ent, hs, il)


def tag_keys(d: Defined) -> set[str]:
    """Every tag the interlock reads: inputs, bypass switches, final element."""
    ent = d.enterprise.code
    keys = {resolve_key(ent, d.interlock.final_element.tag)}
    for i in d.interlock.inputs:
        keys.add(resolve_key(ent, i.tag))
        if i.bypass:
            keys.add(resolve_key(ent, i.bypass))
    return keys


def trips(op: str, value: float, limit: float) -> bool:
    """Does ``value op limit`` hold (the input's trip condition)?"""
    match op:
        case ">":
            return value > limit
        case ">=":
            return value >= limit
        case "<":
            return value < limit
        case "<=":
            return value <= limit
        case "==":
            return value == limit
        case "!=":
            return value != limit
    raise ValueError(f"op: unknown comparison {op!r}")


@dataclass(frozen=True, slots=True)
class Voting:
    configured: str  # MooN as configured
    effective: str  # min(M, n)oo n, n = inputs neither bypassed nor failed
    m: int
    n: int
    can_vote: int
    votes: int  # voting inputs whose trip condition holds
    demand: bool  # the effective vote is met
    can_trip: bool
    degraded: bool  # some input is out of the vote (or the function is out of service)


def effective_voting(voting: str, out: list[bool], tripping: list[bool], in_service: bool = True) -> Voting:
    """The vote of ``voting`` (MooN) with the inputs flagged ``out`` (bypassed or failed)
    dropped, and ``tripping`` those whose condition holds (counted only if not out)."""
    m_text, _, n_text = voting.partition("oo")
    m, n = int(m_text), int(n_text)
    can_vote = sum(1 for o in out if not o)
    votes = sum(1 for o, t in zip(out, tripping, strict=True) if t and not o)
    m_eff = min(m, can_vote)
    able = in_service and can_vote > 0
    return Voting(
        configured=voting,
        effective=f"{m_eff}oo{can_vote}",
        m=m,
        n=n,
        can_vote=can_vote,
        votes=votes,
        demand=able and votes >= m_eff,
        can_trip=able,
        degraded=not in_service or can_vote < n,
    )


# --- response models ------------------------------------------------------------------


class InputView(BaseModel):
    tag: str = Field(description="the input's tag key (ENTERPRISE.EQUIPMENT.CODE)")
    name: str
    op: str
    trip_value: float
    value: float | None = Field(description="latest value; null when the tag never reported")
    quality: int | None = Field(description="latest quality byte (OPC DA style: 0xC0 good)")
    time: datetime | None
    tripped: bool = Field(description="the trip condition holds on the latest valid value")
    failed: bool = Field(description="BAD quality, or never reported: out of the vote")
    bypass_switch: str | None = Field(description="the bypass switch's tag key, if the input has one")
    bypass_switch_value: float | None
    bypassed: bool = Field(description="the bypass switch is on (value >= 0.5): out of the vote")
    votes: bool = Field(description="in the vote and its trip condition holds")


class FinalElementView(BaseModel):
    tag: str
    name: str
    safe_value: float
    tolerance: float
    value: float | None
    quality: int | None
    time: datetime | None
    valid: bool = Field(description="a reading of good or uncertain quality")
    safe: bool = Field(description="valid and within tolerance of the safe position")


class InterlockView(BaseModel):
    key: str = Field(description="HAZARD_SOURCE.CODE")
    code: str
    name: str
    enterprise: str
    county: str
    hazard_source: str
    hazard_source_name: str
    in_service: bool
    voting: str = Field(description="configured MooN")
    effective_voting: str = Field(description="MooN with bypassed and failed inputs out, e.g. 2oo2")
    can_vote: int = Field(description="inputs neither bypassed nor failed")
    votes: int
    demand: bool = Field(description="the effective vote is met on the latest values")
    can_trip: bool = Field(description="in service and at least one input left to vote")
    degraded: bool = Field(description="an input is out of the vote, or the function is out of service")
    cannot_trip: bool
    bypassed_inputs: list[str]
    failed_inputs: list[str]
    response_s: float
    max_bypass_h: float = Field(description="the longest bypass a permit may grant")
    inputs: list[InputView]
    final_element: FinalElementView


def interlock_view(d: Defined, latest: dict[str, Latest], tag_names: dict[str, str]) -> InterlockView:
    """The interlock now, from the latest readings by tag key (absent: never reported)."""
    il, ent = d.interlock, d.enterprise.code
    inputs: list[InputView] = []
    for inp in il.inputs:
        key = resolve_key(ent, inp.tag)
        r = latest.get(key)
        failed = r is None or bool(is_bad(r.quality))
        switch = resolve_key(ent, inp.bypass) if inp.bypass else None
        s = latest.get(switch) if switch else None
        bypassed = s is not None and s.value >= BYPASS_ON
        tripped = r is not None and not failed and trips(inp.op, r.value, float(inp.value))
        inputs.append(
            InputView(
                tag=key,
                name=tag_names.get(key, key),
                op=inp.op,
                trip_value=float(inp.value),
                value=r.value if r else None,
                quality=r.quality if r else None,
                time=r.time if r else None,
                tripped=tripped,
                failed=failed,
                bypass_switch=switch,
                bypass_switch_value=s.value if s else None,
                bypassed=bypassed,
                votes=tripped and not bypassed,
            )
        )
    v = effective_voting(
        il.voting, [i.bypassed or i.failed for i in inputs], [i.tripped for i in inputs], il.in_service
    )
    fe = il.final_element
    fe_key = resolve_key(ent, fe.tag)
    r = latest.get(fe_key)
    valid = r is not None and not bool(is_bad(r.quality))
    return InterlockView(
        key=d.key,
        code=il.code,
        name=il.name,
        enterprise=ent,
        county=d.enterprise.county,
        hazard_source=d.hazard_source.code,
        hazard_source_name=d.hazard_source.name,
        in_service=il.in_service,
        voting=v.configured,
        effective_voting=v.effective,
        can_vote=v.can_vote,
        votes=v.votes,
        demand=v.demand,
        can_trip=v.can_trip,
        degraded=v.degraded,
        cannot_trip=not v.can_trip,
        bypassed_inputs=[i.tag for i in inputs if i.bypassed],
        failed_inputs=[i.tag for i in inputs if i.failed and not i.bypassed],
        response_s=il.response_s,
        max_bypass_h=il.max_bypass_h,
        inputs=inputs,
        final_element=FinalElementView(
            tag=fe_key,
            name=tag_names.get(fe_key, fe_key),
            safe_value=float(fe.safe_value),
            tolerance=float(fe.tolerance),
            value=r.value if r else None,
            quality=r.quality if r else None,
            time=r.time if r else None,
            valid=valid,
            safe=valid and r is not None and abs(r.value - float(fe.safe_value)) <= fe.tolerance,
        ),
    )
