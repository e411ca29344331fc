"""Audit events written by the service inside the transaction of the change they record.

Only ids, types, statuses and reasons go into ``details`` -- never a secret.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from singura_vault.repositories.queries import query


async def append_event(
    conn: asyncpg.Connection,
    *,
    organization_id: UUID | None,
    actor: str,
    action: str,
    resource_type: str,
    resource_id: str | None,
    request_id: str,
    details: dict[str, Any],
    outcome: str = "success",
) -> None:
    """Append one event in the caller's transaction (so it commits or rolls back with it)."""
    await conn.execute(
        query("audit_append"),
        organization_id,
        actor,
        action,
        resource_type,
        resource_id,
        request_id or None,
        outcome,
        details,
    )
