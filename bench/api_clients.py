"""Child process of bench/api.py: many SSE clients of /api/v1/stream and one bare LISTEN.

``python -m bench.api_clients BASE_URL DSN CHANNEL`` (CHANNEL ``-``: no listener) reads one JSON line from stdin (one
access token per client), opens every stream (httpx, one connection each), prints ``ready``
once all answered 200, then stamps every ``event: alarm`` as it completes (the blank line that
ends it) with ``time.monotonic()`` (CLOCK_MONOTONIC: the same clock as the parent's commit
stamps). A bare psycopg connection LISTENs on CHANNEL and stamps each notification the same way.
Commands on stdin: ``dump`` prints one JSON line of what arrived since the last dump; ``quit``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx
import psycopg

Record = tuple[int, str, float]  # client index, event id, received at


class Clients:
    def __init__(self, base: str, tokens: list[str]) -> None:
        self.base, self.tokens = base, tokens
        self.events: list[Record] = []
        self.errors: list[str] = []
        self.open = 0
        self.opened = asyncio.Event()
        self.values = 0  # `event: value` messages (not measured)

    async def one(self, client: httpx.AsyncClient, i: int) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[i]}", "Accept": "text/event-stream"}
        try:
            async with client.stream("GET", "/api/v1/stream", headers=headers) as r:
                if r.status_code != 200:
                    self.errors.append(f"client {i}: HTTP {r.status_code} {(await r.aread())[:200]!r}")
                    self.opened.set()
                    return
                self.open += 1
                if self.open == len(self.tokens):
                    self.opened.set()
                kind, ident = "message", ""
                async for line in r.aiter_lines():
                    if not line:
                        if kind == "alarm":
                            self.events.append((i, ident, time.monotonic()))
                        elif kind == "value":
                            self.values += 1
                        kind, ident = "message", ""
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("id:"):
                        ident = line[3:].strip()
        except Exception as exc:  # reported to the parent, which fails the run
            self.errors.append(f"client {i}: {type(exc).__name__}: {exc}")
            self.opened.set()


async def _listen(dsn: str, channel: str, out: list[tuple[str, float]], ready: asyncio.Event) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'LISTEN "{channel}"'.encode())
        ready.set()
        async for n in conn.notifies():
            out.append((n.payload, time.monotonic()))


async def _main(base: str, dsn: str, channel: str) -> None:
    loop = asyncio.get_running_loop()
    tokens: list[str] = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    clients = Clients(base, tokens)
    notes: list[tuple[str, float]] = []
    listening = asyncio.Event()
    limits = httpx.Limits(max_connections=len(tokens) + 10, max_keepalive_connections=len(tokens) + 10)
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        tasks = [asyncio.create_task(clients.one(client, i)) for i in range(len(tokens))]
        listener = asyncio.create_task(
            _listen(dsn, channel, notes, listening) if channel != "-" else listening.wait()
        )
        if channel == "-":  # another process holds the bare listener
            listening.set()
        await asyncio.wait_for(clients.opened.wait(), 120)
        await asyncio.wait_for(listening.wait(), 30)
        print("ready" if not clients.errors else "error " + "; ".join(clients.errors[:5]), flush=True)
        while True:
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command == "dump":
                dump: dict[str, Any] = {
                    "events": clients.events,
                    "listener": notes,
                    "errors": clients.errors,
                    "open": clients.open - sum(1 for t in tasks if t.done()),
                    "values": clients.values,
                }
                print(json.dumps(dump), flush=True)
                clients.events, notes[:] = [], []
            else:  # quit, or the parent went away
                break
        listener.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(listener, *tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3]))
