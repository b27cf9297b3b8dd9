"""Collector metrics for prometheus-client: every runner's health and counters, and the hub's queues.

``SourceMetrics`` and ``HubMetrics`` are custom collectors: they read the runners' stats, the
sources' health reports and the hub's queues at scrape time (state the components keep anyway),
so nothing on the read path pays for metrics. The process registers them in its own
``CollectorRegistry`` (hazardwatch/runtime.py) and serves that (hazardwatch/metrics_server.py).
``FAMILIES`` declares every collector metric family once (name, type, help, labels), for these
collectors, the sources' protocol detail and the OPC UA worker pool's (collector/opcua/workers.py).
Metric names and labels are those of docs/operations.md; dashboards and alerts rely on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collector.base import CollectorRunner, SourceHealth
    from collector.hub import Hub

__all__ = ["FAMILIES", "Family", "HubMetrics", "SourceMetrics", "family"]


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family as /metrics shows it; ``name`` as exposed (a counter's ends in ``_total``)."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...]


_SOURCE, _UNIT = ("source",), ("source", "device", "unit")
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        # every collector runner, in process or in an OPC UA worker (SourceMetrics)
        Family(
            "hazardwatch_source_up",
            "gauge",
            "1 when the source's link works and every device behind it answers with live data.",
            _SOURCE,
        ),
        Family("hazardwatch_source_readings_total", "counter", "Readings collected per source.", _SOURCE),
        Family(
            "hazardwatch_source_errors_total",
            "counter",
            "Failed reads, connects and requests (a silent unit, a failed chunk) per source.",
            _SOURCE,
        ),
        Family("hazardwatch_source_reconnects_total", "counter", "Reconnect attempts per source.", _SOURCE),
        Family(
            "hazardwatch_source_restarts_total",
            "counter",
            "Collector loops restarted after an unexpected end (a bug or a library fault).",
            _SOURCE,
        ),
        Family(
            "hazardwatch_source_last_outage_seconds",
            "gauge",
            "Length of the last outage, from the last good read to the first data again.",
            _SOURCE,
        ),
        Family(
            "hazardwatch_device_up",
            "gauge",
            "1 while the device answers with live data (heartbeat or max silence not tripped, units answering).",
            ("source", "device"),
        ),
        # protocol detail a source may report (SourceHealth.samples; collector/modbus/execute.py)
        Family("hazardwatch_modbus_unit_up", "gauge", "1 while the Modbus unit answers.", _UNIT),
        Family(
            "hazardwatch_modbus_unit_consecutive_failures",
            "gauge",
            "Polls in a row the unit did not answer.",
            _UNIT,
        ),
        Family(
            "hazardwatch_modbus_unit_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the unit's last answer (0: never).",
            _UNIT,
        ),
        Family(
            "hazardwatch_modbus_request_errors_total",
            "counter",
            "Failed read requests per request group.",
            (*_UNIT, "table", "start", "count"),
        ),
        # the hub (HubMetrics)
        Family("hazardwatch_hub_queue_depth", "gauge", "Batches queued per sink.", ("sink",)),
        Family("hazardwatch_hub_lag_seconds", "gauge", "Age of the oldest queued batch per sink.", ("sink",)),
        Family(
            "hazardwatch_hub_dropped_batches_total",
            "counter",
            "Batches dropped (oldest first) per sink.",
            ("sink",),
        ),
        Family("hazardwatch_hub_dropped_rows_total", "counter", "Readings dropped per sink.", ("sink",)),
        # the OPC UA worker pool (collector/opcua/workers.py, OpcUaWorkerMetrics)
        Family(
            "hazardwatch_opcua_worker_up", "gauge", "1 while the OPC UA worker process runs.", ("worker",)
        ),
        Family(
            "hazardwatch_opcua_worker_restarts_total",
            "counter",
            "OPC UA worker processes restarted after they died or hung.",
            ("worker",),
        ),
        Family(
            "hazardwatch_opcua_worker_dropped_rows_total",
            "counter",
            "Readings an OPC UA worker dropped (oldest first) because the main process fell behind.",
            ("worker", "source"),
        ),
        Family(
            "hazardwatch_opcua_worker_dropped_batches_total",
            "counter",
            "Batches an OPC UA worker dropped (oldest first) because the main process fell behind.",
            ("worker", "source"),
        ),
    ]
}


def family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
    """An empty family for ``FAMILIES[name]``, to fill with ``add_metric(label values, value)``."""
    f = FAMILIES[name]
    cls = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
    return cls(f.name, f.help, labels=list(f.labels))


class SourceMetrics(Collector):
    """Every collector runner's health and counters, plus its source's protocol detail.

    ``runners`` is read at each scrape, so the runtime can pass its list before filling it.
    Each source's ``health()`` is taken once per scrape (a bus source computes it)."""

    def __init__(self, runners: Sequence[CollectorRunner]) -> None:
        self.runners = runners

    def collect(self) -> Iterator[Metric]:
        healths = [r.health() for r in self.runners]
        rows = [(r.source.name, r.stats, h, r.up_with(h)) for r, h in zip(self.runners, healths, strict=True)]
        up = family("hazardwatch_source_up")
        readings = family("hazardwatch_source_readings_total")
        errors = family("hazardwatch_source_errors_total")
        reconnects = family("hazardwatch_source_reconnects_total")
        restarts = family("hazardwatch_source_restarts_total")
        outage = family("hazardwatch_source_last_outage_seconds")
        device_up = family("hazardwatch_device_up")
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
            detail = families.get(name)
            if detail is None:
                declared = FAMILIES.get(name)
                help_text, kind = (declared.help, declared.kind) if declared else ("Source detail.", "gauge")
                # A counter family is named without _total; its samples carry it.
                detail = families[name] = Metric(name.removesuffix("_total"), help_text, kind)
            detail.add_sample(detail.name + ("_total" if detail.type == "counter" else ""), labels, value)
    return iter(families.values())


class HubMetrics(Collector):
    """Queue depth, lag and drops per hub sink, read from ``Hub.stats()`` at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        sinks = self.hub.stats()
        depth = family("hazardwatch_hub_queue_depth")
        lag = family("hazardwatch_hub_lag_seconds")
        batches = family("hazardwatch_hub_dropped_batches_total")
        rows = family("hazardwatch_hub_dropped_rows_total")
        for name, s in sinks.items():
            depth.add_metric([name], float(s.depth))
            lag.add_metric([name], s.lag_s)
            batches.add_metric([name], float(s.dropped_batches))
            rows.add_metric([name], float(s.dropped_rows))
        yield from (depth, lag, batches, rows)
