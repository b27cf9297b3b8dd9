"""The terminal live view (rich): hazard sources with key values, collectors, alarms, historian.

A pure function of the runtime's state, so it renders the same in the demo and in tests.
Values that are not GOOD are shown with their quality name, never as if they were fine.
Alarms are listed as an operator's alarm list orders them (ISA-18.2): those awaiting
acknowledgement first and flashing, then by priority and GB/T 50493 rank, newest first;
one line each, so the list stays short enough to read at a glance.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from alarms.journal import AlarmRow
from alarms.model import Catalog, Priority
from alarms.state import ANNUNCIATED, Status
from core.clock import US_PER_S, to_datetime
from core.plant import Tag, TagKind
from core.quality import Quality, name_of
from hazardwatch.runtime import Runtime

__all__ = ["alarm_lines", "render_view"]

KEY_KINDS = (TagKind.GAS, TagKind.PRESSURE, TagKind.LEVEL, TagKind.TEMPERATURE, TagKind.FLOW)
KEY_VALUES_PER_SOURCE = 5
MAX_CONDITIONS = 20
MAX_ALARMS = 15

# (zh, short en, style) of the priority column and the count line
_PRIORITY_TEXT = {
    Priority.CRITICAL: ("紧急", "crit", "bold red"),
    Priority.HIGH: ("高", "high", "red"),
    Priority.MEDIUM: ("中", "med", "yellow"),
    Priority.LOW: ("低", "low", "cyan"),
}
_STATUS_TEXT = {
    Status.UNACK: ("未确认", "unack"),
    Status.ACKED: ("已确认", "ack"),
    Status.RTN_UNACK: ("未确认恢复", "RTN unack"),
    Status.LATCHED: ("保持", "latched"),
}
# not on the list, but an operator must know they are there (ISA-18.2 keeps them visible as counts)
_HIDDEN_TEXT = {
    Status.SHELVED: "搁置 shelved",
    Status.SUPPRESSED: "抑制 suppressed",
    Status.OUT_OF_SERVICE: "停用 OOS",  # out of service
}
AWAITING_ACK = "blink bold"  # flashing, as an annunciator panel flashes until acknowledged


def _value(value: float, quality: int, unit: str) -> Text:
    if quality == Quality.GOOD:
        return Text(f"{value:.4g}{unit}")
    if quality == Quality.BAD_LAST_KNOWN and value != value:
        return Text("…", style="dim")  # nothing received yet
    shown = "—" if value != value else f"{value:.4g}{unit}"
    return Text(f"{shown} {name_of(quality)}", style="bold red" if quality < 0x40 else "yellow")


def render_view(runtime: Runtime) -> RenderableType:
    reg, live = runtime.registry, runtime.live
    plant = runtime.plant
    sources = Table(title="重大危险源 hazard sources", expand=True)
    for col in ("enterprise", "hazard source", "key values", "quality"):
        sources.add_column(col, overflow="fold")
    index = 0
    for ent in plant.enterprises:
        for hs in ent.hazard_sources:
            idx = list(range(index, index + len(hs.tags)))
            index += len(hs.tags)
            keyed = sorted(
                (i for i in idx if reg.tags[i].kind in KEY_KINDS),
                key=lambda i: KEY_KINDS.index(reg.tags[i].kind),
            )
            values = Text()
            for i in keyed[:KEY_VALUES_PER_SOURCE]:
                tag = reg.tags[i]
                values.append(f"{tag.name} ")
                values.append(_value(float(live.value[i]), int(live.quality[i]), tag.unit))
                values.append("  ")
            good = sum(int(live.quality[i]) == Quality.GOOD for i in idx)
            style = "green" if good == len(idx) else "yellow" if good else "red"
            sources.add_row(
                ent.name, f"{hs.name} ({hs.grade}级)", values, Text(f"{good}/{len(idx)} GOOD", style=style)
            )
    collectors = Table(title="collectors", expand=True)
    for col in ("device", "state", "reads", "readings", "errors", "reconnects", "last error"):
        collectors.add_column(col, overflow="fold")
    for r in runtime.runners:
        s = r.stats
        collectors.add_row(
            r.source.name,
            Text(s.state, style="green" if s.state == "ok" else "bold red"),
            str(s.reads),
            str(s.readings),
            str(s.errors),
            str(s.reconnects),
            s.last_error if s.state != "ok" else "",
        )
    parts: list[RenderableType] = [sources, collectors]
    if runtime.alarms is not None:
        alarms = runtime.alarms
        parts.append(alarm_lines(alarms.manager.alarms.values(), alarms.catalog, runtime.clock.now_us()))
    elif runtime.rules is not None:
        parts.append(_conditions(runtime))
    if runtime.writer is not None:
        m = runtime.writer.metrics()
        parts.append(
            Text(
                f"historian: {'up' if m['db_up'] else 'DOWN (spooling)'}  stored {m['written_rows'] + m['drained_rows']} rows "
                f"({m['drained_rows']} from the spool)  "
                f"spool {m['pending_batches']} batches / {m['pending_bytes']} B  dropped {m['dropped_rows']} rows",
                style="green" if m["db_up"] else "bold red",
            )
        )
    return Group(*parts)


def _conditions(runtime: Runtime) -> Table:
    """The rule engine's active conditions: what the view shows before the alarm service runs."""
    assert runtime.rules is not None
    reg = runtime.registry
    active = Table(title="active conditions (rule engine)", expand=True)
    for col in ("tag / interlock", "name", "condition", "value", "limit", "since (UTC)"):
        active.add_column(col, overflow="fold")
    for c in runtime.rules.engine.active()[:MAX_CONDITIONS]:
        subject: Tag | None = reg.tags[reg.index_of(c.subject)] if c.subject in reg else None
        unit = subject.unit if subject is not None else ""
        active.add_row(
            c.subject,
            subject.name if subject is not None else c.description,
            Text(f"{c.kind.name} {c.severity.name}", style="bold red" if c.severity >= 3 else "yellow"),
            f"{c.value:.4g}{unit}",
            f"{c.limit:.4g}{unit}",
            to_datetime(c.since_us).strftime("%H:%M:%S"),
        )
    return active


def alarm_lines(
    rows: Iterable[AlarmRow], catalog: Catalog, now_us: int, max_lines: int = MAX_ALARMS
) -> RenderableType:
    """The alarm list: annunciated alarms one line each, awaiting acknowledgement first (flashing),
    then by priority and rank (``AlarmDef.order``), newest first; at most ``max_lines`` of them and
    "+K more"; then the count per priority and of the hidden statuses (shelved, suppressed, out of
    service). An alarm no longer in ``catalog`` (config edited) is listed from its row alone."""
    listed: list[tuple[tuple[bool, int, int, int], AlarmRow]] = []
    hidden = dict.fromkeys(_HIDDEN_TEXT, 0)
    for row in rows:
        status = Status(row.status)
        if status in hidden:
            hidden[status] += 1
        elif status in ANNUNCIATED:
            alarm = catalog.by_key(row.key)
            severity, rank = alarm.order if alarm else (int(Priority(row.priority).severity), 0)
            listed.append(((not row.acked, severity, rank, _raised(row)), row))
    listed.sort(key=lambda e: e[0], reverse=True)
    counts = dict.fromkeys(Priority, 0)
    for _, row in listed:
        counts[Priority(row.priority)] += 1
    summary = Text(" · ".join(f"{zh} {en} {counts[p]}" for p, (zh, en, _) in _PRIORITY_TEXT.items()))
    summary.append(" │ " + " · ".join(f"{text} {hidden[s]}" for s, text in _HIDDEN_TEXT.items()), style="dim")
    if not listed:
        return Group(Text("报警 alarms: 无报警 none", style="green"), summary)
    table = Table(title="报警 alarms", expand=True, box=None, padding=(0, 1), pad_edge=False)
    # status and tag give way when the terminal is narrow (cut with "…", never wrapped: one line
    # per alarm); the other columns are short and keep their width
    for col in ("priority", "status", "tag", "condition", "value / limit", "age"):
        table.add_column(col, no_wrap=col not in ("status", "tag"))
    for _, row in listed[:max_lines]:
        table.add_row(*_alarm_cells(row, catalog, now_us), style=AWAITING_ACK if not row.acked else None)
    parts: list[RenderableType] = [table]
    if len(listed) > max_lines:
        parts.append(Text(f"+{len(listed) - max_lines} more 另有 {len(listed) - max_lines} 条", style="bold"))
    action = _action(listed[0][1], catalog)
    if action is not None:
        parts.append(action)
    parts.append(summary)
    return Group(*parts)


def _action(row: AlarmRow, catalog: Catalog) -> Text | None:
    """The corrective action (处置措施) of the alarm at the top of the list, with its allowed
    response time, from the rationalization (alarms.rationale): what the operator does now."""
    alarm = catalog.by_key(row.key)
    if alarm is None or not alarm.rationale.action:
        return None
    r = alarm.rationale
    text = Text("处置 action ", style="bold")
    text.append(f"{alarm.name or alarm.subject} {alarm.label}: ", style="bold")
    text.append(r.action)
    if r.response_s is not None:
        text.append(f"（{_age(round(r.response_s * 1_000_000))} 内响应 respond within）", style="dim")
    return text


def _raised(row: AlarmRow) -> int:
    """When the alarm was raised: its age, and "newest" in the list's order."""
    return row.raised_at_us if row.raised_at_us is not None else row.since_us


def _alarm_cells(row: AlarmRow, catalog: Catalog, now_us: int) -> tuple[Text, Text, Text, str, str, str]:
    alarm = catalog.by_key(row.key)
    zh, en, style = _PRIORITY_TEXT[Priority(row.priority)]
    status_zh, status_en = _STATUS_TEXT[Status(row.status)]
    if row.status == Status.LATCHED and not row.acked:
        status_zh, status_en = f"{status_zh}未确认", "latch unack"
    name, label, unit = (alarm.name, alarm.label, alarm.unit) if alarm else ("", row.kind, "")
    tag = Text(f"{name} " if name else "", no_wrap=True, overflow="ellipsis")
    tag.append(row.subject, style="dim")
    value = f"{_number(row.value)} / {_number(row.limit)}" + (f" {unit}" if unit else "")
    status = Text(f"{status_zh} {status_en}", no_wrap=True, overflow="ellipsis")
    return Text(f"{zh} {en}", style=style), status, tag, label, value, _age(now_us - _raised(row))


def _number(v: float) -> str:
    return "—" if v != v else f"{v:.4g}"


def _age(us: int) -> str:
    s = max(0, us) // US_PER_S
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
