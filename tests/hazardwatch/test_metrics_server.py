"""The process's /metrics endpoint: Prometheus text, /healthz, 404 elsewhere."""

from __future__ import annotations

import asyncio

from collector.metrics import render
from hazardwatch.metrics_server import MetricsServer


async def test_metrics_endpoint_serves_prometheus_text() -> None:
    metrics = [
        ("hw_reads_total", "Reads per source.", "counter", [({"source": 'a"b'}, 3.0), ({"source": "c"}, 4.0)])
    ]
    assert render(metrics) == (
        "# HELP hw_reads_total Reads per source.\n# TYPE hw_reads_total counter\n"
        'hw_reads_total{source="a\\"b"} 3\nhw_reads_total{source="c"} 4\n'
    )
    server = MetricsServer(lambda: metrics, port=0)
    await server.start()
    try:
        for path, status in (("/metrics", b"200"), ("/healthz", b"200"), ("/nope", b"404")):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            response = await reader.read()
            writer.close()
            assert response.split(b" ")[1] == status
            if path == "/metrics":
                assert b'hw_reads_total{source="c"} 4' in response
    finally:
        await server.stop()
