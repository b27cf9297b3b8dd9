"""Prometheus text exposition of collector health: ``Metric`` rows and ``render``.

``source_metrics`` renders every collector runner: link and device health, counters, and the
protocol detail its source reports (Modbus units and request groups). The process serves
them, with the other components' metrics, from hazardwatch/metrics_server.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.base import CollectorRunner

__all__ = ["Metric", "render", "source_metrics"]

# (name, help, type, [(labels, value)])
Metric = tuple[str, str, str, list[tuple[dict[str, str], float]]]


# Protocol detail a source may report (SourceHealth.samples): name -> (help, type).
_DETAIL = {
    "hazardwatch_modbus_unit_up": ("1 while the Modbus unit answers.", "gauge"),
    "hazardwatch_modbus_unit_consecutive_failures": ("Polls in a row the unit did not answer.", "gauge"),
    "hazardwatch_modbus_unit_last_success_timestamp_seconds": (
        "Unix time of the unit's last answer (0: never).",
        "gauge",
    ),
    "hazardwatch_modbus_request_errors_total": ("Failed read requests per request group.", "counter"),
}


def source_metrics(runners: Sequence[CollectorRunner]) -> Iterable[Metric]:
    """Every collector runner's health and counters, plus its source's protocol detail."""
    healths = [r.health() for r in runners]  # once per runner: a source may compute it
    rows = [(r.source.name, r.stats, h, r.up_with(h)) for r, h in zip(runners, healths, strict=True)]
    yield (
        "hazardwatch_source_up",
        "1 when the source's link works and every device behind it answers with live data.",
        "gauge",
        [({"source": n}, float(up)) for n, _, _, up in rows],
    )
    yield (
        "hazardwatch_source_readings_total",
        "Readings collected per source.",
        "counter",
        [({"source": n}, float(s.readings)) for n, s, _, _ in rows],
    )
    yield (
        "hazardwatch_source_errors_total",
        "Failed reads, connects and requests (a silent unit, a failed chunk) per source.",
        "counter",
        [({"source": n}, float(s.errors + h.request_errors)) for n, s, h, _ in rows],
    )
    yield (
        "hazardwatch_source_reconnects_total",
        "Reconnect attempts per source.",
        "counter",
        [({"source": n}, float(s.reconnects)) for n, s, _, _ in rows],
    )
    yield (
        "hazardwatch_source_restarts_total",
        "Collector loops restarted after an unexpected end (a bug or a library fault).",
        "counter",
        [({"source": n}, float(s.restarts)) for n, s, _, _ in rows],
    )
    yield (
        "hazardwatch_source_last_outage_seconds",
        "Length of the last outage, from the last good read to the first data again.",
        "gauge",
        [({"source": n}, s.last_outage_s) for n, s, _, _ in rows],
    )
    yield (
        "hazardwatch_device_up",
        "1 while the device answers with live data (heartbeat or max silence not tripped, units answering).",
        "gauge",
        [
            ({"source": n, "device": d}, float(s.state == "ok" and ok))
            for n, s, h, _ in rows
            for d, ok in h.devices.items()
        ],
    )
    detail: dict[str, list[tuple[dict[str, str], float]]] = {}
    for _, _, h, _ in rows:
        for name, labels, value in h.samples:
            detail.setdefault(name, []).append((labels, value))
    for name, samples in detail.items():
        help_text, kind = _DETAIL.get(name, ("Source detail.", "gauge"))
        yield (name, help_text, kind, samples)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + body + "}"


def render(metrics: Iterable[Metric]) -> str:
    lines = []
    for name, help_text, kind, samples in metrics:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{_labels(labels)} {value:g}" for labels, value in samples)
    return "\n".join(lines) + "\n"
