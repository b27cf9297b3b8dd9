"""Collector metrics for prometheus-client: every runner's health and counters, and the hub's queues.

``SourceMetrics`` and ``HubMetrics`` are custom collectors: they read the runners' stats, the
sources' health reports and the hub's queues at scrape time (state the components keep anyway),
so nothing on the read path pays for metrics. The process registers them in its own
``CollectorRegistry`` (hazardwatch/runtime.py) and serves that (hazardwatch/metrics_server.py).
Metric names and labels are those of docs/operations.md; dashboards and alerts rely on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collector.base import CollectorRunner, SourceHealth
    from collector.hub import Hub

__all__ = ["HubMetrics", "SourceMetrics"]


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


class SourceMetrics(Collector):
    """Every collector runner's health and counters, plus its source's protocol detail.

    ``runners`` is read at each scrape, so the runtime can pass its list before filling it.
    Each source's ``health()`` is taken once per scrape (a bus source computes it)."""

    def __init__(self, runners: Sequence[CollectorRunner]) -> None:
        self.runners = runners

    def collect(self) -> Iterator[Metric]:
        healths = [r.health() for r in self.runners]
        rows = [(r.source.name, r.stats, h, r.up_with(h)) for r, h in zip(self.runners, healths, strict=True)]
        up = GaugeMetricFamily(
            "hazardwatch_source_up",
            "1 when the source's link works and every device behind it answers with live data.",
            labels=["source"],
        )
        readings = CounterMetricFamily(
            "hazardwatch_source_readings_total", "Readings collected per source.", labels=["source"]
        )
        errors = CounterMetricFamily(
            "hazardwatch_source_errors_total",
            "Failed reads, connects and requests (a silent unit, a failed chunk) per source.",
            labels=["source"],
        )
        reconnects = CounterMetricFamily(
            "hazardwatch_source_reconnects_total", "Reconnect attempts per source.", labels=["source"]
        )
        restarts = CounterMetricFamily(
            "hazardwatch_source_restarts_total",
            "Collector loops restarted after an unexpected end (a bug or a library fault).",
            labels=["source"],
        )
        outage = GaugeMetricFamily(
            "hazardwatch_source_last_outage_seconds",
            "Length of the last outage, from the last good read to the first data again.",
            labels=["source"],
        )
        device_up = GaugeMetricFamily(
            "hazardwatch_device_up",
            "1 while the device answers with live data (heartbeat or max silence not tripped, units answering).",
            labels=["source", "device"],
        )
        for name, s, h, is_up in rows:
            up.add_metric([name], float(is_up))
            readings.add_metric([name], float(s.readings))
            errors.add_metric([name], float(s.errors + h.request_errors))
            reconnects.add_metric([name], float(s.reconnects))
            restarts.add_metric([name], float(s.restarts))
            outage.add_metric([name], s.last_outage_s)
            for device, ok in h.devices.items():
                device_up.add_metric([name, device], float(s.state == "ok" and ok))
        yield from (up, readings, errors, reconnects, restarts, outage, device_up)
        yield from _detail(h for _, _, h, _ in rows)


def _detail(healths: Iterable[SourceHealth]) -> Iterator[Metric]:
    """One family per detail name; label sets may differ per name (units vs request groups)."""
    families: dict[str, Metric] = {}
    for h in healths:
        for name, labels, value in h.samples:
            family = families.get(name)
            if family is None:
                help_text, kind = _DETAIL.get(name, ("Source detail.", "gauge"))
                # A counter family is named without _total; its samples carry it.
                family = families[name] = Metric(name.removesuffix("_total"), help_text, kind)
            family.add_sample(family.name + ("_total" if family.type == "counter" else ""), labels, value)
    return iter(families.values())


class HubMetrics(Collector):
    """Queue depth, lag and drops per hub sink, read from ``Hub.stats()`` at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        sinks = self.hub.stats()
        depth = GaugeMetricFamily("hazardwatch_hub_queue_depth", "Batches queued per sink.", labels=["sink"])
        lag = GaugeMetricFamily(
            "hazardwatch_hub_lag_seconds", "Age of the oldest queued batch per sink.", labels=["sink"]
        )
        batches = CounterMetricFamily(
            "hazardwatch_hub_dropped_batches_total",
            "Batches dropped (oldest first) per sink.",
            labels=["sink"],
        )
        rows = CounterMetricFamily(
            "hazardwatch_hub_dropped_rows_total", "Readings dropped per sink.", labels=["sink"]
        )
        for name, s in sinks.items():
            depth.add_metric([name], float(s.depth))
            lag.add_metric([name], s.lag_s)
            batches.add_metric([name], float(s.dropped_batches))
            rows.add_metric([name], float(s.dropped_rows))
        yield from (depth, lag, batches, rows)
