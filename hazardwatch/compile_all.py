"""Compile a plant into everything ``run`` builds before it touches the database.

Invariant (issue 9): a config that ``hazardwatch check`` accepts compiles. ``check`` and
``Runtime.start`` call the same ``compile_plant``: the tag registry, the rule set and its
engine, and every source with its read plan (Modbus requests, OPC UA points). Building a
source only stores settings: nothing here connects, listens or writes a file, so ``check``
can run it anywhere.

The config model should refuse whatever would make a step fail. Where it does not,
``compile_checked`` still turns the failure into a config error at a ``file:line``: the
innermost tag, interlock or device the failing step was working on (read from the frames of
the traceback), narrowed to one of its numbers (or its device's) that is non-finite or past
every bound, else to a key written without a value — never a traceback, never "config OK".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from alarms.delivery_setup import DeliverySetup
from alarms.rationale import RationaleDefaults
from collector.base import Source
from collector.factory import build_sources
from core.clock import Clock, SystemClock
from core.errors import ConfigError, ConfigIssue, HazardWatchError
from core.plant import Interlock, ModbusDevice, OpcUaDevice, Plant, Tag
from core.registry import TagRegistry
from core.yaml_loader import PathKey, SourceMap
from rules import RuleEngine
from rules.compile import compile_rules

__all__ = ["CompileError", "Compiled", "compile_checked", "compile_plant"]

# Beyond every bound of the config model (values at most ±1e15, docs/configuration.md
# "Bounds"): a number past it can only have slipped through, so it is the likely culprit.
_ABSURD = 1e15
_Subject = Tag | Interlock | ModbusDevice | OpcUaDevice
_PRECEDENCE = (Tag, Interlock, ModbusDevice, OpcUaDevice)


@dataclass(frozen=True)
class Compiled:
    """What a run needs from the config, built once, before any connection is made."""

    registry: TagRegistry
    engine: RuleEngine
    sources: tuple[Source, ...]
    # the plant's alarm rationalization defaults (its reference folder's rationalization.yaml),
    # read by load_compiled_or_exit, which knows where the plant file is
    rationale: RationaleDefaults = field(default_factory=RationaleDefaults)
    # routes, channels and rosters beside the plant (alarms.delivery_setup); None: no routes.yaml
    delivery: DeliverySetup | None = None


class CompileError(HazardWatchError):
    """A validated plant failed to compile: ``stage`` failed on ``subject`` (None: unknown)."""

    def __init__(self, stage: str, subject: _Subject | None, cause: Exception) -> None:
        self.stage, self.subject, self.cause = stage, subject, cause
        what = f" ({_describe(subject)})" if subject is not None else ""
        super().__init__(f"compiling {stage}{what} failed: {_why(cause)}")


def compile_plant(plant: Plant, clock: Clock | None = None, pki_dir: str = "var/pki") -> Compiled:
    """Registry, rules and sources of ``plant``; raises CompileError, whatever went wrong."""
    stage = "the tag registry"
    try:
        registry = TagRegistry.from_plant(plant)
        stage = "rules"
        engine = RuleEngine(compile_rules(plant, registry))
        stage = "sources and read plans"
        sources = build_sources(plant, registry, clock or SystemClock(), pki_dir)
    except Exception as exc:  # any failure here is a config the model should have refused
        raise CompileError(stage, _subject(exc), exc) from exc
    return Compiled(registry, engine, tuple(sources))


def compile_checked(
    plant: Plant, source: SourceMap, clock: Clock | None = None, pki_dir: str = "var/pki"
) -> Compiled:
    """``compile_plant``, with a failure reported as a ConfigError at its file:line."""
    try:
        return compile_plant(plant, clock, pki_dir)
    except CompileError as exc:
        raise ConfigError([_issue(plant, source, exc)]) from exc


# --- where a failure is --------------------------------------------------------------


def _subject(exc: BaseException) -> _Subject | None:
    """The innermost tag, interlock or device held by a frame of the failing call."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        held = [
            item
            for value in frame.f_locals.values()
            for item in (value if isinstance(value, tuple) else (value,))
            if isinstance(item, _Subject)
        ]
        if held:  # a frame walking a device's tags holds both: the tag is the narrower place
            return min(held, key=lambda item: _PRECEDENCE.index(type(item)))
    return None


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _describe(subject: _Subject) -> str:
    if isinstance(subject, Tag):
        return f"tag {subject.key}"
    if isinstance(subject, Interlock):
        return f"interlock {subject.code}"
    return f"device {subject.id}"


def _paths(plant: Plant) -> Iterator[tuple[PathKey, _Subject]]:
    for e, ent in enumerate(plant.enterprises):
        for d, dev in enumerate(ent.devices):
            yield ("enterprises", e, "devices", d), dev
        for h, hs in enumerate(ent.hazard_sources):
            at: PathKey = ("enterprises", e, "hazard_sources", h)
            for t, tag in enumerate(hs.tags):
                yield (*at, "tags", t), tag
            for i, il in enumerate(hs.interlocks):
                yield (*at, "interlocks", i), il


def _absurd(value: Any, at: PathKey) -> Iterator[tuple[PathKey, Any]]:
    """Numbers under ``value`` (a dumped model) that are non-finite or absurdly large."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _absurd(v, (*at, k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _absurd(v, (*at, i))
    elif (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not math.isfinite(value) or abs(value) > _ABSURD)
    ):
        yield at, value


def _nulls(value: Any, at: PathKey) -> Iterator[PathKey]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from ((*at, k),) if v is None else _nulls(v, (*at, k))


def _issue(plant: Plant, source: SourceMap, exc: CompileError) -> ConfigIssue:
    reason = f"cannot be compiled ({exc.stage}: {_why(exc.cause)})"
    paths = {id(obj): path for path, obj in _paths(plant)}
    subject = exc.subject
    if subject is None or id(subject) not in paths:
        return source.issue((), f"the plant {reason}")
    where = paths[id(subject)]
    # The failing step names the object it was compiling; the culprit may be one of its
    # numbers, or one of its device's (a tag's stale time comes from its poll interval).
    suspects = [(where, subject)]
    if isinstance(subject, Tag):
        device = next((d for d in plant.devices() if d.id == subject.source.device), None)
        if device is not None and id(device) in paths:
            suspects.append((paths[id(device)], device))
    for at, obj in suspects:
        for path, value in _absurd(obj.model_dump(exclude_none=True), at):
            return source.issue(path, f"{value!r} is out of any sane range: {_describe(subject)} {reason}")
    for at, obj in suspects:  # then a key written with no value (``type:``, ``address: null``)
        for path in _nulls(obj.model_dump(), at):
            if source.has_line(path):
                return source.issue(path, f"has no value: {_describe(subject)} {reason}")
    return source.issue(where, f"{_describe(subject)} {reason}")
