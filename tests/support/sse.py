"""Reading the API's live stream in tests: a uvicorn server on a free loopback port (httpx's
ASGITransport buffers whole responses, so an endless stream needs a real socket) and a reader
that keeps every event of one stream as it arrives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from tests.support.waiting import eventually

__all__ = ["Event", "SseReader", "serve"]


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    id: str | None
    data: Any  # the parsed JSON
    arrived: float  # time.monotonic()


@dataclass
class SseReader:
    """One stream, read in a task: ``events`` as they arrive, ``comments``, ``status``."""

    http: httpx.AsyncClient
    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int | None = None
    closed: bool = False  # the server ended the stream
    _task: asyncio.Task[None] | None = None

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.event == kind]

    @property
    def alarm_ids(self) -> list[str]:
        return [e.id for e in self.of("alarm") if e.id is not None]

    async def open(self) -> SseReader:
        """Connect and return once the stream said it is connected (every later change reaches it)."""
        self._task = asyncio.create_task(self._read())
        await eventually(lambda: "connected" in self.comments or self._task is None or self._task.done(), 15)
        assert self.status == 200, f"stream answered {self.status}"
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self) -> None:
        async with self.http.stream("GET", "/api/v1/stream", headers=self.headers, params=self.params) as r:
            self.status = r.status_code
            if r.status_code != 200:
                await r.aread()
                return
            kind, ident, data = "message", None, []
            async for line in r.aiter_lines():
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line == "":
                    if data:
                        self.events.append(Event(kind, ident, json.loads("\n".join(data)), time.monotonic()))
                    kind, ident, data = "message", None, []
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        kind = value
                    elif name == "id":
                        ident = value
                    elif name == "data":
                        data.append(value)
        self.closed = True


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` in uvicorn on 127.0.0.1 (lifespan run); an httpx client on it."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), 15)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        server.should_exit = True
        await task
