"""The audit sequencer: chains the events that requests recorded unchained.

A request's transaction records its audit event in ``audit_pending`` and commits
(audit-or-fail holds: no plaintext leaves before that commit), without touching its
organization's chain head, so requests of one tenant never queue behind each other.
This loop then chains committed events, in batches, through
``singura.audit_sequence`` (migration 012), which serializes sequencers of every
process under one advisory lock: whichever process calls takes its turn, and a process
that dies mid-batch leaves its batch rolled back and still pending for the next one.

The loop runs when this process has committed a write (:meth:`AuditSequencer.wake`,
called by the pool after each write transaction) and, as a fallback, every
``fallback_interval_s``: that picks up events of a process that died before chaining
them, and of commands that ran outside a server (``audit prune``).
"""

from __future__ import annotations

import asyncio
import contextlib

from singura_vault.logs import get_logger
from singura_vault.repositories.audit import AuditRepository

log = get_logger(__name__)

# Events per sequencer transaction: large enough that a burst is chained in a few
# batches, small enough that one batch holds the lock for milliseconds.
SEQUENCE_BATCH = 1000
FALLBACK_INTERVAL_S = 1.0


class AuditSequencer:
    def __init__(
        self,
        repository: AuditRepository,
        *,
        batch: int = SEQUENCE_BATCH,
        fallback_interval_s: float = FALLBACK_INTERVAL_S,
    ) -> None:
        self._repository = repository
        self._batch = batch
        self._fallback_interval_s = fallback_interval_s
        self._wake = asyncio.Event()
        self._failing = False

    def wake(self) -> None:
        """Ask for a run soon. Cheap: wakes coalesce while a run is in progress."""
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            # asyncio.timeout, never wait_for: on Python 3.11 wait_for drops a
            # cancellation that arrives just as the wait ends (a write woke us while
            # VaultServer.stop cancelled us), and stop() then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._fallback_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.run_once()

    async def run_once(self) -> int:
        """Chain everything pending now; returns how many events this call chained.
        A failure is logged (once until the next success) and retried on the next run:
        the events stay pending and durable meanwhile."""
        chained = 0
        try:
            chained = await self._repository.chain_pending(self._batch)
        except Exception as exc:  # the loop must outlive any failure; the run is retried
            self._report_failure(exc)
        else:
            if self._failing:
                log.info("audit_sequencer_recovered")
            self._failing = False
        return chained

    def _report_failure(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning("audit_sequencer_failed", error_type=type(exc).__name__)
        self._failing = True
