"""uvicorn for the API: ends the live streams before waiting for connections at shutdown.

uvicorn waits for open responses before the app's lifespan shutdown runs, so an endless event
stream would keep a stopping server up for ever; ``ApiServer`` ends them first (each client gets
``event: end`` and reconnects elsewhere). ``embedded=True``: the caller owns the signals (the
demo stops the API with everything else).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from api.live_hub import end_streams

__all__ = ["ApiServer", "server_config"]

GRACE_S = 10  # seconds; then requests still running are cancelled


def server_config(app: FastAPI, host: str, port: int, **options: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # the process's own logging
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=GRACE_S,
        lifespan="on",
        **options,  # type: ignore[arg-type]
    )


class ApiServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, embedded: bool = False) -> None:
        super().__init__(config)
        self.embedded = embedded

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self.embedded:
            yield
            return
        with super().capture_signals():
            yield
            # SIGTERM/SIGINT are how a supervisor stops the API: exit 0 after the graceful
            # shutdown instead of uvicorn re-raising the signal (death by signal, status -15)
            getattr(self, "_captured_signals", []).clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.app
        state = getattr(getattr(app, "state", None), "hw", None)
        if state is not None:
            await end_streams(state)
        await super().shutdown(sockets)
