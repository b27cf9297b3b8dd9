"""A loopback HTTP/1.1 server for gateway tests: it keeps each request exactly as received (method, raw
target, headers in order, body bytes) and answers with what the test's handler returns.

A handler returns ``Reply`` (status, JSON body), ``HANG`` (never answer: the client's timeout fires) or
``CLOSE`` (drop the connection without a status line). One request per connection (Connection: close).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote


@dataclass(frozen=True)
class RawRequest:
    method: str
    target: str  # path and query exactly as on the request line
    headers: tuple[tuple[str, str], ...]  # names as sent, values with surrounding blanks stripped
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        if len(found) > 1:
            raise AssertionError(f"header {name} sent {len(found)} times")
        return found[0] if found else None

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def raw_query(self) -> str:
        return self.target.partition("?")[2]

    def query(self) -> dict[str, str]:
        """The query decoded (percent-decoding only: '+' is a plus sign, as RFC 3986 has it)."""
        pairs = [p.partition("=") for p in self.raw_query.split("&") if p]
        return {unquote(k): unquote(v) for k, _, v in pairs}


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    raw: bytes | None = None  # sent instead of json(body) when given
    headers: tuple[tuple[str, str], ...] = ()  # more response headers (Retry-After, ...)


HANG = object()
CLOSE = object()
Handler = Callable[[RawRequest], Awaitable[object]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LoopbackHttpServer:
    handler: Handler
    requests: list[RawRequest] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = tuple((k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line))
            length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
            body = await reader.readexactly(length)
            request = RawRequest(method, target, headers, body)
            self.requests.append(request)
            outcome = await self.handler(request)
            if outcome is HANG:
                await self._stopping.wait()
                return
            if outcome is CLOSE or not isinstance(outcome, Reply):
                return
            payload = outcome.raw if outcome.raw is not None else json.dumps(outcome.body).encode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in outcome.headers)
            writer.write(
                f"HTTP/1.1 {outcome.status} X\r\nContent-Type: application/json\r\n{extra}"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
