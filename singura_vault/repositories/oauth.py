"""OAuth clients and the refresh transaction: the only module that runs OAuth SQL.

The refresh transaction is the cross-process single flight of docs/oauth.md: it
holds the connection's row lock from before the refresh token is read until the new
tokens commit, so two vault processes never call the token endpoint for one
connection at once, and a holder that dies releases the lock with its connection.
The intent it records before the provider call commits on another connection, on
purpose: it must outlive a refresh transaction that never commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

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
from singura_vault.domain.oauth import (
    ClientAuthMethod,
    OAuthClientRecord,
    OAuthClientSettings,
    RefreshClaim,
    RefreshState,
)
from singura_vault.domain.sealed import EncryptedValue, StoredDataKey
from singura_vault.errors import Aborted, InvariantBroken, NotFound, Unavailable, connection_deleted
from singura_vault.repositories._rows import (
    connection_from_row,
    data_key_from_row,
    encrypted_from_row,
)
from singura_vault.repositories.audit import AuditEntry, append_event
from singura_vault.repositories.credential_store import store_version_in
from singura_vault.repositories.queries import query

_SET_ERRORS: ConstraintErrors = {
    "oauth_clients_key_live": lambda: Aborted(
        "the organization's data key was retired while the client secret was being sealed; retry"
    ),
    "oauth_clients_organization_id_fkey": lambda: NotFound("organization not found"),
}


def _connection_not_found(organization_id: UUID, connection_id: UUID) -> NotFound:
    return NotFound(f"connection {connection_id} not found in organization {organization_id}")


def client_from_row(row: asyncpg.Record) -> OAuthClientRecord:
    organization_id: UUID = row["organization_id"]
    return OAuthClientRecord(
        settings=OAuthClientSettings(
            organization_id=organization_id,
            platform=Platform(row["platform"]),
            client_id=row["client_id"],
            token_url=row["token_url"],
            revocation_url=row["revocation_url"],
            scopes=tuple(row["scopes"]),
            auth_method=ClientAuthMethod(row["auth_method"]),
            redirect_uris=tuple(row["redirect_uris"]),
            authorization_url=row["authorization_url"],
        ),
        id=row["id"],
        secret=EncryptedValue(
            row["secret_nonce"], row["secret_ciphertext"], "", row["key_version"]
        ),
        data_key=StoredDataKey(
            organization_id, row["key_version"], row["root_key_id"], row["wrapped_key"]
        )
        if row["wrapped_key"] is not None
        else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        signing_secret=EncryptedValue(
            row["signing_secret_nonce"], row["signing_secret_ciphertext"], "", row["key_version"]
        )
        if row["signing_secret_ciphertext"] is not None
        else None,
    )


def _state_from_row(row: asyncpg.Record | None) -> RefreshState:
    if row is None:
        return RefreshState()
    return RefreshState(
        last_refresh_at=row["last_refresh_at"],
        failure_count=row["failure_count"],
        last_error=row["last_error"],
        next_refresh_at=row["next_refresh_at"],
        intent_started_at=row["intent_started_at"],
        intent_refresh_version=row["intent_refresh_version"],
    )


class RefreshTransaction:
    """One refresh of one connection, inside the transaction that holds its lock."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        connection: Connection,
        state: RefreshState,
        client: OAuthClientRecord | None,
        tokens: dict[CredentialType, EncryptedCredential],
    ) -> None:
        self._conn = conn
        self.connection = connection
        self.state = state
        self.client = client
        self.tokens = tokens

    @property
    def organization_id(self) -> UUID:
        return self.connection.organization_id

    async def refresh_token_version(self) -> int | None:
        """The current refresh token's version as committed now (a peer that stored one
        while this transaction waited, or outside the vault's lock, shows here)."""
        version: int | None = await self._conn.fetchval(
            query("refresh_token_version"), self.organization_id, self.connection.id
        )
        return version

    async def lock_data_key(self) -> StoredDataKey | None:
        """The organization's current data key, held against retirement until commit."""
        row = await self._conn.fetchrow(query("refresh_data_key_current"), self.organization_id)
        return data_key_from_row(row) if row is not None else None

    async def store(
        self,
        data_key: StoredDataKey,
        credential_type: CredentialType,
        expires_at: datetime | None,
        seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    ) -> Credential:
        """A new version of one of the connection's tokens, in this transaction."""
        return await store_version_in(
            self._conn, data_key, self.connection.id, credential_type, expires_at, seal
        )

    async def succeeded(
        self, next_refresh_at: datetime | None, expiry_source: ExpirySource
    ) -> None:
        await self._conn.execute(
            query("refresh_succeeded"),
            self.organization_id,
            self.connection.id,
            next_refresh_at,
            expiry_source.value,
        )

    async def set_granted_scopes(self, scopes: Sequence[str]) -> None:
        """Record the scopes the provider now reports granted (permissions_granted)."""
        await self._conn.execute(
            query("refresh_scopes_update"), self.organization_id, self.connection.id, list(scopes)
        )

    async def clear_intent(self) -> None:
        await self._conn.execute(
            query("refresh_intent_clear"), self.organization_id, self.connection.id
        )

    async def failed(
        self, error: str, next_refresh_at: datetime | None, keep_intent: bool, code: str
    ) -> None:
        """Count a failed refresh: ``error`` the sentence, ``code`` the provider's
        sanitized error code (both reach connection.refresh_failed, never a token)."""
        await self._conn.execute(
            query("refresh_failed"),
            self.organization_id,
            self.connection.id,
            error[:500],
            next_refresh_at,
            keep_intent,
            code[:100],
        )

    async def set_status(self, status: ConnectionStatus, reason: str) -> None:
        """Move the connection through its lifecycle (the audit trigger records it)."""
        await self._conn.execute(
            query("connection_set_status"),
            self.organization_id,
            self.connection.id,
            status.value,
            reason[:500],
        )

    async def audit(self, action: str, outcome: str, details: dict[str, Any]) -> None:
        request = current_request()
        await append_event(
            self._conn,
            self.organization_id,
            request.actor,
            request.request_id,
            AuditEntry(action, "connection", str(self.connection.id), outcome, details),
        )


class OAuthRepository:
    """OAuth clients per organization and platform, and connection refresh state."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_client(
        self,
        settings: OAuthClientSettings,
        row_id: UUID,
        secret: EncryptedValue,
        signing_secret: EncryptedValue | None = None,
    ) -> OAuthClientRecord:
        org_id = settings.organization_id
        async with self._db.tenant(org_id) as conn:
            with map_driver_errors(_SET_ERRORS):
                row = await conn.fetchrow(
                    query("oauth_client_upsert"),
                    org_id,
                    settings.platform.value,
                    row_id,
                    settings.client_id,
                    secret.ciphertext,
                    secret.nonce,
                    secret.key_version,
                    settings.token_url,
                    settings.revocation_url,
                    list(settings.scopes),
                    settings.auth_method.value,
                    list(settings.redirect_uris),
                    settings.authorization_url,
                    signing_secret.ciphertext if signing_secret else None,
                    signing_secret.nonce if signing_secret else None,
                )
        if row is None:
            raise InvariantBroken("set_client: row is None")
        return client_from_row(row)

    async def get_client(self, organization_id: UUID, platform: Platform) -> OAuthClientRecord:
        client = await self.find_client(organization_id, platform)
        if client is None:
            raise _client_not_found(organization_id, platform)
        return client

    async def find_client(
        self, organization_id: UUID, platform: Platform
    ) -> OAuthClientRecord | None:
        async with self._db.tenant(organization_id, read_only=True) as conn:
            row = await conn.fetchrow(query("oauth_client_get"), organization_id, platform.value)
        return client_from_row(row) if row is not None else None

    async def current_tokens(
        self, organization_id: UUID, connection_id: UUID
    ) -> dict[CredentialType, EncryptedCredential]:
        """The connection's current access and refresh token, sealed."""
        async with self._db.tenant(organization_id, read_only=True) as conn:
            rows = await conn.fetch(query("refresh_current_tokens"), organization_id, connection_id)
        return _tokens(organization_id, rows)

    async def sealed_credential(
        self, organization_id: UUID, credential_id: UUID
    ) -> EncryptedCredential | None:
        async with self._db.tenant(organization_id, read_only=True) as conn:
            row = await conn.fetchrow(
                query("oauth_credential_sealed"), organization_id, credential_id
            )
        return encrypted_from_row(organization_id, row) if row is not None else None

    async def record_provider_revocation(
        self, organization_id: UUID, connection_id: UUID, outcome: str, details: dict[str, Any]
    ) -> None:
        """Audit what the provider said to a revocation (committed on its own, before
        the local delete or revocation that follows it)."""
        request = current_request()
        async with self._db.tenant(organization_id) as conn:
            await append_event(
                conn,
                organization_id,
                request.actor,
                request.request_id,
                AuditEntry(
                    "connection.provider_revocation",
                    "connection",
                    str(connection_id),
                    outcome,
                    details,
                ),
            )

    async def delete_client(self, organization_id: UUID, platform: Platform) -> None:
        async with self._db.tenant(organization_id) as conn:
            status = await conn.execute(
                query("oauth_client_delete"), organization_id, platform.value
            )
        if status.endswith(" 0"):
            raise _client_not_found(organization_id, platform)

    async def claim_due(
        self, margin: timedelta, keepalive: timedelta, lease: timedelta, limit: int
    ) -> list[RefreshClaim]:
        """Lease up to limit due connections of any organization (none another process
        holds); each stays leased for lease unless a refresh records its outcome."""
        rows = await self._db.fetch_unscoped(
            query("oauth_refresh_claim"), margin, keepalive, lease, limit
        )
        return [
            RefreshClaim(r["organization_id"], r["connection_id"], r["keepalive"]) for r in rows
        ]

    async def record_intent(
        self, organization_id: UUID, connection_id: UUID, refresh_version: int
    ) -> None:
        """Commit, on its own connection, that a refresh is about to call the provider."""
        async with self._db.tenant(organization_id) as conn:
            await conn.execute(
                query("refresh_intent_record"), organization_id, connection_id, refresh_version
            )

    @asynccontextmanager
    async def refresh_transaction(
        self, organization_id: UUID, connection_id: UUID, lock_wait_s: float
    ) -> AsyncIterator[RefreshTransaction]:
        """Lock the connection (waiting at most lock_wait_s for a refresh elsewhere) and
        read what a refresh needs; the transaction commits when the block ends."""
        async with self._db.tenant(organization_id) as conn:
            await conn.execute(query("refresh_lock_timeout"), f"{int(lock_wait_s * 1000)}ms")
            try:
                row = await conn.fetchrow(
                    query("connection_get_for_update"), organization_id, connection_id
                )
            except asyncpg.exceptions.LockNotAvailableError:
                raise Unavailable(
                    f"another refresh of connection {connection_id} has not finished within "
                    f"{lock_wait_s:.0f} s; retry shortly"
                ) from None
            if row is None:
                raise _connection_not_found(organization_id, connection_id)
            if row["deleted_at"] is not None:  # migration 030
                raise connection_deleted(connection_id, "refresh its tokens")
            state_row = await conn.fetchrow(
                query("refresh_state_get"), organization_id, connection_id
            )
            connection = connection_from_row(row)
            client_row = await conn.fetchrow(
                query("oauth_client_get"), organization_id, connection.platform.value
            )
            token_rows = await conn.fetch(
                query("refresh_current_tokens"), organization_id, connection_id
            )
            yield RefreshTransaction(
                conn,
                connection,
                _state_from_row(state_row),
                client_from_row(client_row) if client_row is not None else None,
                _tokens(organization_id, token_rows),
            )


def _tokens(
    organization_id: UUID, rows: list[asyncpg.Record]
) -> dict[CredentialType, EncryptedCredential]:
    return {e.credential.type: e for e in (encrypted_from_row(organization_id, r) for r in rows)}


def _client_not_found(organization_id: UUID, platform: Platform) -> NotFound:
    return NotFound(
        f"organization {organization_id} has no OAuth client for {platform.value}; "
        "register one with SetOAuthClient"
    )
