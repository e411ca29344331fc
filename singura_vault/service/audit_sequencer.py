"""The audit sequencer: chains the events that requests recorded unchained.

A request's transaction records its audit event in ``audit_pending`` and commits
(audit-or-fail holds: no plaintext leaves before that commit), without touching its
organization's chain head, so requests of one tenant never queue behind each other.
This loop then chains committed events, in batches, through
``singura.audit_sequence_after`` (migrations 012 and 023). Sequencers of every process
run side by side: each batch takes its events with ``FOR UPDATE SKIP LOCKED`` and holds
the heads of the chains it moves, so each chain stays linear; a process that dies
mid-batch leaves its batch rolled back and still pending for the next one. Each batch
starts where the previous one stopped (a keyset on id), so its cost does not grow with
the backlog.

The loop runs when this process has committed a write (:meth:`AuditSequencer.wake`,
called by the pool after each write transaction) and, as a fallback, every
``fallback_interval_s``: that picks up events of a process that died before chaining
them, and of commands that ran outside a server (``audit prune``).

Reads never run this loop: :meth:`AuditSequencer.catch_up` chains the reader's own
chain only (a caller sees its own committed events) -- for a list call only when a few
of its events are pending, a backlog being read as chained -- and a read never waits
for the sequencing of other chains.
"""

from __future__ import annotations

from uuid import UUID

from singura_vault.logs import get_logger
from singura_vault.repositories.audit import AuditRepository
from singura_vault.tasks import WokenLoop

log = get_logger(__name__)

# Events per sequencer transaction: large enough that a burst is chained in a few
# batches, small enough that one batch holds the lock for milliseconds.
SEQUENCE_BATCH = 1000
FALLBACK_INTERVAL_S = 1.0
# Under load every audit commit wakes the loop, and unpaced it chained ~2 events per
# pass, each pass a statement and a WAL flush of its own. At most one pass per 10 ms
# chains what gathered meanwhile: pinned to one core, PostgreSQL's CPU per reveal fell
# by 13-28% and reveals rose 3-25% in four alternated pairs (docs/scaling.md). Reads,
# exports and verifications chain their own chain first, so no caller waits for it; a
# vault idle for 10 ms chains at once.
PASS_SPACING_S = 0.01
# A read chains its own chain first only when at most this many of its events are
# pending: bounded work (one batch at most); more is a backlog, the loop's to chain.
CATCH_UP_LIMIT = SEQUENCE_BATCH


class AuditSequencer(WokenLoop):
    def __init__(
        self,
        repository: AuditRepository,
        *,
        batch: int = SEQUENCE_BATCH,
        fallback_interval_s: float = FALLBACK_INTERVAL_S,
        pass_spacing_s: float = PASS_SPACING_S,
    ) -> None:
        self._repository = repository
        self._batch = batch
        super().__init__(fallback_interval_s, min_spacing_s=pass_spacing_s)
        self._failing = False

    async def _pass(self) -> bool:
        await self.run_once()
        return False  # run_once chains everything pending: wait for the next wake-up

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

    async def catch_up(self, organization_id: UUID | None, *, whole: bool = False) -> bool:
        """Before a read of one chain (None: the system chain), chain that chain's
        pending events so that the caller sees its own committed events. A list call
        (``whole`` false) does so only when at most ``CATCH_UP_LIMIT`` are pending: a
        backlog is the loop's, and the list returns what is chained. An export or a
        verification (``whole``) chains them all, ``CATCH_UP_LIMIT`` per transaction.
        Never chains other chains, never waits for their sequencing. Returns whether
        the chain was caught up; on a failure the read goes on with what is chained
        (VerifyAuditChain reports the rest as pending)."""
        after = 0
        try:
            while True:
                step = await self._repository.chain_own(
                    organization_id, after, CATCH_UP_LIMIT, skip_backlog=not whole
                )
                if step is None:
                    return False
                chained, after = step
                if chained < CATCH_UP_LIMIT:
                    return True
        except Exception as exc:  # the read goes on with what is chained
            log.warning("audit_catch_up_failed", error_type=type(exc).__name__)
            return False

    def _report_failure(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning("audit_sequencer_failed", error_type=type(exc).__name__)
        self._failing = True
