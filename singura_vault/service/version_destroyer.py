"""The destruction job: erases the versions whose scheduled destruction has come.

DestroyCredentialVersion only schedules (``destroy_at`` = now + SINGURA_DESTROY_DELAY,
migration 029); every vault process runs this job, and each pass erases, in
PostgreSQL, the ciphertext and nonce of every version whose ``destroy_at`` has passed
(singura.credential_destroy_due: across organizations, FOR UPDATE SKIP LOCKED, so two
processes never take the same row and a cancellation in flight is never overridden).
The row keeps its metadata; the trigger of migration 029 audits each destruction and
emits ``credential.version_destroyed`` in the same transaction. No state is held here:
a process that dies mid-pass leaves the rest to the next pass of any process.

"Now" is the injected clock's, the one CredentialService schedules with, so a test
moves time forward instead of sleeping. It never sees a key, ciphertext or value.
"""

from __future__ import annotations

import asyncio

from singura_vault.clock import Clock, utc_now
from singura_vault.logs import get_logger
from singura_vault.repositories.credentials import CredentialRepository

log = get_logger(__name__)

# Versions erased per statement (one transaction each); a pass goes on until none is due.
DESTROY_BATCH = 500
# How often each process looks for due versions: a destruction happens at most this
# long after its destroy_time.
DEFAULT_INTERVAL_S = 60.0


class VersionDestroyer:
    def __init__(
        self,
        repository: CredentialRepository,
        *,
        clock: Clock = utc_now,
        interval_s: float = DEFAULT_INTERVAL_S,
        batch_size: int = DESTROY_BATCH,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._interval_s = interval_s
        self._batch_size = batch_size

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the loop must outlive a failed pass; retried later
                log.warning("credential_destroy_pass_failed", error_type=type(exc).__name__)
            await asyncio.sleep(self._interval_s)

    async def run_once(self) -> int:
        """Erase every version due now, a batch per transaction; returns how many."""
        now = self._clock()
        destroyed = 0
        while True:
            count = await self._repository.destroy_due(now, self._batch_size)
            destroyed += count
            if count < self._batch_size:
                break
        if destroyed:
            log.info("credential_versions_destroyed", count=destroyed)
        return destroyed
