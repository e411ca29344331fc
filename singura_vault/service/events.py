"""Event use cases: list an organization's events after a cursor, and watch them live.

The events themselves are written by the database, in the transaction of each change
(migrations/024_events_outbox.sql), with a per-organization cursor assigned in commit
order. So following the stream is only "give me what comes after the last cursor I
handled": no gap, no duplicate, across any reconnect. This module must never write
an event, and never return one of an organization the caller may not read.

WatchEvents polls the outbox: at once after a write of this process commits (the
pool's commit listeners call :meth:`EventService.wake`), and otherwise every
``poll_interval_s`` (writes of other vault processes). Each poll is one statement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from uuid import UUID

from singura_vault.errors import InvalidArgument
from singura_vault.repositories.events import Event, EventRepository
from singura_vault.service import pagination, validation
from singura_vault.service.authz import READ, Authorizer

__all__ = ["EVENT_TYPES", "Event", "EventPage", "EventService"]

# The types the vault emits today (docs/events.md); the rest of issue #24's list
# is not built yet, and asking for it is refused rather than silently never matched.
EVENT_TYPES = (
    "connection.created",
    "connection.status_changed",
    "connection.scopes_changed",
    "connection.deleted",
    "connection.undeleted",
    "connection.purged",
    "credential.stored",
)

DEFAULT_POLL_INTERVAL_S = 1.0
# Events read per poll of a watch; a full batch is followed by the next at once.
WATCH_BATCH = 500


@dataclass(frozen=True)
class EventPage:
    events: tuple[Event, ...]
    next_after: int
    more: bool


class EventService:
    def __init__(
        self,
        repository: EventRepository,
        authorizer: Authorizer | None = None,
        *,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        self._repository = repository
        self._authz = authorizer or Authorizer()
        self._poll_interval_s = poll_interval_s
        self._waiters: set[asyncio.Event] = set()

    def wake(self) -> None:
        """A write of this process committed: every watch polls now."""
        for waiter in self._waiters:
            waiter.set()

    def _check(
        self, organization_id: str, types: Sequence[str], after: int, action: str
    ) -> tuple[UUID, tuple[str, ...]]:
        if not organization_id:
            raise InvalidArgument(
                "organization_id",
                "is required (watching every organization at once is not available yet)",
            )
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, action)
        unknown = [t for t in types if t not in EVENT_TYPES]
        if unknown:
            raise InvalidArgument(
                "types",
                f"{unknown[0][:64]!r} is not an event type the vault emits; "
                f"known types: {', '.join(EVENT_TYPES)}",
            )
        if after < 0:
            raise InvalidArgument("after", "must not be negative (0 means from the first event)")
        return org_id, tuple(dict.fromkeys(types))

    async def list_events(
        self, organization_id: str, types: Sequence[str], after: int, page_size: int
    ) -> EventPage:
        org_id, wanted = self._check(organization_id, types, after, "list events")
        size = pagination.page_size(page_size)
        rows = await self._repository.after(org_id, after, wanted, size + 1)
        items = tuple(rows[:size])
        return EventPage(items, items[-1].cursor if items else after, len(rows) > size)

    async def watch(
        self, organization_id: str, types: Sequence[str], after: int
    ) -> AsyncIterator[Event]:
        """The events after ``after``, then each new one, in cursor order, forever."""
        org_id, wanted = self._check(organization_id, types, after, "watch events")
        cursor = after
        while True:
            # Registered before the read: a commit between the read and the wait
            # sets it, so the wait returns at once instead of missing the wake-up.
            waiter = asyncio.Event()
            self._waiters.add(waiter)
            try:
                batch = await self._repository.after(org_id, cursor, wanted, WATCH_BATCH)
                for event in batch:
                    cursor = event.cursor
                    yield event
                if len(batch) == WATCH_BATCH:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), self._poll_interval_s)
            finally:
                self._waiters.discard(waiter)
