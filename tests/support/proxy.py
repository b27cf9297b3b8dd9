"""The one loopback TCP proxy tests put between a client and a real server.

A test controls the link, not the server: `cut()` resets every connection and refuses new
ones (a network outage while the server stays up), `restore()` listens again on the same
port, `frozen = True` keeps the sockets open but forwards nothing (a silent cable: only
timeouts notice). `on_client_bytes` taps what the client sends, to assert what crosses the
wire (e.g. only Modbus read function codes); `rewrite` makes it a protocol-aware middlebox
(drop some requests, answer others itself). `connections` counts upstream connections made,
so a test can tell the client really reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

__all__ = ["Rewriter", "TcpProxy"]

# Client bytes in -> (bytes forwarded to the server, bytes answered to the client directly).
Rewriter = Callable[[bytes], tuple[bytes, bytes]]


class TcpProxy:
    def __init__(
        self,
        target_port: int,
        on_client_bytes: Callable[[bytes], None] | None = None,
        *,
        target_host: str = "127.0.0.1",
        rewrite: Callable[[], Rewriter] | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.on_client_bytes = on_client_bytes
        self.rewrite = rewrite  # called once per connection, so a rewriter may buffer partial frames
        self.port = 0
        self.connections = 0
        self.frozen = False  # read and drop in both directions; sockets stay open
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on 127.0.0.1 (the same port again after a cut); return the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def cut(self) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        rewriter = self.rewrite() if self.rewrite is not None else None
        for src, dst, tap, rw in (
            (reader, up_writer, self.on_client_bytes, rewriter),
            (up_reader, writer, None, None),
        ):
            task = asyncio.create_task(self._pipe(src, dst, tap, rw, back=writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        tap: Callable[[bytes], None] | None,
        rewriter: Rewriter | None,
        back: asyncio.StreamWriter,
    ) -> None:
        try:
            while data := await src.read(65536):
                if self.frozen:
                    continue
                if tap is not None:
                    tap(data)
                if rewriter is not None:
                    data, answer = rewriter(data)
                    if answer:
                        back.write(answer)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            # One side gone ends the connection both ways, as a real link does.
            with contextlib.suppress(Exception):
                dst.transport.abort()
            self._writers.discard(dst)
