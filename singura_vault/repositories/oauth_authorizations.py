"""Started OAuth authorizations (the connect flow, migration 019): the only module that
runs their SQL.

A completion is one transaction. It locks the authorization row (FOR UPDATE) before
anything else and holds it across the provider's code exchange until the connection
and its tokens commit, so two completions of one state -- in one vault process or in
two -- make exactly one exchange; the second waits, then finds the row consumed with
the first one's result. The state and the code are stored only as SHA-256 hashes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from singura_vault.context import current_request
from singura_vault.db.errors import ConstraintErrors, map_driver_errors
from singura_vault.db.pool import Database
from singura_vault.domain.connections import Connection, ConnectionStatus, ExpirySource, Platform
from singura_vault.domain.credentials import (
    Credential,
    CredentialSlot,
    CredentialType,
    EncryptedCredential,
)
from singura_vault.domain.oauth import NewAuthorization, OAuthClientRecord, PendingAuthorization
from singura_vault.domain.sealed import EncryptedValue, StoredDataKey
from singura_vault.errors import Aborted, NotFound, Unavailable
from singura_vault.repositories._rows import (
    connection_from_row,
    data_key_from_row,
    encrypted_from_row,
)
from singura_vault.repositories.audit import AuditEntry, append_event
from singura_vault.repositories.connections import CREATE_ERRORS, check_room_for_active
from singura_vault.repositories.credential_store import store_version_in
from singura_vault.repositories.oauth import client_from_row
from singura_vault.repositories.queries import query

_INSERT_ERRORS: ConstraintErrors = {
    "oauth_authorizations_key_live": lambda: Aborted(
        "the organization's data key was retired while the PKCE verifier was being sealed; retry"
    ),
    "oauth_authorizations_organization_id_fkey": lambda: NotFound("organization not found"),
}


def _pending_from_row(row: asyncpg.Record) -> PendingAuthorization:
    organization_id: UUID = row["organization_id"]
    verifier = (
        EncryptedValue(row["verifier_nonce"], row["verifier_ciphertext"], "", row["key_version"])
        if row["verifier_ciphertext"] is not None
        else None
    )
    granted = row["result_granted_scopes"]
    return PendingAuthorization(
        organization_id=organization_id,
        id=row["id"],
        platform=Platform(row["platform"]),
        redirect_uri=row["redirect_uri"],
        requested_scopes=tuple(row["requested_scopes"]),
        reconnect_connection_id=row["reconnect_connection_id"],
        display_name=row["display_name"],
        started_by=row["started_by"],
        verifier=verifier,
        data_key=StoredDataKey(
            organization_id, row["key_version"], row["root_key_id"], row["wrapped_key"]
        )
        if row["wrapped_key"] is not None
        else None,
        expires_at=row["expires_at"],
        expired=row["expired"],
        consumed_at=row["consumed_at"],
        code_hash=row["code_hash"],
        outcome=row["outcome"],
        result_connection_id=row["result_connection_id"],
        result_reauthorized=row["result_reauthorized"],
        result_granted_scopes=tuple(granted) if granted is not None else None,
    )


class CompletionTransaction:
    """One CompleteAuthorization, inside the transaction that holds the state's row."""

    def __init__(self, conn: asyncpg.Connection, organization_id: UUID) -> None:
        self._conn = conn
        self.organization_id = organization_id

    async def consume_foreign(self, state_hash: bytes) -> UUID | None:
        """Consume a state another organization holds; its organization's id, or None if
        no organization holds it."""
        owner: UUID | None = await self._conn.fetchval(
            query("authorization_consume_foreign"), state_hash
        )
        return owner

    async def consume(
        self,
        authorization_id: UUID,
        outcome: str,
        *,
        code_hash: bytes | None = None,
        connection_id: UUID | None = None,
        reauthorized: bool | None = None,
        granted_scopes: Sequence[str] | None = None,
    ) -> None:
        await self._conn.execute(
            query("authorization_consume"),
            self.organization_id,
            authorization_id,
            outcome,
            code_hash,
            connection_id,
            reauthorized,
            list(granted_scopes) if granted_scopes is not None else None,
        )

    async def connection(self, connection_id: UUID) -> Connection | None:
        row = await self._conn.fetchrow(
            query("authorized_connection_get"), self.organization_id, connection_id
        )
        return connection_from_row(row) if row is not None else None

    async def lock_connection(self, connection_id: UUID) -> Connection | None:
        """The reconnect target, locked as a refresh locks it (no refresh of it runs
        while its tokens are replaced)."""
        row = await self._conn.fetchrow(
            query("connection_get_for_update"), self.organization_id, connection_id
        )
        return connection_from_row(row) if row is not None else None

    async def client(self, platform: Platform) -> OAuthClientRecord | None:
        row = await self._conn.fetchrow(
            query("oauth_client_get"), self.organization_id, platform.value
        )
        return client_from_row(row) if row is not None else None

    async def current_tokens(
        self, connection_id: UUID
    ) -> dict[CredentialType, EncryptedCredential]:
        rows = await self._conn.fetch(
            query("refresh_current_tokens"), self.organization_id, connection_id
        )
        found = (encrypted_from_row(self.organization_id, r) for r in rows)
        return {e.credential.type: e for e in found}

    async def lock_data_key(self) -> StoredDataKey | None:
        """The organization's current data key, held against retirement until commit."""
        row = await self._conn.fetchrow(query("refresh_data_key_current"), self.organization_id)
        return data_key_from_row(row) if row is not None else None

    async def create_connection(
        self,
        platform: Platform,
        user_id: str,
        workspace_id: str,
        display_name: str,
        granted_scopes: Sequence[str],
        requested_scopes: Sequence[str],
        granted_user_scopes: Sequence[str],
    ) -> UUID:
        """Insert an ACTIVE connection under the plan's limit (RESOURCE_EXHAUSTED) and the
        one-account rule (ALREADY_EXISTS), as CreateConnection does."""
        await check_room_for_active(self._conn, self.organization_id)
        connection_id = uuid4()
        # A savepoint: a refused insert leaves the transaction usable, so that the
        # state's consumption and the failure's audit still commit.
        with map_driver_errors(CREATE_ERRORS):
            async with self._conn.transaction():
                await self._conn.execute(
                    query("authorized_connection_insert"),
                    self.organization_id,
                    connection_id,
                    platform.value,
                    user_id or str(connection_id),
                    workspace_id,
                    display_name,
                    list(granted_scopes),
                    list(requested_scopes),
                    list(granted_user_scopes),
                )
        return connection_id

    async def reauthorize_connection(
        self,
        current: Connection,
        user_id: str,
        workspace_id: str,
        granted_scopes: Sequence[str],
        requested_scopes: Sequence[str],
        granted_user_scopes: Sequence[str],
    ) -> None:
        """ACTIVE again (under the plan's limit if it was not), with the new scopes
        (Slack's user scopes replaced too) and identity; the refresh failure state is
        cleared by refreshed()."""
        if current.status is not ConnectionStatus.ACTIVE:
            await check_room_for_active(self._conn, self.organization_id)
        with map_driver_errors(CREATE_ERRORS):
            async with self._conn.transaction():
                await self._conn.execute(
                    query("reauthorized_connection_update"),
                    self.organization_id,
                    current.id,
                    user_id,
                    workspace_id,
                    list(granted_scopes),
                    list(requested_scopes),
                    "reauthorized",
                    list(granted_user_scopes),
                )

    async def store(
        self,
        data_key: StoredDataKey,
        connection_id: UUID,
        credential_type: CredentialType,
        expires_at: datetime | None,
        seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    ) -> Credential:
        return await store_version_in(
            self._conn, data_key, connection_id, credential_type, expires_at, seal
        )

    async def refreshed(
        self,
        connection_id: UUID,
        next_refresh_at: datetime | None,
        expiry_source: ExpirySource,
    ) -> None:
        """Fresh tokens: the refresh bookkeeping as after a successful refresh, with
        where the access token's expiry came from."""
        await self._conn.execute(
            query("refresh_succeeded"),
            self.organization_id,
            connection_id,
            next_refresh_at,
            expiry_source.value,
        )

    async def audit(
        self, action: str, outcome: str, resource_id: str, details: dict[str, Any]
    ) -> None:
        request = current_request()
        await append_event(
            self._conn,
            self.organization_id,
            request.actor,
            request.request_id,
            AuditEntry(action, "connection", resource_id, outcome, details),
        )


class AuthorizationRepository:
    """Started authorizations under row-level security."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def connection_platform(
        self, organization_id: UUID, connection_id: UUID
    ) -> Platform | None:
        async with self._db.tenant(organization_id, read_only=True) as conn:
            value = await conn.fetchval(
                query("authorization_connection_check"), organization_id, connection_id
            )
        return Platform(value) if value is not None else None

    async def insert(self, new: NewAuthorization, ttl: timedelta) -> datetime:
        """Store a started authorization; its expiry (the database's clock + ttl)."""
        verifier = new.verifier
        async with self._db.tenant(new.organization_id) as conn:
            with map_driver_errors(_INSERT_ERRORS):
                expires_at: datetime = await conn.fetchval(
                    query("authorization_insert"),
                    new.organization_id,
                    new.id,
                    new.state_hash,
                    new.platform.value,
                    new.redirect_uri,
                    list(new.requested_scopes),
                    new.reconnect_connection_id,
                    new.display_name,
                    new.started_by,
                    verifier.nonce if verifier is not None else None,
                    verifier.ciphertext if verifier is not None else None,
                    verifier.key_version if verifier is not None else None,
                    ttl,
                )
        return expires_at

    @asynccontextmanager
    async def completion(
        self, organization_id: UUID, state_hash: bytes, lock_wait_s: float
    ) -> AsyncIterator[tuple[CompletionTransaction, PendingAuthorization | None]]:
        """Lock the state's row (waiting at most lock_wait_s for another completion of
        it) and yield it, None if this organization holds no such state; the
        transaction commits when the block ends."""
        async with self._db.tenant(organization_id) as conn:
            await conn.execute(query("authorization_lock_timeout"), f"{int(lock_wait_s * 1000)}ms")
            try:
                row = await conn.fetchrow(
                    query("authorization_get_for_update"), organization_id, state_hash
                )
            except asyncpg.exceptions.LockNotAvailableError:
                raise Unavailable(
                    f"another completion of this state has not finished within "
                    f"{lock_wait_s:.0f} s; retry shortly"
                ) from None
            yield (
                CompletionTransaction(conn, organization_id),
                _pending_from_row(row) if row is not None else None,
            )
