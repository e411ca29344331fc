"""Row -> domain record mapping shared by the repositories."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from singura_vault.domain.connections import Connection, ConnectionStatus, ExpirySource, Platform
from singura_vault.domain.credentials import (
    Credential,
    CredentialState,
    CredentialType,
    CredentialVersionState,
    EncryptedCredential,
)
from singura_vault.domain.organizations import Organization, Plan
from singura_vault.domain.sealed import EncryptedValue, StoredDataKey


def utc(value: datetime | None) -> datetime | None:
    """A timestamptz as an aware datetime. asyncpg decodes PostgreSQL's -infinity and
    infinity (which is also what 0001-01-01T00:00:00Z and the last microsecond of 9999
    encode to) as *naive* datetime.min/max; rows written before the edge checks may hold
    them, and comparing a naive datetime with an aware one raises."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def organization_from_row(row: asyncpg.Record) -> Organization:
    return Organization(
        id=row["id"],
        name=row["name"],
        slug=row["slug"],
        domain=row["domain"],
        plan=Plan(row["plan"]),
        settings=row["settings"],
        connection_limit=row["connection_limit"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def connection_from_row(row: asyncpg.Record) -> Connection:
    return Connection(
        id=row["id"],
        organization_id=row["organization_id"],
        platform=Platform(row["platform"]),
        platform_user_id=row["platform_user_id"],
        platform_workspace_id=row["platform_workspace_id"],
        display_name=row["display_name"],
        permissions_granted=tuple(row["permissions_granted"]),
        metadata=row["metadata"],
        status=ConnectionStatus(row["status"]),
        status_reason=row["status_reason"],
        last_sync_at=row["last_sync_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        # Reads go through connection_with_refresh (migration 016); an insert's
        # RETURNING has no refresh state yet.
        last_refresh_at=row.get("last_refresh_at"),
        refresh_failure_count=row.get("refresh_failure_count") or 0,
        last_refresh_error=row.get("last_refresh_error") or "",
        next_refresh_at=row.get("next_refresh_at"),
        requested_scopes=tuple(row.get("requested_scopes") or ()),
        expiry_source=ExpirySource(row["expiry_source"]) if row.get("expiry_source") else None,
        granted_user_scopes=tuple(row.get("granted_user_scopes") or ()),
        deleted_at=row.get("deleted_at"),
        purge_at=row.get("purge_at"),
        deleted_revoked_at_provider=bool(row.get("deleted_revoked_at_provider")),
    )


def credential_from_row(row: asyncpg.Record) -> Credential:
    """Metadata of a credential row; ACTIVE past its expiry is reported as EXPIRED."""
    state = CredentialState(row["state"])
    expires_at = utc(row["expires_at"])
    if (
        state is CredentialState.ACTIVE
        and expires_at is not None
        and expires_at <= datetime.now(UTC)
    ):
        state = CredentialState.EXPIRED
    return Credential(
        id=row["id"],
        organization_id=row["organization_id"],
        connection_id=row["connection_id"],
        type=CredentialType(row["credential_type"]),
        version=row["version"],
        state=state,
        key_version=row["key_version"],
        fingerprint=row["fingerprint"],
        created_at=row["created_at"],
        expires_at=expires_at,
        state_changed_at=row["state_changed_at"],
        **_version_state(row),
    )


def _version_state(row: asyncpg.Record) -> dict[str, Any]:
    """A row's version state (migration 029), for the reads that return it; a version
    whose destruction is scheduled is reported DISABLED, as it is refused."""
    stored = row.get("version_state")
    if stored is None:
        return {}
    destroy_at = utc(row["destroy_at"])
    state = CredentialVersionState(stored)
    if state is CredentialVersionState.ENABLED and destroy_at is not None:
        state = CredentialVersionState.DISABLED
    return {"version_state": state, "destroy_at": destroy_at}


def data_key_from_row(row: asyncpg.Record) -> StoredDataKey:
    return StoredDataKey(
        organization_id=row["organization_id"],
        version=row["version"],
        root_key_id=row["root_key_id"],
        wrapped_key=row["wrapped_key"],
    )


def encrypted_from_row(organization_id: UUID, row: asyncpg.Record) -> EncryptedCredential:
    """A credential row with its ciphertext and wrapped data key (None where gone)."""
    credential = credential_from_row(row)
    return EncryptedCredential(
        credential=credential,
        value=EncryptedValue(
            row["nonce"], row["ciphertext"], row["fingerprint"], credential.key_version
        )
        if row["ciphertext"] is not None
        else None,
        data_key=StoredDataKey(
            organization_id=organization_id,
            version=credential.key_version,
            root_key_id=row["root_key_id"],
            wrapped_key=row["wrapped_key"],
        )
        if row["wrapped_key"] is not None
        else None,
    )


def in_item_order(rows: Sequence[asyncpg.Record], count: int) -> list[asyncpg.Record | None]:
    """A batch's rows by their item (``ord``, 1-based): each item's row, or None."""
    by_item = {row["ord"]: row for row in rows}
    return [by_item.get(n) for n in range(1, count + 1)]
