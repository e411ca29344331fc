"""Credential metadata: reads, revocation and version states, under row-level security.

The reads never select a ciphertext column. The write path is
repositories/credential_store.py, the reveal path repositories/credential_reveals.py,
data keys repositories/data_keys.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from singura_vault.db.coalesce import Coalescer
from singura_vault.db.pool import Database
from singura_vault.db.scope import RequestScope
from singura_vault.domain.credentials import (
    Credential,
    CredentialState,
    CredentialType,
    VersionTransition,
)
from singura_vault.domain.paging import PageCursor
from singura_vault.errors import InvariantBroken, NotFound
from singura_vault.repositories._rows import credential_from_row, in_item_order
from singura_vault.repositories.queries import query


def _not_found(organization_id: UUID, credential_id: UUID) -> NotFound:
    return NotFound(f"credential {credential_id} not found in organization {organization_id}")


class CredentialRepository:
    """Immutable credential versions' metadata and state changes."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # GetCredential's statement, shared by concurrent calls (db/coalesce.py).
        self._gets = Coalescer(self._get_batch, operation="credential_get")

    async def get(self, organization_id: UUID, credential_id: UUID) -> Credential:
        if self._db.coalesces:
            row = await self._gets.submit(
                _GetItem(self._db.request_scope(organization_id), organization_id, credential_id)
            )
            if row is None:
                raise _not_found(organization_id, credential_id)
            return credential_from_row(row)
        rows = await self._db.fetch_scoped(
            organization_id,
            query("credential_get_scoped"),
            organization_id,
            credential_id,
        )
        if not rows:
            raise _not_found(organization_id, credential_id)
        return credential_from_row(rows[0])

    async def for_connection(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType | None,
        state: CredentialState | None,
        after: PageCursor | None,
        limit: int,
    ) -> list[Credential]:
        rows = await self._db.fetch_scoped(
            organization_id,
            query("credential_list_scoped"),
            organization_id,
            connection_id,
            credential_type.value if credential_type else None,
            state.value if state else None,
            after.at if after else None,
            after.id if after else None,
            limit,
        )
        return [credential_from_row(row) for row in rows]

    async def versions(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType,
        after: UUID | None,
        limit: int,
    ) -> list[Credential]:
        rows = await self._db.fetch_scoped(
            organization_id,
            query("credential_versions_scoped"),
            organization_id,
            connection_id,
            credential_type.value,
            after,
            limit,
        )
        return [credential_from_row(row) for row in rows]

    async def expiring(
        self, organization_id: UUID, before: datetime, after: PageCursor | None, limit: int
    ) -> list[Credential]:
        rows = await self._db.fetch_scoped(
            organization_id,
            query("credential_expiring_scoped"),
            organization_id,
            before,
            after.at if after else None,
            after.id if after else None,
            limit,
        )
        return [credential_from_row(row) for row in rows]

    async def _get_batch(self, items: Sequence[_GetItem]) -> list[asyncpg.Record | None]:
        rows = await self._db.fetch_batch(
            query("credential_get_batch"),
            [item.scope for item in items],
            [item.organization_id for item in items],
            [item.credential_id for item in items],
        )
        return in_item_order(rows, len(items))

    async def revoke(
        self, organization_id: UUID, credential_id: UUID, all_versions: bool
    ) -> list[Credential]:
        """Revoke and destroy ciphertexts; revoking a revoked credential changes nothing."""
        async with self._db.tenant(organization_id) as conn:
            rows = await conn.fetch(
                query("credential_revoke"), organization_id, credential_id, all_versions
            )
            if not rows:
                row = await conn.fetchrow(query("credential_get"), organization_id, credential_id)
                if row is None:
                    raise _not_found(organization_id, credential_id)
                rows = [row]
        return sorted(
            (credential_from_row(row) for row in rows), key=lambda c: c.version, reverse=True
        )

    async def change_version_state(
        self,
        organization_id: UUID,
        target: RevealTarget,
        transition: VersionTransition,
        destroy_at: datetime | None,
    ) -> VersionChange:
        """Apply one transition to one version in one statement (migration 029), its
        audit event and outbox event written by trigger in the same transaction; the
        version as it is afterwards, and why nothing changed if the database refused.
        NOT_FOUND if there is no such version."""
        rows = await self._db.fetch_scoped(
            organization_id,
            query("credential_version_change_scoped"),
            organization_id,
            target.connection_id,
            target.type.value,
            target.version,
            transition.value,
            destroy_at,
            writes=True,
        )
        if not rows:
            raise no_such_credential(organization_id, target)
        return VersionChange(credential_from_row(rows[0]), rows[0]["refused"])

    async def destroy_due(self, now: datetime, limit: int) -> int:
        """Erase the ciphertext of up to ``limit`` versions of any organization whose
        destruction was scheduled before ``now``; how many (never one another process
        holds: SKIP LOCKED)."""
        row = await self._db.fetchrow_unscoped(query("credential_destroy_due"), now, limit)
        if row is None:
            raise InvariantBroken("destroy_due: row is None")
        count: int = row[0]
        return count


@dataclass(frozen=True, slots=True)
class VersionChange:
    """The outcome of :meth:`CredentialRepository.change_version_state`: the version,
    and the database's reason for leaving it unchanged (``revoked``, ``destroyed``,
    ``scheduled``, ``not_scheduled``), or None when the transition applied (or had
    nothing to do)."""

    credential: Credential
    refused: str | None


@dataclass(frozen=True)
class RevealTarget:
    """One credential to reveal: a connection's credential of a type, at a version
    (0: the current one)."""

    connection_id: UUID
    type: CredentialType
    version: int


def no_such_credential(organization_id: UUID, target: RevealTarget) -> NotFound:
    which = f"version {target.version}" if target.version else "credential"
    return NotFound(
        f"connection {target.connection_id} in organization {organization_id} has no "
        f"{target.type.value} {which}"
    )


@dataclass(frozen=True, slots=True)
class _GetItem:
    scope: RequestScope
    organization_id: UUID
    credential_id: UUID
