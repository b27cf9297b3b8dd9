"""The FastAPI application: ``create_app(ApiConfig)`` wires state, hardening and the routers.

Hardening, in order of the middleware stack (outermost first): security headers on every
answer; a body-size limit (413, counted while reading, so a lying Content-Length or a chunked
body cannot get past it); JSON bodies that Python parses but cannot encode back (lone
surrogates, NaN/Infinity) refused with 422 before any route sees them; a per-request timeout
(504; the live stream is exempt); errors that never show a stack trace (500 with an incident
id that the log carries). CORS is off unless ``api.cors_origins`` names origins.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alarms.rationale import RationaleDefaults
from api import (
    console,
    routes_admin,
    routes_alarms,
    routes_auth,
    routes_interlocks,
    routes_ops,
    routes_registry,
    routes_stream,
)
from api.alarm_views import RATIONALE_DEFAULTS
from api.deps import ApiState
from core.errors import DatabaseUnavailable
from core.plant import Plant
from core.settings import ApiSettings
from storage.db import _options

__all__ = ["ApiConfig", "create_app"]

log = logging.getLogger(__name__)

# Routers in the order the OpenAPI document lists them (explicit: no discovery).
ROUTERS = [
    routes_auth.router,
    routes_registry.router,
    routes_alarms.router,
    routes_stream.router,
    routes_interlocks.router,
    routes_admin.router,
    routes_ops.router,
    console.router,
]

_STREAM_SUFFIX = "/stream"  # long-lived responses: no request timeout
_CSP = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"content-security-policy", _CSP),
]
# FastAPI's /docs (Swagger UI) and /redoc load their scripts, styles and fonts from CDNs (so
# they need internet access in the browser) and Swagger UI starts from an inline script: these
# pages get a policy allowing exactly those, the inline scripts by their hash (computed from the
# page as served, so a FastAPI upgrade cannot silently break it). Everything else keeps _CSP.
_DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_DOCS_CSP = (
    "default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; script-src 'self' https://cdn.jsdelivr.net{hashes}; "
    "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_UNICODE = [
    {"loc": ["body"], "msg": "text must be valid Unicode (no lone surrogates)", "type": "value_error"}
]
_NOT_FINITE = [
    {"loc": ["body"], "msg": "numbers must be finite (no NaN, Infinity or 1e400)", "type": "value_error"}
]


class _Problem(BaseModel):
    detail: str


# What any authenticated route may answer besides its own responses.
_COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": _Problem, "description": "the body is not UTF-8 JSON"},
    401: {"model": _Problem, "description": "not authenticated: no, an invalid or an expired token or key"},
    503: {"model": _Problem, "description": "the database is unavailable (Retry-After given)"},
}


@dataclass(frozen=True)
class ApiConfig:
    dsn: str
    secret: bytes
    settings: ApiSettings = field(default_factory=ApiSettings)
    plant: Plant | None = None
    # the plant's rationalization defaults (alarms.rationale.defaults_for: they need the config's
    # path); None: alarm details show the plant's own rationalization only
    rationale: RationaleDefaults | None = None
    # settings.grafana.url: where the console links to Grafana's boards ("": no links)
    grafana_url: str = ""


class _TooLarge(Exception):
    pass


class Hardening:
    """Security headers, the body limit, the request timeout and the Unicode check of JSON
    bodies, as one ASGI middleware."""

    def __init__(self, app: ASGIApp, max_body: int, timeout_s: float) -> None:
        self.app = app
        self.max_body = max_body
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        docs = scope["path"] in _DOCS_PATHS
        held: Message | None = None  # a docs page's start, sent once its body is hashed
        chunks: list[bytes] = []

        async def send_with_headers(message: Message) -> None:
            nonlocal started, held
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _HEADERS if k not in names]
                if scope["path"].startswith("/api/") and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
                if docs:
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                await send(_with_docs_policy(held, body))
                held = None
                message = {"type": "http.response.body", "body": body}
            await send(message)

        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _plain(send_with_headers, 400, "Content-Length must be a number of bytes")
            return
        if declared is not None and int(declared) > self.max_body:
            await _plain(send_with_headers, 413, "request body too large")
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        async def checked() -> None:
            app_receive: Receive = counted_receive
            if _json_body(scope):
                body = await _read_body(counted_receive)
                if body is None:  # the client went away
                    return
                problem = _unencodable(body)
                if problem is not None:
                    await _plain(send_with_headers, 422, problem)
                    return
                app_receive = _replay(body, counted_receive)
            await self.app(scope, app_receive, send_with_headers)

        try:
            if scope["path"].endswith(_STREAM_SUFFIX):
                await checked()
            else:
                async with asyncio.timeout(self.timeout_s):
                    await checked()
        except _TooLarge:
            if not started:
                await _plain(send_with_headers, 413, "request body too large")
        except TimeoutError:
            if not started:
                await _plain(send_with_headers, 504, "request timed out")


def _with_docs_policy(start: Message, body: bytes) -> Message:
    """A docs page's start with the docs policy, allowing the page's own inline scripts."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(body)
        if script.strip()
    )
    policy = _DOCS_CSP.format(hashes=hashes).encode()
    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-security-policy"]
    return {**start, "headers": [*headers, (b"content-security-policy", policy)]}


def _json_body(scope: Scope) -> bool:
    """Whether FastAPI would read the body as JSON: a JSON content type, or none at all."""
    if scope["method"] in ("GET", "HEAD", "OPTIONS"):
        return False
    kind = dict(scope.get("headers", [])).get(b"content-type")
    if kind is None:
        return True
    media = kind.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (``receive`` enforces the size limit); None on a disconnect."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the buffered body once, then the client's own messages."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite
    return value


def _not_finite(text: str) -> float:
    raise _NotFinite


def _unencodable(body: bytes) -> list[dict[str, Any]] | None:
    """The 422 detail for a JSON body Python parses but no JSON encoder can answer about (FastAPI
    echoes the input in its 422, the database and the log encode it): a "\\ud800" escape that
    is not half of a pair (a lone surrogate, in a key or a value), or NaN, Infinity, 1e400
    (Python's json accepts them, JSON does not). None when fine; malformed JSON is the app's."""
    try:
        doc = json.loads(body, parse_float=_finite, parse_constant=_not_finite)
    except _NotFinite:
        return _NOT_FINITE
    except (ValueError, RecursionError):
        return None
    todo = [doc]
    while todo:  # iterative: nesting depth is the body's business, not the stack's
        item = todo.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return _NOT_UNICODE
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return None


class Measure:
    """Requests by route template, method and status, and latency to the response's start. Pure
    ASGI (not BaseHTTPMiddleware, which passes every chunk of a stream through an extra task)."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500  # an exception that escapes is answered 500 further out

        def route() -> str:
            return str(getattr(scope.get("route"), "path", "unmatched"))

        async def timed_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
                self.latency.labels(route()).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.requests.labels(scope["method"], route(), str(code)).inc()


async def _plain(send: Callable[[Message], Awaitable[None]], code: int, detail: Any) -> None:
    body = JSONResponse({"detail": detail}).body
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _version() -> str:
    try:
        return version("hazardwatch")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def create_app(config: ApiConfig) -> FastAPI:
    s = config.settings
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        config.dsn,
        min_size=1,
        max_size=s.pool_size,
        kwargs={"autocommit": True, **_options(5.0, "hazardwatch-api")},
        open=False,
        timeout=10.0,
    )
    state = ApiState(pool, config.dsn, s, config.secret, config.plant)
    if config.rationale is not None:
        state.extras[RATIONALE_DEFAULTS] = config.rationale
    state.extras[routes_auth.GRAFANA_URL] = config.grafana_url.rstrip("/")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=False)
        try:
            yield
        finally:
            for stop in list(state.extras.get("on_shutdown", [])):
                await stop()
            await pool.close()

    app = FastAPI(
        title="HazardWatch API",
        version=_version(),
        description=(
            "Major hazard source (重大危险源) monitoring: registry, live values, history, alarms and "
            "their handling, interlocks and bypasses, KPIs and audit. Authenticate with an access "
            "token from `POST /api/v1/auth/token` or an API key (`X-API-Key`)."
        ),
        lifespan=lifespan,
    )
    app.state.hw = state
    registry = CollectorRegistry()
    requests = Counter(
        "hazardwatch_api_requests", "API requests answered", ["method", "route", "code"], registry=registry
    )
    latency = Histogram(
        "hazardwatch_api_request_seconds",
        "API request latency (to the response's start)",
        ["route"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    state.extras["metrics_registry"] = registry

    @app.exception_handler(DatabaseUnavailable)
    async def database_down(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(request: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("%s %s: no database connection free in time: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "database busy"}, status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error("%s %s failed (incident %s)", request.method, request.url.path, incident, exc_info=exc)
        return JSONResponse({"detail": "internal error", "incident": incident}, status_code=500)

    for router in ROUTERS:
        public = router in (routes_ops.router, console.router)
        app.include_router(router, responses={} if public else _COMMON_RESPONSES)
    app.mount("/metrics", make_asgi_app(registry))
    if s.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(s.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "Last-Event-ID"],
        )
    app.add_middleware(Measure, requests=requests, latency=latency)
    app.add_middleware(Hardening, max_body=s.max_body_bytes, timeout_s=s.request_timeout_s)
    return app
