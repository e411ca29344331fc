"""A real webhook consumer on loopback: an aiohttp server that records every request and
answers as a test tells it to, and helpers that verify signatures as a consumer would
(with the Standard Webhooks reference library, an implementation independent of ours)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # what the receiver answered (None: never answered)

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split(" ")


def verify_now(secret: str, received: Received) -> dict[str, Any]:
    """Verify as a consumer does right now (signature and timestamp tolerance)."""
    verified: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return verified


def signed_by(secret: str, received: Received) -> bool:
    """Whether one of the message's signatures is ``secret``'s, at the message's own
    timestamp (for tests whose clock runs days ahead of the consumer's)."""
    timestamp = datetime.fromtimestamp(int(received.headers["webhook-timestamp"]), UTC)
    expected = Webhook(secret).sign(received.message_id, timestamp, received.body.decode())
    return expected in received.signatures()


@dataclass
class Receiver:
    """Answers 200 unless ``respond`` says otherwise; holds each request while ``hold``
    is set and not yet released."""

    respond: Callable[[Received], tuple[int, str]] = lambda _: (200, "ok")
    received: list[Received] = field(default_factory=list)
    hold: asyncio.Event | None = None
    url: str = ""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1") -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started
        self.url = f"http://{host}:{port}/hooks?token=abc"
        return self.url

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(
            {k.lower(): v for k, v in request.headers.items()}, await request.read()
        )
        async with self._changed:
            self.received.append(received)
            self._changed.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        status, text = self.respond(received)
        received.status = status
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=status, text=text)

    async def until(
        self, predicate: Callable[[list[Received]], bool], timeout_s: float = 60
    ) -> None:
        """Wait until ``predicate(received)`` holds (a condition, woken by each request)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: predicate(self.received))

    def answered_ok(self) -> set[str]:
        return {r.message_id for r in self.received if r.status is not None and r.status < 300}
