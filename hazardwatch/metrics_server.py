"""The engine's /metrics and /healthz: prometheus-client's exposition of the process registry.

The library's WSGI app is served by wsgiref on a thread of its own (the engine process has no
web framework). Each request is handed to the event loop and answered there, because the
collectors read state the loop owns and mutates (runner stats, hub queues, the rule engine's
arrays): read on the loop, a scrape sees one moment, never a dict or array mid-update. So
/healthz answers "ok" only while the loop runs, and a loop that cannot answer within
``SCRAPE_TIMEOUT_S`` gets a 503 (a loop blocked that long is the fault to see). ``stop()``
joins the server thread and every request thread: nothing outlives it.

The API process (a later package) mounts the same kind of registry with ``metrics_app``, the
library's ASGI app, which already runs on that process's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_asgi_app, make_wsgi_app
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from hazardwatch.logs import dropped_records

__all__ = ["SCRAPE_TIMEOUT_S", "LogMetrics", "MetricsServer", "metrics_app"]

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 10.0  # Prometheus's default scrape timeout: a later answer is not waited for anyway

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def metrics_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """The library's ASGI app for ``registry``, to mount at /metrics in an ASGI server."""
    app: Callable[..., Any] = make_asgi_app(registry)
    return app


class LogMetrics(Collector):
    """What the process itself loses: log records dropped because the log queue was full."""

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "hazardwatch_log_records_dropped_total",
            "Log records dropped because the log queue was full (hazardwatch/logs.py).",
            value=float(dropped_records()),
        )


class _Server(ThreadingMixIn, WSGIServer):
    # Request threads are joined at close (ThreadingMixIn.block_on_close), so none outlives stop().
    daemon_threads = False


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    timeout = 5.0  # a client that connects and sends nothing holds its thread 5 s at most

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape is noise; failures are logged by _on_loop


def _text(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _routes(metrics: Wsgi) -> Wsgi:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        return _text(start_response, "404 Not Found", "try /metrics\n")

    return app


def _on_loop(app: Wsgi, loop: asyncio.AbstractEventLoop) -> Wsgi:
    """``app`` answered on ``loop`` (see the module docstring); runs on a request thread."""

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer: concurrent.futures.Future[tuple[str, list[tuple[str, str]], bytes]] = (
            concurrent.futures.Future()
        )

        def run() -> None:
            if not answer.set_running_or_notify_cancel():
                return  # the request thread gave up waiting
            try:
                head: list[tuple[str, list[tuple[str, str]]]] = []
                body = b"".join(
                    app(environ, lambda status, headers, exc_info=None: head.append((status, headers)))
                )
                answer.set_result((head[0][0], head[0][1], body))
            except Exception as exc:  # a collector's bug: a 500 for this scrape, logged
                answer.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed: the engine is gone
            return _text(start_response, "503 Service Unavailable", "the engine is not running\n")
        try:
            status, headers, body = answer.result(SCRAPE_TIMEOUT_S)
        except TimeoutError:
            answer.cancel()
            log.warning("metrics: the event loop did not answer a scrape within %.0f s", SCRAPE_TIMEOUT_S)
            return _text(start_response, "503 Service Unavailable", "the event loop did not answer in time\n")
        except Exception:
            log.exception("metrics: a scrape failed")
            return _text(start_response, "500 Internal Server Error", "scrape failed; see the engine's log\n")
        start_response(status, headers)
        return [body]

    return handle


class MetricsServer:
    """Serves ``registry`` on http://host:port/metrics (port 0: any free port, set by start())."""

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9108) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        app = _on_loop(_routes(make_wsgi_app(self.registry)), asyncio.get_running_loop())
        server_class = _Server6 if ":" in self.host else _Server
        # Off the loop: binding looks the host name up (HTTPServer.server_bind calls getfqdn).
        server = await asyncio.to_thread(
            make_server, self.host, self.port, app, server_class=server_class, handler_class=_Handler
        )
        self._server = server
        self.port = server.server_port
        # Daemon: a process that never calls stop() (a crash) must still be able to exit.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return

        def close() -> None:
            server.shutdown()  # returns once serve_forever has
            server.server_close()  # joins the request threads
            thread.join()

        # Off the loop: a request thread may be waiting for the loop to answer it.
        await asyncio.to_thread(close)
