"""Collector metric families are declared once (collector.metrics.FAMILIES): what /metrics shows
matches the declarations, every declaration is shown, and a source run in an OPC UA worker
shows the same families as one run in process."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from collector.base import CollectorRunner
from collector.hub import Hub, MemorySink
from collector.metrics import FAMILIES, HubMetrics, SourceMetrics
from collector.modbus.plan import ModbusPoint
from collector.modbus.source import ModbusSource
from collector.opcua.source import OpcUaPoint, OpcUaSource
from collector.opcua.workers import OpcUaWorkerMetrics, OpcUaWorkerPool, WorkerRunner
from core.clock import FakeClock
from core.plant import DataType, ModbusTable, OpcUaDevice
from tests.collector.test_modbus_source import device as modbus_device

Shown = dict[str, tuple[str, str, frozenset[str]]]  # sample name -> (type, help, label names)


def shown(*collectors: Collector) -> Shown:
    """One scrape, parsed back: every sample name with its family's type, help and label names."""
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    out: Shown = {}
    for f in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in f.samples:
            out[s.name] = (f.type, f.documentation, frozenset(s.labels))
    return out


def opcua_source(name: str, index: int = 0) -> OpcUaSource:
    return OpcUaSource(
        OpcUaDevice(protocol="OPCUA", id=name, endpoint="opc.tcp://127.0.0.1:4840"),
        [OpcUaPoint(index, f"s=T{index}", None)],
    )


def test_every_family_is_shown_as_declared() -> None:
    modbus = ModbusSource(
        modbus_device(502), [ModbusPoint(0, 1, ModbusTable.HOLDING, 0, DataType.INT16)]
    )  # a source with protocol detail (per-unit health, request errors)
    runners = [CollectorRunner(modbus, lambda _: None), CollectorRunner(opcua_source("DCS1"), lambda _: None)]
    clock = FakeClock(start_us=0)
    hub = Hub(clock)
    hub.add_sink("historian", MemorySink().write)
    pool = OpcUaWorkerPool([opcua_source("DCS2")], 1, lambda _: None, clock=clock)  # not started
    got = shown(SourceMetrics([*runners, *pool.runners]), HubMetrics(hub), OpcUaWorkerMetrics(pool))
    declared = {f.name: (f.kind, f.help, frozenset(f.labels)) for f in FAMILIES.values()}
    assert got == declared


def test_a_source_in_a_worker_shows_the_same_families_as_one_in_process() -> None:
    in_process = CollectorRunner(opcua_source("DCS1"), lambda _: None)
    in_worker = WorkerRunner(opcua_source("DCS1"), 0, FakeClock(start_us=0))
    assert shown(SourceMetrics([in_worker])) == shown(SourceMetrics([in_process]))


def test_every_family_is_documented_for_operators() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    assert [name for name in FAMILIES if f"`{name}" not in doc] == []  # dashboards and alerts rely on them
