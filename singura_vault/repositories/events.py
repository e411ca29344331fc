"""The event outbox: the only module that runs event SQL.

Events are written by database triggers and functions in the transaction of the
change (migrations 024 and 028); nothing in the vault inserts one. This repository
reads them, runs the database's sequencer (a global position after commit) and its
expiry-reminder function, and listens for the sequencer's wake-ups. It must never
return more than the caller's organization, except to an admin key: row-level
security holds that even if a caller named another one, and every organization's
events are readable only through a function that requires admin scope.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from singura_vault.db.pool import Database
from singura_vault.errors import InvariantBroken
from singura_vault.repositories._rows import utc
from singura_vault.repositories.queries import query

# Where the sequencer NOTIFYs after it numbered events (migration 028): a wake-up, no data.
EVENTS_CHANNEL = "singura_events"


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change of an organization (ids, states, times, reasons; no secret)."""

    organization_id: UUID
    cursor: int
    type: str
    connection_id: UUID | None
    credential_id: UUID | None
    data: dict[str, Any]
    created_at: datetime
    # The global position (admin watches), None until the sequencer has numbered it.
    position: int | None = None


@dataclass(frozen=True, slots=True)
class SequencedBatch:
    """What one sequencer transaction numbered."""

    sequenced: int
    by_type: dict[str, int]
    # Age of the oldest committed event still without a position, in seconds.
    oldest_pending_s: float


def _event(row: Any) -> Event:
    return Event(
        organization_id=row["organization_id"],
        cursor=row["cursor"],
        type=row["type"],
        connection_id=row["connection_id"],
        credential_id=row["credential_id"],
        data=row["data"],
        created_at=utc(row["created_at"]) or row["created_at"],
        position=row["position"],
    )


class EventRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def after(
        self, organization_id: UUID, after: int, types: Sequence[str], limit: int
    ) -> list[Event]:
        """Up to ``limit`` events with a cursor above ``after``, oldest first."""
        rows = await self._db.fetch_scoped(
            organization_id,
            query("events_after"),
            organization_id,
            after,
            list(types),
            limit,
        )
        return [_event(row) for row in rows]

    async def after_position(self, after: int, types: Sequence[str], limit: int) -> list[Event]:
        """Every organization's events with a position above ``after``, in position
        order (admin scope only: the database refuses any other)."""
        rows = await self._db.fetch_scoped(
            None, query("events_after_position"), after, list(types), limit
        )
        return [_event(row) for row in rows]

    async def sequence(self, limit: int) -> SequencedBatch:
        """Number up to ``limit`` committed events (one transaction, several processes
        safe: the database takes turns under an advisory lock)."""
        row = await self._db.fetchrow_unscoped(query("events_sequence"), limit)
        if row is None:
            raise InvariantBroken("sequence: row is None")
        return SequencedBatch(
            sequenced=row["sequenced"],
            by_type=dict(zip(row["types"], row["counts"], strict=True)),
            oldest_pending_s=float(row["oldest_pending_s"]),
        )

    async def send_expiry_notices(
        self, now: datetime, thresholds: Sequence[tuple[str, timedelta]], limit: int
    ) -> int:
        """Emit the credential.expiring / credential.expired events due at ``now``; how
        many (at most ``limit``). Each is sent once whichever process asks."""
        row = await self._db.fetchrow_unscoped(
            query("credential_expiry_notices_send"),
            now,
            [t for _, t in thresholds],
            [label for label, _ in thresholds],
            limit,
        )
        if row is None:
            raise InvariantBroken("send_expiry_notices: row is None")
        sent: int = row[0]
        return sent

    async def listen(
        self, on_notify: Callable[[str], None], on_state: Callable[[bool], None]
    ) -> None:
        """Call ``on_notify`` whenever a sequencer (of any process) numbered events;
        ``on_state(live)`` when notifications start or stop flowing; until cancelled."""
        await self._db.listen(EVENTS_CHANNEL, on_notify, on_state)
