"""The terminal live view (rich): hazard sources with key values, collectors, historian.

A pure function of the runtime's state, so it renders the same in the demo and in tests.
Values that are not GOOD are shown with their quality name, never as if they were fine.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from core.clock import to_datetime
from core.plant import Tag, TagKind
from core.quality import Quality, name_of
from hazardwatch.runtime import Runtime

__all__ = ["render_view"]

KEY_KINDS = (TagKind.GAS, TagKind.PRESSURE, TagKind.LEVEL, TagKind.TEMPERATURE, TagKind.FLOW)
KEY_VALUES_PER_SOURCE = 5
MAX_CONDITIONS = 20


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
    if runtime.rules is not None:
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
        parts.append(active)
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
