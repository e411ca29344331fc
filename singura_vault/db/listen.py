"""One LISTEN connection per vault process, shared by every channel it follows.

A LISTEN holds a PostgreSQL session (a backend, and a slot of the connection budget
in docs/scaling.md), so the API-key cache's invalidations and the event wake-ups ride
one connection instead of one each. The connection is checked every few seconds and
opened again with backoff after a loss; each subscriber is told when the subscription
is live and as soon as it is lost (notifications may then have been missed, so a
subscriber must fall back to asking the database).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from singura_vault.logs import get_logger

__all__ = ["Listener"]

log = get_logger(__name__)

# How often the live connection is probed (a connection can die without a word), and
# how long a probe may take before the connection counts as lost.
CHECK_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 2.0
_RETRYABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(eq=False)
class _Subscriber:
    on_notify: Callable[[str], None]
    on_state: Callable[[bool], None]


class Listener:
    """Runs the shared LISTEN connection while at least one subscriber follows a channel."""

    def __init__(self, dsn: str, connect_timeout_s: float) -> None:
        self._dsn = dsn
        self._connect_timeout_s = connect_timeout_s
        self._subscribers: dict[str, list[_Subscriber]] = {}
        # Set while the connection is live, with the channels it LISTENs on.
        self._conn: asyncpg.Connection | None = None
        self._channels: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        # One operation at a time on the connection: asyncpg refuses a second one while
        # another is in progress (a subscriber's LISTEN during the liveness probe).
        self._lock = asyncio.Lock()

    async def listen(
        self,
        channel: str,
        on_notify: Callable[[str], None],
        on_state: Callable[[bool], None],
    ) -> None:
        """Follow ``channel`` until cancelled: ``on_notify(payload)`` per notification,
        ``on_state(True)`` when the subscription is live, ``on_state(False)`` when lost."""
        subscriber = _Subscriber(on_notify, on_state)
        self._subscribers.setdefault(channel, []).append(subscriber)
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="db-listener")
            elif self._conn is not None and await self._subscribe(self._conn, channel):
                on_state(True)
            await asyncio.Event().wait()
        finally:
            await self._unsubscribe(channel, subscriber)

    async def _subscribe(self, conn: asyncpg.Connection, channel: str) -> bool:
        """LISTEN on ``channel`` too; False if that failed, in which case the connection
        is closed, so that the run loop opens a new one with every channel (and tells
        every subscriber the subscription was lost and is back)."""
        if channel in self._channels:
            return True
        try:
            async with self._lock:
                if conn is not self._conn or conn.is_closed():
                    # Lost while this waited: the next connection LISTENs on every
                    # channel subscribed by then, this one included.
                    return False
                await conn.add_listener(channel, self._dispatch)
        except _RETRYABLE as exc:
            log.warning("db_listen_lost", error_type=type(exc).__name__)
            conn.terminate()
            return False
        self._channels.add(channel)
        return True

    async def _unsubscribe(self, channel: str, subscriber: _Subscriber) -> None:
        remaining = self._subscribers.get(channel, [])
        remaining.remove(subscriber)
        if remaining:
            return
        del self._subscribers[channel]
        if self._subscribers:
            conn = self._conn
            if conn is not None and channel in self._channels:
                self._channels.discard(channel)
                # Best effort: the connection may be closed under the UNLISTEN (the
                # last subscriber leaving closes it; asyncpg then fails in its own ways,
                # AttributeError included), and a dying connection's LISTEN is harmless.
                with contextlib.suppress(Exception):
                    async with self._lock:
                        if conn is self._conn and not conn.is_closed():
                            await conn.remove_listener(channel, self._dispatch)
            return
        # The last subscriber is gone: close the connection.
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        for subscriber in list(self._subscribers.get(channel, ())):
            subscriber.on_notify(str(payload))

    def _tell(self, live: bool) -> None:
        for subscribers in list(self._subscribers.values()):
            for subscriber in list(subscribers):
                subscriber.on_state(live)

    def _terminated(self, conn: object) -> None:
        if self._conn is conn:
            self._lost()

    def _lost(self) -> None:
        self._conn = None
        self._channels = set()
        self._tell(False)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout_s,
                    server_settings={"application_name": "singura-vault-listener"},
                )
            except _RETRYABLE as exc:
                log.warning("db_listen_failed", error_type=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            try:
                # Told at once when the server closes the connection (the probes below
                # catch a connection that died silently).
                conn.add_termination_listener(self._terminated)
                # A subscriber may arrive while the channels are being added: add until
                # none is missing, then go live with no await in between.
                added: set[str] = set()
                while missing := set(self._subscribers) - added:
                    for channel in missing:
                        await conn.add_listener(channel, self._dispatch)
                        added.add(channel)
                self._conn, self._channels = conn, added
                self._tell(True)
                backoff = 0.5
                while True:
                    await asyncio.sleep(CHECK_INTERVAL_S)
                    async with self._lock:
                        await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S)
            except _RETRYABLE as exc:
                log.warning("db_listen_lost", error_type=type(exc).__name__)
            finally:
                if self._conn is conn:
                    self._lost()
                with contextlib.suppress(Exception):
                    conn.terminate()
