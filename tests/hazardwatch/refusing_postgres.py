"""A loopback server speaking just enough of the PostgreSQL protocol to refuse a client.

The real test server trusts every login, so the failures that need a server to say no are
played here: ``PASSWORD`` asks for a cleartext password and answers FATAL 28P01 (wrong
password); ``NO_SSL`` declines SSL (a client with ``sslmode=require`` gives up);
``SSL_REQUIRED`` answers the startup with FATAL 28000 like a pg_hba.conf that only has
``hostssl`` lines. Protocol: PostgreSQL frontend/backend protocol 3.0, chapter 55.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterator
from enum import StrEnum

__all__ = ["Refusal", "RefusingPostgres", "refusing_servers"]

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class Refusal(StrEnum):
    PASSWORD = "password"
    NO_SSL = "no_ssl"
    SSL_REQUIRED = "ssl_required"


def _error(code: str, message: str) -> bytes:
    fields = b"".join(
        k + v.encode() + b"\0" for k, v in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


class RefusingPostgres:
    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal
        self.port = 0
        self.passwords: list[bytes] = []  # what clients sent: proves the secret reached the wire
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RefusingPostgres:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                (code,) = struct.unpack("!i", body[:4])
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    writer.write(b"N")  # no encryption offered
                    await writer.drain()
                    continue
                break  # the StartupMessage
            if self.refusal is Refusal.PASSWORD:
                writer.write(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
                await writer.drain()
                kind = await reader.readexactly(1)
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                payload = await reader.readexactly(length - 4)
                if kind == b"p":
                    self.passwords.append(payload.rstrip(b"\0"))
                writer.write(_error("28P01", 'password authentication failed for user "u"'))
            else:
                writer.write(
                    _error(
                        "28000",
                        'no pg_hba.conf entry for host "127.0.0.1", user "u", database "db", no encryption',
                    )
                )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.contextmanager
def refusing_servers() -> Iterator[dict[Refusal, RefusingPostgres]]:
    """One server per refusal, served by a thread of their own (so synchronous code, such as
    a CLI invoked in-process, can connect to them)."""
    loop = asyncio.new_event_loop()
    servers = {r: RefusingPostgres(r) for r in Refusal}
    thread = threading.Thread(target=loop.run_forever, name="refusing-postgres", daemon=True)
    thread.start()
    try:
        for server in servers.values():
            asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(5)
        yield servers
    finally:
        for server in servers.values():
            if server.port:
                asyncio.run_coroutine_threadsafe(server.__aexit__(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
