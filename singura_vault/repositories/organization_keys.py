"""Persistence for customer-managed keys: organization key providers and the
migrations of an organization's data keys between root keys (migration 031).

Provider rows hold the token only sealed (the service seals it under the global root
key before it gets here). Each data key moves in its own short transaction, so a
killed process loses at most the key in flight, and the migration's state is in
PostgreSQL for any process to resume.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import asyncpg

from singura_vault.db.pool import Database
from singura_vault.domain.key_management import OrganizationKeyMigration, OrganizationKeyProviderRow
from singura_vault.domain.sealed import StoredDataKey
from singura_vault.errors import InvariantBroken, NotFound
from singura_vault.repositories._rows import data_key_from_row
from singura_vault.repositories.queries import query

# Given a data key wrapped by its current root key, the same key wrapped by the target.
Rewrap = Callable[[StoredDataKey], Awaitable[StoredDataKey]]


def _provider(row: asyncpg.Record) -> OrganizationKeyProviderRow:
    return OrganizationKeyProviderRow(
        id=row["id"],
        organization_id=row["organization_id"],
        address=row["address"],
        mount=row["mount"],
        key_name=row["key_name"],
        token_root_key_id=row["token_root_key_id"],
        token_wrapped_key=row["token_wrapped_key"],
        token_nonce=row["token_nonce"],
        token_ciphertext=row["token_ciphertext"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        cleared_at=row["cleared_at"],
    )


def _migration(row: asyncpg.Record) -> OrganizationKeyMigration:
    return OrganizationKeyMigration(
        id=row["id"],
        organization_id=row["organization_id"],
        target_provider_id=row["target_provider_id"],
        state=row["state"],
        total=row["total"],
        done=row["done"],
        started_by=row["started_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )


class OrganizationKeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def in_force(self, organization_id: UUID) -> OrganizationKeyProviderRow | None:
        async with self._db.tenant(organization_id, read_only=True) as conn:
            row = await conn.fetchrow(query("organization_key_provider_in_force"), organization_id)
        return _provider(row) if row is not None else None

    async def provider(
        self, organization_id: UUID, provider_id: UUID
    ) -> OrganizationKeyProviderRow:
        async with self._db.tenant(organization_id, read_only=True) as conn:
            row = await conn.fetchrow(
                query("organization_key_provider_by_id"), organization_id, provider_id
            )
        if row is None:
            raise NotFound(
                f"organization key provider {provider_id} of organization {organization_id} "
                "does not exist"
            )
        return _provider(row)

    async def set_provider(
        self, row: OrganizationKeyProviderRow, target_prefix: str
    ) -> tuple[OrganizationKeyProviderRow, OrganizationKeyMigration]:
        """Put ``row`` in force (clearing the previous provider) and start the migration
        of the organization's data keys to it, superseding one still running: one
        transaction, audited and evented by migration 031's triggers."""
        org = row.organization_id
        async with self._db.tenant(org) as conn:
            await conn.execute(query("organization_key_provider_clear"), org, row.created_by)
            inserted = await conn.fetchrow(
                query("organization_key_provider_insert"),
                row.id,
                org,
                row.address,
                row.mount,
                row.key_name,
                row.token_root_key_id,
                row.token_wrapped_key,
                row.token_nonce,
                row.token_ciphertext,
                row.created_by,
            )
            if inserted is None:  # INSERT ... RETURNING returns its row
                raise InvariantBroken("set_provider: inserted is None")
            migration = await self._start(conn, org, row.id, target_prefix, row.created_by)
        return _provider(inserted), migration

    async def clear_provider(self, organization_id: UUID, actor: str) -> OrganizationKeyMigration:
        """Clear the provider in force and start the migration back to the global root key."""
        async with self._db.tenant(organization_id) as conn:
            cleared = await conn.fetchrow(
                query("organization_key_provider_clear"), organization_id, actor
            )
            if cleared is None:
                raise NotFound(
                    f"organization {organization_id} has no key provider: its data keys "
                    "already use the global root key"
                )
            return await self._start(conn, organization_id, None, None, actor)

    async def _start(
        self,
        conn: asyncpg.Connection,
        organization_id: UUID,
        target: UUID | None,
        target_prefix: str | None,
        actor: str,
    ) -> OrganizationKeyMigration:
        await conn.execute(query("organization_key_migration_supersede"), organization_id)
        row = await conn.fetchrow(
            query("organization_key_migration_insert"),
            uuid4(),
            organization_id,
            target,
            target_prefix,
            actor,
        )
        if row is None:  # INSERT ... SELECT of an aggregate: always one row
            raise InvariantBroken("_start: row is None")
        return _migration(row)

    async def latest_migration(self, organization_id: UUID) -> OrganizationKeyMigration | None:
        async with self._db.tenant(organization_id, read_only=True) as conn:
            row = await conn.fetchrow(query("organization_key_migration_latest"), organization_id)
        return _migration(row) if row is not None else None

    async def running_migrations(self) -> list[OrganizationKeyMigration]:
        async with self._db.admin(read_only=True) as conn:
            rows = await conn.fetch(query("organization_key_migrations_running"))
        return [_migration(r) for r in rows]

    async def migrate_one(
        self, migration: OrganizationKeyMigration, target_prefix: str | None, rewrap: Rewrap
    ) -> bool:
        """Move one data key of the migration's organization to the target, and count it;
        False when none is left to take (or the migration is no longer running)."""
        org = migration.organization_id
        async with self._db.tenant(org) as conn:
            state = await conn.fetchval(
                query("organization_key_migration_state"), org, migration.id
            )
            if state != "running":
                return False
            row = await conn.fetchrow(
                query("organization_key_data_key_to_migrate"), org, target_prefix
            )
            if row is None:
                return False
            stored = data_key_from_row(row)
            moved = await rewrap(stored)
            await conn.execute(
                query("organization_key_data_key_migrated"),
                org,
                stored.version,
                stored.root_key_id,
                moved.root_key_id,
                moved.wrapped_key,
            )
            await conn.execute(query("organization_key_migration_progress"), org, migration.id)
        return True

    async def complete(
        self, migration: OrganizationKeyMigration, target_prefix: str | None
    ) -> OrganizationKeyMigration | None:
        """Mark the migration completed if no data key is left to move (None if some is,
        e.g. held by another process, or it is no longer running)."""
        org = migration.organization_id
        async with self._db.tenant(org) as conn:
            left = await conn.fetchval(query("organization_key_data_keys_left"), org, target_prefix)
            if left:
                return None
            row = await conn.fetchrow(
                query("organization_key_migration_complete"), org, migration.id
            )
        return _migration(row) if row is not None else None
