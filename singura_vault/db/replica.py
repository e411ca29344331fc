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
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from singura_vault import metrics
from singura_vault.errors import ConfigError
from singura_vault.logs import get_logger

if TYPE_CHECKING:
    from singura_vault.db.pool import Database

log = get_logger(__name__)

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
    primary: Database, replica: Database, freshness: Freshness, interval_s: float
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
