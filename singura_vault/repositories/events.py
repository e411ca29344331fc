"""The event outbox, read side: the only module that runs event SQL.

Events are written by database triggers in the transaction of the change
(migrations/024_events_outbox.sql); nothing in the vault inserts one, so this
repository only reads. It must never return more than the caller's organization:
row-level security holds that even if a caller named another one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from singura_vault.db.pool import Database
from singura_vault.repositories._rows import utc
from singura_vault.repositories.queries import query


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
        return [
            Event(
                organization_id=row["organization_id"],
                cursor=row["cursor"],
                type=row["type"],
                connection_id=row["connection_id"],
                credential_id=row["credential_id"],
                data=row["data"],
                created_at=utc(row["created_at"]) or row["created_at"],
            )
            for row in rows
        ]
