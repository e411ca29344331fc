"""The event sequencer: gives committed events a global position, for admin watches.

An organization's events are ordered by its own dense cursor, assigned in the writing
transaction (migration 024). An admin key watches every organization, which needs one
order across them all without serializing every write on one counter: this loop numbers
committed events after the fact, through ``singura.events_sequence`` (migration 028),
which takes turns with the sequencers of other processes under an advisory lock, so a
position n+1 is never visible before n. A process that dies mid-batch leaves its batch
rolled back and still unnumbered for the next run.

It runs when this process has committed a write (:meth:`EventSequencer.wake`, called by
the pool after each write transaction, and by the expiry reminder job), when another
process's sequencer announced a batch (LISTEN, :meth:`EventService.listen`), and as a
fallback every ``fallback_interval_s``: that picks up events of writers that are not a
vault server (an operator's SQL, a CLI command) and of a process that died. After a
batch it wakes this process's watches; the database NOTIFYs the other processes.

It also counts events emitted, by type (each event is numbered once, by one process, so
the counters of all processes add up to the events written), and reports the age of
the oldest event still without a position. It must never write an event.
"""

from __future__ import annotations

from collections.abc import Callable

from singura_vault import metrics
from singura_vault.logs import get_logger
from singura_vault.repositories.events import EventRepository
from singura_vault.tasks import WokenLoop

log = get_logger(__name__)

SEQUENCE_BATCH = 1000
FALLBACK_INTERVAL_S = 1.0


class EventSequencer(WokenLoop):
    def __init__(
        self,
        repository: EventRepository,
        *,
        on_sequenced: Callable[[], None] = lambda: None,
        batch: int = SEQUENCE_BATCH,
        fallback_interval_s: float = FALLBACK_INTERVAL_S,
    ) -> None:
        self._repository = repository
        self._on_sequenced = on_sequenced
        self._batch = batch
        super().__init__(fallback_interval_s)
        self._failing = False

    async def _pass(self) -> bool:
        await self.run_once()
        return False  # run_once numbers everything committed: wait for the next wake-up

    async def run_once(self) -> int:
        """Number everything committed now; returns how many events this call numbered.
        A failure is logged (once until the next success) and retried on the next run."""
        total = 0
        try:
            while True:
                batch = await self._repository.sequence(self._batch)
                for event_type, n in batch.by_type.items():
                    metrics.EVENTS_EMITTED.labels(event_type).inc(n)
                metrics.EVENTS_UNSEQUENCED_AGE.set(batch.oldest_pending_s)
                total += batch.sequenced
                if batch.sequenced < self._batch:
                    break
        except Exception as exc:  # the loop must outlive any failure; the run is retried
            if not self._failing:
                log.warning("event_sequencer_failed", error_type=type(exc).__name__)
            self._failing = True
        else:
            if self._failing:
                log.info("event_sequencer_recovered")
            self._failing = False
        if total:
            self._on_sequenced()
        return total
