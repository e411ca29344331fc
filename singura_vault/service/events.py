"""Event use cases: list an organization's events after a cursor, and watch them live.

The events themselves are written by the database, in the transaction of each change
(migrations/024_events_outbox.sql), with a per-organization cursor assigned in commit
order. So following the stream is only "give me what comes after the last cursor I
handled": no gap, no duplicate, across any reconnect. This module must never write
an event, and never return one of an organization the caller may not read.

An admin key with an empty ``organization_id`` lists and watches every organization:
its order is the global ``position`` the sequencer gives each event after it commits
(service/event_sequencer.py), and its ``after`` is a position.

WatchEvents polls the outbox: at once after a write of this process commits (the
pool's commit listeners call :meth:`EventService.wake`), after this process's sequencer
numbered events, when another process's sequencer announced a batch
(:meth:`EventService.follow_other_processes`, LISTEN), and otherwise every
``poll_interval_s``. Each poll is one statement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from uuid import UUID

from singura_vault.errors import InvalidArgument, InvariantBroken
from singura_vault.logs import get_logger
from singura_vault.repositories.events import Event, EventRepository
from singura_vault.service import pagination, validation
from singura_vault.service.authz import READ, Authorizer

__all__ = ["EVENT_TYPES", "Event", "EventPage", "EventService"]

log = get_logger(__name__)

# The types the vault emits (docs/events.md); a type not listed here is refused
# rather than silently never matched.
EVENT_TYPES = (
    "connection.created",
    "connection.status_changed",
    "connection.scopes_changed",
    "connection.deleted",
    "connection.undeleted",
    "connection.purged",
    "connection.refresh_failed",
    "connection.refresh_recovered",
    "connection.revoked_at_provider",
    "connection.authorized",
    "connection.reauthorized",
    "credential.stored",
    "credential.expiring",
    "credential.expired",
    "credential.version_disabled",
    "credential.version_enabled",
    "credential.version_destroy_scheduled",
    "credential.version_destroy_cancelled",
    "credential.version_destroyed",
    "key.data_key_rotated",
    "key.rewrap_completed",
    "key.organization_provider_changed",
    "key.organization_keys_migrated",
    "audit.checkpoint_created",
    "webhook.endpoint_disabled",
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
        """Events may have been committed or numbered: every watch polls now."""
        for waiter in self._waiters:
            waiter.set()

    async def follow_other_processes(self) -> None:
        """Wake the watches whenever a sequencer of any vault process numbered events
        (LISTEN, reconnected by the pool); until cancelled. While the subscription is
        down, watches still poll every ``poll_interval_s``."""

        def on_state(live: bool) -> None:
            log.info("event_wakeups_live" if live else "event_wakeups_lost")

        await self._repository.listen(lambda _payload: self.wake(), on_state)

    def _check(
        self, organization_id: str, types: Sequence[str], after: int, action: str
    ) -> tuple[UUID | None, tuple[str, ...]]:
        """The organization (None: every organization, for an admin key), and the types."""
        org_id: UUID | None = None
        if organization_id:
            org_id = validation.parse_uuid("organization_id", organization_id)
            self._authz.require(org_id, READ, action)
        else:
            self._authz.require_admin(
                f"{action} of every organization (an organization key names its organization)"
            )
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

    async def _after(
        self, org_id: UUID | None, after: int, types: tuple[str, ...], limit: int
    ) -> list[Event]:
        if org_id is None:
            return await self._repository.after_position(after, types, limit)
        return await self._repository.after(org_id, after, types, limit)

    async def list_events(
        self, organization_id: str, types: Sequence[str], after: int, page_size: int
    ) -> EventPage:
        org_id, wanted = self._check(organization_id, types, after, "list events")
        size = pagination.page_size(page_size)
        rows = await self._after(org_id, after, wanted, size + 1)
        items = tuple(rows[:size])
        return EventPage(items, _mark(org_id, items[-1]) if items else after, len(rows) > size)

    async def watch(
        self, organization_id: str, types: Sequence[str], after: int
    ) -> AsyncIterator[Event]:
        """The events after ``after``, then each new one, in cursor order (in position
        order for every organization), forever."""
        org_id, wanted = self._check(organization_id, types, after, "watch events")
        cursor = after
        while True:
            # Registered before the read: a commit between the read and the wait
            # sets it, so the wait returns at once instead of missing the wake-up.
            waiter = asyncio.Event()
            self._waiters.add(waiter)
            try:
                batch = await self._after(org_id, cursor, wanted, WATCH_BATCH)
                for event in batch:
                    cursor = _mark(org_id, event)
                    yield event
                if len(batch) == WATCH_BATCH:
                    continue
                # asyncio.timeout, not wait_for: a client's cancel arriving as the poll
                # interval ends must end the stream (see AuditSequencer.run_forever).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval_s):
                        await waiter.wait()
            finally:
                self._waiters.discard(waiter)


def _mark(org_id: UUID | None, event: Event) -> int:
    """What a reader resumes after: the cursor in an organization's stream, the
    position in every organization's (an admin read returns numbered events only)."""
    if org_id is None:
        if event.position is None:
            raise InvariantBroken("_mark: event.position is None")
        return event.position
    return event.cursor
