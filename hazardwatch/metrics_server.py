"""The process's /metrics endpoint: Prometheus text from every component, and /healthz.

A deliberately small HTTP endpoint (asyncio streams, GET /metrics and GET /healthz only):
enough for Prometheus or curl, no framework in the engine process. It serves the whole
process (collector, hub, historian, rules), so it lives in the composition root;
``collect`` is called once per scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from collector.metrics import Metric, render

__all__ = ["MetricsServer"]

log = logging.getLogger(__name__)


class MetricsServer:
    def __init__(
        self, collect: Callable[[], Iterable[Metric]], host: str = "127.0.0.1", port: int = 9108
    ) -> None:
        self.collect = collect
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()).strip():
                    pass  # headers are not needed
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] != "GET":
                status, body = "405 Method Not Allowed", "only GET\n"
            elif path == "/metrics":
                status, body = "200 OK", render(self.collect())
            elif path == "/healthz":
                status, body = "200 OK", "ok\n"
            else:
                status, body = "404 Not Found", "try /metrics\n"
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
