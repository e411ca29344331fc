"""A Database that records each coalesced statement and can hold the next one in flight
until the test releases it; and a wait that only lets the event loop turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from singura_vault.composition import Components
from singura_vault.db.pool import Database
from singura_vault.db.scope import RequestScope


class GatedDatabase(Database):
    """The vault's pool, recording each coalesced statement (query name, items) and able
    to hold the next one in flight, so that a test decides which calls share a batch."""

    batches: list[tuple[str, int]]
    components: Components
    _hold: str | None = None

    def hold_next(self, name: str) -> None:
        self._hold = name
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def fetch_batch(
        self, sql: str, scopes: Sequence[RequestScope], *columns: Sequence[object], **options: Any
    ) -> list[asyncpg.Record]:
        name = sql.split("singura:", 1)[1].split(" ", 1)[0]
        self.batches.append((name, len(scopes)))
        if name == self._hold:
            self._hold = None
            self.entered.set()
            await self.release.wait()
        return await super().fetch_batch(sql, scopes, *columns, **options)


async def spin_until(condition: Callable[[], bool], *, turns: int = 100_000) -> None:
    """Let the event loop run (the server's handlers with it) until ``condition()``."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")
