"""Wrapped data keys: the organization's envelope keys as the database holds them.

Only wrapped keys pass through here (the root key or the organization's own key
wraps them; service/data_keys.py unwraps them): no key byte, no plaintext.
"""

from __future__ import annotations

from uuid import UUID

from singura_vault.db.pool import Database
from singura_vault.domain.sealed import StoredDataKey
from singura_vault.repositories._rows import data_key_from_row
from singura_vault.repositories.queries import query


class DataKeyRepository:
    """An organization's data-key versions, under row-level security."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def next_data_key_version(self, organization_id: UUID) -> int:
        """The version number a new data key of the organization gets."""
        async with self._db.tenant(organization_id) as conn:
            version: int = await conn.fetchval(query("data_key_next_version"), organization_id)
        return version

    async def add_data_key(self, key: StoredDataKey, *, only_if_none: bool = False) -> None:
        """Insert a wrapped data key; a concurrent insert of the same version wins
        silently. With only_if_none, nothing is inserted if a live key exists."""
        async with self._db.tenant(key.organization_id) as conn:
            await conn.execute(query("data_key_creation_lock"), key.organization_id)
            if only_if_none and await conn.fetchrow(query("data_key_current"), key.organization_id):
                return
            await conn.execute(
                query("data_key_insert"),
                key.organization_id,
                key.version,
                key.root_key_id,
                key.wrapped_key,
            )

    async def current_data_key(self, organization_id: UUID) -> StoredDataKey | None:
        """The organization's newest live data key, if it has one."""
        async with self._db.tenant(organization_id, read_only=True) as conn:
            row = await conn.fetchrow(query("data_key_current"), organization_id)
        return data_key_from_row(row) if row is not None else None

    async def live_data_keys(self, organization_id: UUID) -> list[StoredDataKey]:
        """Every live data key version of the organization."""
        async with self._db.tenant(organization_id, read_only=True) as conn:
            rows = await conn.fetch(query("data_keys_of_org"), organization_id)
        return [data_key_from_row(r) for r in rows]
