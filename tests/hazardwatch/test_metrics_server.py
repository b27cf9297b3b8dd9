"""The process's /metrics endpoint over real HTTP: the library's exposition of one registry, answered
on the event loop, /healthz, 404 elsewhere, 503 when the loop cannot answer, no thread left after stop."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

import hazardwatch.metrics_server
from hazardwatch.metrics_server import LogMetrics, MetricsServer, metrics_app


def get(port: int, path: str) -> tuple[int, str]:
    """Blocking GET (run it in a thread: the server answers on the test's event loop)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class LoopState(Collector):
    """Component state as the runtime's collectors read it; records the thread each scrape ran on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def collect(self) -> Iterator[Metric]:
        self.threads.append(threading.get_ident())
        g = GaugeMetricFamily("hw_queue_depth", "Depth per sink.", labels=["sink"])
        g.add_metric(['a"b\\c'], 3.0)
        g.add_metric(["历史库"], 4.0)
        yield g


@pytest.fixture
async def served() -> AsyncIterator[tuple[MetricsServer, LoopState, Counter]]:
    registry = CollectorRegistry()
    state = LoopState()
    registry.register(state)
    registry.register(LogMetrics())
    reads = Counter("hw_reads", "Reads per source.", ["source"], registry=registry)
    server = MetricsServer(registry, port=0)
    await server.start()
    try:
        yield server, state, reads
    finally:
        await server.stop()


async def test_metrics_are_the_registrys_exposition_collected_on_the_event_loop(
    served: tuple[MetricsServer, LoopState, Counter],
) -> None:
    server, state, reads = served
    reads.labels(source="plc").inc(5)
    status, text = await asyncio.to_thread(get, server.port, "/metrics")
    assert status == 200
    got = samples(text)
    assert got[("hw_reads_total", frozenset({("source", "plc")}))] == 5
    assert got[("hw_queue_depth", frozenset({("sink", 'a"b\\c')}))] == 3  # escaped and parsed back
    assert got[("hw_queue_depth", frozenset({("sink", "历史库")}))] == 4
    assert got[("hazardwatch_log_records_dropped_total", frozenset())] == 0
    # Collected on the loop's thread, where component state is mutated, not the HTTP thread.
    assert state.threads == [threading.get_ident()]


async def test_healthz_and_unknown_paths(served: tuple[MetricsServer, LoopState, Counter]) -> None:
    server, _, _ = served
    assert await asyncio.to_thread(get, server.port, "/healthz") == (200, "ok\n")
    status, _ = await asyncio.to_thread(get, server.port, "/nope")
    assert status == 404


async def test_a_blocked_event_loop_gets_503_not_a_hung_scrape(
    served: tuple[MetricsServer, LoopState, Counter], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, state, _ = served
    monkeypatch.setattr(hazardwatch.metrics_server, "SCRAPE_TIMEOUT_S", 0.2)
    answers: list[tuple[int, str]] = []
    scrape = threading.Thread(target=lambda: answers.append(get(server.port, "/metrics")))
    scrape.start()
    scrape.join(timeout=20)  # the loop is blocked until the scrape returns, like a stalled engine
    assert answers and answers[0][0] == 503 and "event loop" in answers[0][1]
    await asyncio.sleep(0.05)  # the loop runs again: the abandoned scrape must not run late
    assert state.threads == []
    status, _ = await asyncio.to_thread(get, server.port, "/metrics")
    assert status == 200


async def test_stop_leaves_no_thread_and_frees_the_port() -> None:
    before = set(threading.enumerate())
    server = MetricsServer(CollectorRegistry(), port=0)
    await server.start()
    port = server.port
    assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
    await server.stop()
    # asyncio's own executor threads (to_thread) belong to the loop and end with it.
    left = [t for t in threading.enumerate() if t not in before and not t.name.startswith("asyncio_")]
    assert left == []
    again = MetricsServer(CollectorRegistry(), port=port)  # the port is free again at once
    await again.start()
    await again.stop()


async def test_the_api_serves_a_registry_with_the_librarys_asgi_app() -> None:
    registry = CollectorRegistry()
    Counter("hw_reads", "Reads.", registry=registry).inc(2)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": []}
    await metrics_app(registry)(scope, receive, send)
    assert sent[0]["status"] == 200
    assert samples(sent[1]["body"].decode())[("hw_reads_total", frozenset())] == 2
