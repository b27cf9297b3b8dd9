"""What a message says: the standard template parameters of one alarm event or of a flood summary,
fitted to a channel's approved template (its variable names and per-variable length).

Standard parameters (every SMS/voice template picks the ones it names, docs/configuration.md):
``enterprise``, ``hazard_source``, ``tag`` (the tag's or interlock's name), ``condition`` (高高报警,
可燃气体二级报警, ...), ``priority`` (紧急 高 中 低), ``event`` (报警, 再次报警, 消警, 汇总),
``value`` and ``limit`` with the unit, ``time`` (MM-DD HH:MM:SS in Asia/Shanghai), ``action``
(请立即处置并反馈, or 已恢复正常), ``count`` (alarms in the message) and ``text`` (the whole Chinese
message). A value longer than the template allows is cut, ending in "…", never refused: a
shortened SMS beats none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from alarms.delivery_plan import Event
from alarms.model import AlarmDef, Priority

__all__ = ["PRIORITY_ZH", "STANDARD", "event_params", "fit", "summary_params"]

STANDARD = (
    "enterprise", "hazard_source", "tag", "condition", "priority", "event", "value", "limit", "time",
    "action", "count", "text",
)  # fmt: skip
PRIORITY_ZH = {"critical": "紧急", "high": "高", "medium": "中", "low": "低"}
_EVENT_ZH = {"raised": "报警", "reraised": "再次报警", "resolved": "消警", "summary": "汇总"}
_TZ = ZoneInfo("Asia/Shanghai")


def _time(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1e6, UTC).astimezone(_TZ).strftime("%m-%d %H:%M:%S")


def _number(v: float | None, unit: str) -> str:
    if v is None or math.isnan(v):
        return "—"
    return f"{v:g}{unit}" if unit else f"{v:g}"


def event_params(event: Event, alarm: AlarmDef | None) -> dict[str, str]:
    """The standard parameters of one alarm event (``alarm`` None: an alarm no longer configured,
    described from its labels)."""
    labels = event.labels
    if alarm is not None:
        enterprise, hazard_source = alarm.place
        tag, condition, unit = alarm.name, alarm.label, alarm.unit
    else:
        enterprise = labels.get("enterprise") or "—"
        hazard_source = labels.get("hazard_source") or "—"
        tag = labels.get("tag") or labels.get("interlock") or event.alarm_key
        condition, unit = labels.get("kind") or "—", ""
    resolved = event.event == "resolved"
    return {
        "enterprise": enterprise,
        "hazard_source": hazard_source,
        "tag": tag,
        "condition": condition,
        "priority": PRIORITY_ZH.get(event.priority, event.priority),
        "event": _EVENT_ZH.get(event.event, event.event),
        "value": _number(event.value, unit),
        "limit": _number(event.limit, unit),
        "time": _time(event.at_us),
        "action": "已恢复正常" if resolved else "请立即处置并反馈",
        "count": "1",
        "text": event.message_zh,
    }


def summary_params(members: Sequence[tuple[Event, AlarmDef | None]], now_us: int) -> dict[str, str]:
    """One message for several alarm events (a flood): counts and the worst alarm still raised
    (highest priority, then earliest), e.g. 共37条报警（紧急5 高12 中20），2条消警，最严重：1#罐
    可燃气体二级报警; the action asks for handling while any member is a raise."""

    def severity(m: tuple[Event, AlarmDef | None]) -> tuple[int, int]:
        return (-int(Priority(m[0].priority).severity), m[0].at_us)

    raised = [m for m in members if m[0].event != "resolved"]
    cleared = len(members) - len(raised)
    worst_event, worst_alarm = min(raised or members, key=severity)
    worst = event_params(worst_event, worst_alarm)
    counts: dict[str, int] = {}
    for e, _ in raised:
        counts[e.priority] = counts.get(e.priority, 0) + 1
    by = " ".join(f"{PRIORITY_ZH[p.value]}{counts[p.value]}" for p in Priority if p.value in counts)
    enterprises = {(a.place[0] if a else e.labels.get("enterprise") or "—") for e, a in members}
    sources = {(a.place[1] if a else e.labels.get("hazard_source") or "—") for e, a in members}
    what = f"共{len(raised)}条报警（{by}）" if raised else ""
    if cleared:
        what += f"{'，' if raised else ''}{cleared}条消警"
    if raised:
        text = (
            f"【报警汇总】{what}，最严重：{worst['enterprise']} {worst['hazard_source']} "
            f"{worst['tag']} {worst['condition']} {worst['value']}（{worst['time']}）。请立即处置并反馈"
        )
    else:
        text = (
            f"【消警汇总】{what}：{worst['enterprise']} {worst['hazard_source']} {worst['tag']} 等已恢复正常"
        )
    return {
        **worst,
        "enterprise": worst["enterprise"] if len(enterprises) == 1 else f"{len(enterprises)}家企业",
        "hazard_source": worst["hazard_source"] if len(sources) == 1 else f"{len(sources)}处危险源",
        "tag": what,
        "event": _EVENT_ZH["summary"],
        "time": _time(now_us),
        "count": str(len(members)),
        "action": "请立即处置并反馈" if raised else "已恢复正常",
        "text": text,
    }


def fit(
    params: Mapping[str, str], names: Sequence[str] | None, max_chars: int | None
) -> tuple[tuple[str, str], ...]:
    """The parameters a template names (all standard ones when ``names`` is None), each cut to
    ``max_chars`` with a trailing "…"; an empty value becomes "—" (providers refuse empty ones)."""
    out = []
    for name in names if names is not None else STANDARD:
        value = params.get(name, "") or "—"
        if max_chars is not None and len(value) > max_chars:
            value = value[: max(max_chars - 1, 0)] + "…" if max_chars > 1 else value[:max_chars]
        out.append((name, value))
    return tuple(out)
