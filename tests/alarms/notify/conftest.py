"""The loopback gateway both SMS providers' tests talk to: a verifier (the test file's own, written from the
provider's docs) checks each request's signature, then the test's ``answer`` replies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from tests.support.http_server import LoopbackHttpServer, RawRequest, Reply


@dataclass
class Gateway:
    """``verify(request) -> None | Reply`` (a Reply is the provider's refusal); ``answer(request)`` otherwise."""

    verify: Callable[[RawRequest], Reply | None] | None = None
    answer: Callable[[RawRequest], object] = lambda request: Reply(500, {})
    refused: list[Reply] = field(default_factory=list)
    server: LoopbackHttpServer | None = None

    async def handle(self, request: RawRequest) -> object:
        assert self.verify is not None, "the test sets gateway.verify"
        refusal = self.verify(request)
        if refusal is not None:
            self.refused.append(refusal)
            return refusal
        return self.answer(request)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def requests(self) -> list[RawRequest]:
        assert self.server is not None
        return self.server.requests


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    gw.server = LoopbackHttpServer(gw.handle)
    await gw.server.start()
    yield gw
    await gw.server.stop()
