"""Reads from a hot standby, within a staleness bound (DATABASE_REPLICA_URL).

A replica is only as good as what it has replayed. Every tick, the vault samples the
primary's WAL position (``pg_current_wal_lsn()``), then the replica's replay position
(``pg_last_wal_replay_lsn()``). A commit acknowledged before a primary sample was
taken lies at or below that sample's position. So once the replica has replayed past
a sample, it shows everything committed before the moment that sample was taken: the
replica is *current as of* that moment. A read may go to the replica only while
"current as of" is at most SINGURA_REPLICA_MAX_LAG ago. A caller's consistency token
(the primary position after its own write) must also be replayed.

If the ticks stop (the replica or the primary is unreachable), "current as of" stops
advancing and reads fall back to the primary: the bound fails safe.

:class:`ReadRouter` is the whole of read routing: it owns the replica, its freshness
and the watcher, sends a statement there when the request may read it
(:meth:`ReadRouter.routes`) and hands a write its consistency token. Which requests
may is declared in one place above it, ``api/replica_reads.py``; the request context
carries that answer here. The pool (db/pool.py) holds a router only while a replica
is attached, and this module knows the pool only through the two small protocols
below, so the two do not import each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Protocol
from uuid import UUID

import asyncpg

from singura_vault import metrics
from singura_vault.context import current_request, note_write_position
from singura_vault.errors import Aborted, ConfigError, Unavailable, VaultError
from singura_vault.logs import get_logger

log = get_logger(__name__)

# The WAL position of a primary, or of what a standby has replayed.
WalFunction = Literal["pg_current_wal_lsn", "pg_last_wal_replay_lsn"]

# How often, at most, the primary and replica positions are sampled.
_TICK_S = 0.25


class WalSource(Protocol):
    """A server whose WAL position can be read (the primary's pool, db/pool.py)."""

    async def wal_position(self, function: WalFunction) -> int | None: ...


class ReplicaPool(WalSource, Protocol):
    """The replica's pool as the router uses it (a db/pool.Database)."""

    async def fetch_scoped(
        self, organization_id: UUID | None, sql: str, *args: object
    ) -> list[asyncpg.Record]: ...

    async def ensure_safe_service_role(self, variable: str = ...) -> None: ...

    async def close(self, timeout_s: float = ...) -> None: ...


# How many primary samples to keep: enough to cover the lag bound at the tick rate.
_MAX_SAMPLES = 512


@dataclass
class Freshness:
    """How current a replica is, from paired samples (times are time.monotonic())."""

    max_lag_s: float
    _primary: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=_MAX_SAMPLES))
    current_as_of: float | None = None
    replayed: int = 0

    def primary_at(self, when: float, lsn: int) -> None:
        self._primary.append((when, lsn))

    def replica_replayed(self, lsn: int) -> None:
        """The replica has replayed up to ``lsn``: it is current as of the newest
        primary sample at or below it."""
        self.replayed = lsn
        for when, sampled in reversed(self._primary):
            if sampled <= lsn:
                if self.current_as_of is None or when > self.current_as_of:
                    self.current_as_of = when
                return

    def staleness_s(self, now: float | None = None) -> float | None:
        """How far behind the replica may be (None: not known to be current at all)."""
        if self.current_as_of is None:
            return None
        return (time.monotonic() if now is None else now) - self.current_as_of

    def serves(self, min_lsn: int | None, now: float | None = None) -> bool:
        """Whether a read that tolerates SINGURA_REPLICA_MAX_LAG (and must see
        ``min_lsn``, a caller's consistency token) may go to the replica."""
        staleness = self.staleness_s(now)
        if staleness is None or staleness > self.max_lag_s:
            return False
        return min_lsn is None or self.replayed >= min_lsn


async def watch_freshness(
    primary: WalSource, replica: ReplicaPool, freshness: Freshness, interval_s: float
) -> None:
    """Sample the primary's and the replica's WAL positions every ``interval_s`` until
    cancelled. The replica serves no read before its login has passed the same check
    as DATABASE_URL's: it must be bound by row-level security."""
    failing, checked = False, False
    while True:
        try:
            if not checked:
                await replica.ensure_safe_service_role("DATABASE_REPLICA_URL")
                checked = True
            position = await primary.wal_position("pg_current_wal_lsn")
            if position is not None:
                freshness.primary_at(time.monotonic(), position)
            # None: not a standby (a promoted one, say), so its lag is unknown.
            replayed = await replica.wal_position("pg_last_wal_replay_lsn")
            if replayed is not None:
                freshness.replica_replayed(replayed)
            if failing:
                log.info("replica_freshness_restored")
            failing = False
        except ConfigError as exc:
            log.error("replica_refused", problem=str(exc))
            return  # never current: every read stays on the primary
        except Exception as exc:  # any failure only keeps reads on the primary; retried
            if not failing:  # once per outage, not every tick
                log.warning("replica_freshness_unknown", error_type=type(exc).__name__)
            failing = True
        staleness = freshness.staleness_s()
        metrics.REPLICA_STALENESS.set(-1 if staleness is None else staleness)
        await asyncio.sleep(interval_s)


class ReadRouter:
    """Where a read goes while a replica is attached, and the consistency token of a
    write; needs a running event loop (it starts the freshness watcher)."""

    def __init__(self, primary: WalSource, replica: ReplicaPool, max_lag_s: float) -> None:
        self._primary = primary
        self._replica = replica
        self._freshness = freshness = Freshness(max_lag_s)
        interval_s = min(_TICK_S, max(max_lag_s / 4, 0.02))
        self._watch = asyncio.create_task(
            watch_freshness(primary, replica, freshness, interval_s), name="replica-freshness"
        )

    @property
    def staleness_s(self) -> float | None:
        """How far behind the replica may be; None when it is not known to be current."""
        return self._freshness.staleness_s()

    @staticmethod
    def routes(writes: bool) -> bool:
        """The replica-read decision: a statement that records nothing, in a request
        that api/replica_reads.py declared may read from a replica (the request
        context's ``replica_ok``). Everything else reads the primary."""
        return not writes and current_request().replica_ok

    async def read(
        self, organization_id: UUID | None, sql: str, args: tuple[object, ...]
    ) -> list[asyncpg.Record] | None:
        """The rows from the replica if it is current enough for this request, else
        None (the caller reads the primary, also when the replica fails)."""
        if self._freshness.serves(current_request().min_lsn):
            try:
                rows = await self._replica.fetch_scoped(organization_id, sql, *args)
            except (Unavailable, Aborted) as exc:
                # Aborted: a statement cancelled by a conflict with recovery (replay
                # needed rows it was reading); the primary has no such conflict.
                log.warning("replica_read_failed", error_type=type(exc).__name__)
            else:
                metrics.REPLICA_READS.labels("replica").inc()
                return rows
        metrics.REPLICA_READS.labels("primary").inc()
        return None

    async def committed(self) -> None:
        """After a write: note the consistency token, a position at or past this write's
        commit record, so a read that passes it back skips a replica that has not
        replayed the write. One round trip; the write stands if this fails."""
        try:
            position = await self._primary.wal_position("pg_current_wal_lsn")
            if position is not None:
                note_write_position(position)
        except VaultError as exc:
            log.warning("consistency_token_unavailable", error_type=type(exc).__name__)

    async def close(self, timeout_s: float) -> None:
        """Stop the watcher (awaited), then close the replica's pool."""
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        await self._replica.close(timeout_s)
