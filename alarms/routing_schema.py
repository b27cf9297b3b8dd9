"""routes.yaml's grammar: durations, matchers, the keys of each part (pydantic, extra keys
refused). ``alarms.routing`` validates each part with these and cross-checks them; every
problem becomes a ConfigIssue at its file:line.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
)

from alarms.model import Priority
from alarms.roster import BaoBaoRole
from alarms.routing_model import (
    LABELS,
    Channel,
    GroupOptions,
    Matcher,
    QuietHours,
    TargetKind,
)
from core.errors import ConfigIssue
from core.plant import enum_name
from core.yaml_loader import PathKey, SourceMap

__all__ = [
    "MAX_DURATION_S",
    "Checker",
    "Node",
    "PolicyModel",
    "ReceiverModel",
    "parse_duration",
    "parse_matcher",
]

MAX_DURATION_S = 7 * 86400
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:\d+[smhd])+")
_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_KNOWN_VALUES = {"priority": [p.value for p in Priority], "gas": ["toxic", "combustible", "oxygen", "none"]}


def parse_duration(value: Any, *, zero: bool = True) -> int:
    """Seconds of a duration written as 30s, 2m, 1h, 1d or 1h30m: finite, at most 7 days,
    positive (or zero when ``zero``). ValueError saying what is wrong otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("a duration is written like 30s, 2m, 1h or 1d")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite duration")
    if not isinstance(value, str) and value < 0:
        raise ValueError(f"{value!r} is negative")
    if not isinstance(value, str):
        raise ValueError(f"{value!r} has no unit: write it like 30s, 2m, 1h or 1d")
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"{value!r} is negative")
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{value!r} is not a duration: write it like 30s, 2m, 1h or 1d")
    seconds = sum(int(n) * _UNIT_S[u] for n, u in re.findall(r"(\d+)([smhd])", text))
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is longer than 7d")
    if seconds == 0 and not zero:
        raise ValueError(f"{value!r} must be longer than 0s")
    return seconds


def parse_matcher(text: Any) -> Matcher:
    """``label = value``, ``label != value``, ``label =~ regex``, ``label !~ regex`` (value
    optionally in double quotes; a regex matches the whole value)."""
    m = _MATCHER.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a matcher: write label = value, != value, =~ regex or !~ regex")
    label, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r} (labels: {', '.join(LABELS)})")
    if op in ("=", "!=") and label in _KNOWN_VALUES and value not in _KNOWN_VALUES[label]:
        raise ValueError(f"{label} is never {value!r} (values: {', '.join(_KNOWN_VALUES[label])})")
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regular expression {value!r}: {exc}") from None
    return Matcher(label, op, value, pattern)


def _clock(value: Any) -> Any:
    if not isinstance(value, str) or not _CLOCK.fullmatch(value):
        raise ValueError(f"{value!r} is not a time of day: write it as HH:MM (24-hour, quoted)")
    return value


def _zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Shanghai)") from None
    return value


Wait = Annotated[int, BeforeValidator(lambda v: parse_duration(v, zero=True))]
Interval = Annotated[int, BeforeValidator(lambda v: parse_duration(v, zero=False))]
Name = Annotated[str, Field(min_length=1, pattern=r"^\S+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Quiet(_Model):
    start: Annotated[str, BeforeValidator(_clock)]
    end: Annotated[str, BeforeValidator(_clock)]
    timezone: Annotated[str, AfterValidator(_zone)] = "Asia/Shanghai"


class Node(_Model):
    receiver: Name | None = None
    matchers: list[Annotated[Matcher, BeforeValidator(parse_matcher)]] = []
    continue_: StrictBool = Field(False, alias="continue")
    group_wait: Wait | None = None
    group_interval: Interval | None = None
    repeat_interval: Interval | None = None
    send_resolved: StrictBool | None = None
    quiet_hours: _Quiet | None = None
    escalation: Name | None = None
    routes: list[Any] = []

    def options_over(self, inherited: GroupOptions) -> GroupOptions:
        """The route's options: each key it sets, else its parent's (``null``: the parent's,
        but ``quiet_hours: null`` ends inherited quiet hours)."""
        update: dict[str, Any] = {
            f"{k}_s": getattr(self, k)
            for k in ("group_wait", "group_interval", "repeat_interval")
            if getattr(self, k) is not None
        }
        if self.send_resolved is not None:
            update["send_resolved"] = self.send_resolved
        if self.escalation is not None:
            update["escalation"] = self.escalation
        if "quiet_hours" in self.model_fields_set:
            q = self.quiet_hours
            update["quiet_hours"] = (
                None
                if q is None
                else QuietHours(time.fromisoformat(q.start), time.fromisoformat(q.end), q.timezone)
            )
        return replace(inherited, **update)


class _Target(_Model):
    kind: TargetKind
    channels: list[Channel] | None = Field(None, min_length=1)
    level: Annotated[Literal["COUNTY", "CITY"], BeforeValidator(enum_name)] | None = None
    roles: list[Annotated[BaoBaoRole, BeforeValidator(enum_name)]] | None = Field(None, min_length=1)
    address: str | None = Field(None, min_length=1)


class ReceiverModel(_Model):
    name: Name
    targets: list[_Target] = Field(min_length=1)


class _Step(_Model):
    after: Wait
    receivers: list[Name] = Field(min_length=1)


class PolicyModel(_Model):
    critical: list[_Step] = []
    high: list[_Step] = []
    medium: list[_Step] = []
    low: list[_Step] = []


class Checker:
    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.issues: list[ConfigIssue] = []

    def issue(self, at: PathKey, message: str) -> None:
        self.issues.append(self.source.issue(at, message))

    def valid(self, model: type[_Model], data: Any, at: PathKey) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                msg = e["msg"].removeprefix("Value error, ")
                if e["type"] == "extra_forbidden":
                    msg = "unknown key (see docs/configuration.md, Routes)"
                elif e["type"] == "missing":
                    msg = "required key is missing"
                self.issue((*at, *(p for p in e["loc"] if p != "[key]")), msg)
            return None
