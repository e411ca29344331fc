"""The expiry reminder job: credential.expiring and credential.expired events.

For each current credential version with an expire_time (OAuth tokens and static API
keys alike), the database sends ``credential.expiring`` at each threshold of
SINGURA_EXPIRY_REMINDERS that is shorter than the version's lifetime, and
``credential.expired`` once it has passed (``singura.credential_expiry_notices_send``,
migration 028). What was sent lives in PostgreSQL and is claimed by the same statement
that appends the event, so every vault process may run this job: none sends a reminder
twice, and a process that dies mid-run leaves nothing half-sent.

The clock is injected (``now``): the job asks "what is due at this instant", and the
tests move that instant instead of waiting. This module must never write an event
itself, and never look at a credential's value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta

from singura_vault.clock import Clock, utc_now
from singura_vault.logs import get_logger
from singura_vault.repositories.events import EventRepository

log = get_logger(__name__)

CHECK_INTERVAL_S = 60.0
# Events per transaction: each one holds its organization's event counter until the
# transaction commits, so batches stay short.
SEND_BATCH = 100


class ExpiryReminderJob:
    def __init__(
        self,
        repository: EventRepository,
        thresholds: Sequence[tuple[str, float]],
        *,
        now: Clock = utc_now,
        on_sent: Callable[[], None] = lambda: None,
        interval_s: float = CHECK_INTERVAL_S,
        batch: int = SEND_BATCH,
    ) -> None:
        self._repository = repository
        self._thresholds = tuple((label, timedelta(seconds=s)) for label, s in thresholds)
        self._now = now
        self._on_sent = on_sent
        self._interval_s = interval_s
        self._batch = batch

    async def run_once(self) -> int:
        """Send everything due now; returns how many events were emitted."""
        at = self._now()
        sent = 0
        while True:
            n = await self._repository.send_expiry_notices(at, self._thresholds, self._batch)
            sent += n
            if n < self._batch:
                break
        if sent:
            self._on_sent()
        return sent

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the job must outlive any failure; retried next run
                log.warning("expiry_reminders_failed", error_type=type(exc).__name__)
            await asyncio.sleep(self._interval_s)
