"""The process's one LISTEN connection (db/listen.py), shared by every channel: a
subscriber that joins while the connection is busy (its liveness probe) is served, not
failed; every subscriber gets its notifications; the connection closes with the last."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from singura_vault.db import listen
from singura_vault.db.pool import Database

CHANNELS = [f"singura_test_{i}" for i in range(12)]


async def listeners(owner_dsn: str) -> int:
    conn = await asyncpg.connect(owner_dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'singura-vault-listener' AND datname = current_database()"
        )
    finally:
        await conn.close()
    return count


async def test_subscribers_share_one_connection_even_while_it_is_probed(
    db: Database, owner_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the liveness probe running back to back, twelve subscribers join one after
    another: each is told it is live (none fails with asyncpg's "another operation is in
    progress"), each gets a notification on its channel, one backend serves them all,
    and none is left once they are gone."""
    monkeypatch.setattr(listen, "CHECK_INTERVAL_S", 0.0)
    received: dict[str, asyncio.Queue[str]] = {c: asyncio.Queue() for c in CHANNELS}
    live: dict[str, asyncio.Event] = {c: asyncio.Event() for c in CHANNELS}
    tasks = []
    for channel in CHANNELS:

        def on_state(up: bool, channel: str = channel) -> None:
            if up:
                live[channel].set()

        tasks.append(
            asyncio.create_task(db.listen(channel, received[channel].put_nowait, on_state))
        )
        async with asyncio.timeout(30):
            await live[channel].wait()
    assert not any(task.done() for task in tasks), [t.exception() for t in tasks if t.done()]
    assert await listeners(owner_dsn) == 1

    notifier = await asyncpg.connect(owner_dsn)
    try:
        for channel in CHANNELS:
            await notifier.execute("SELECT pg_notify($1, $2)", channel, f"to {channel}")
    finally:
        await notifier.close()
    for channel in CHANNELS:
        async with asyncio.timeout(30):
            assert await received[channel].get() == f"to {channel}"

    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert await listeners(owner_dsn) == 0
