"""The purge job: deleted connections go for good once their recovery window ends.

DeleteConnection (without force) marks a connection and sets its purge time
(SINGURA_CONNECTION_RECOVERY_WINDOW from the delete). Every vault process runs this
job; each pass asks PostgreSQL to delete the connections due by the job's clock
(singura.connection_purge, migration 030), batch by batch. The state is the rows
themselves, so several processes purging at once delete each connection once, and a
process that stops mid-pass leaves the rest to the next pass of any process. The
connection's credentials go with it (their rows, ciphertexts included); the database
audits each purge (connection.purged, actor ``system``) and emits the event.

The clock is injected: tests purge "eight days later" without waiting. It must never
purge anything whose window has not ended by the database's own clock plus the skew
between the two, so production uses the wall clock.
"""

from __future__ import annotations

import asyncio

from singura_vault.clock import Clock, utc_now
from singura_vault.logs import get_logger
from singura_vault.repositories.connections import ConnectionRepository

log = get_logger(__name__)

# Connections deleted per statement (one transaction each); a pass goes on until none
# is due, at most MAX_PER_PASS of them.
PURGE_BATCH = 100
MAX_PER_PASS = 10_000
DEFAULT_INTERVAL_S = 60.0


class ConnectionPurger:
    def __init__(
        self,
        repository: ConnectionRepository,
        *,
        clock: Clock = utc_now,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._interval_s = interval_s

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the loop must outlive a failed pass; retried later
                log.warning("connection_purge_failed", error_type=type(exc).__name__)
            await asyncio.sleep(self._interval_s)

    async def run_once(self) -> int:
        """Purge every connection whose purge time has come by the clock; how many."""
        now = self._clock()
        purged = 0
        while purged < MAX_PER_PASS:
            batch = await self._repository.purge(now, PURGE_BATCH)
            for organization_id, connection_id in batch:
                log.info(
                    "connection_purged",
                    organization_id=str(organization_id),
                    connection_id=str(connection_id),
                )
            purged += len(batch)
            if len(batch) < PURGE_BATCH:
                break
        return purged
