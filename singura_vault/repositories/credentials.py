"""Credential and data-key persistence: the only module that runs credential SQL.

It never sees a key or a plaintext. Encryption happens in the credential
service, which this repository calls back at the one moment the ciphertext's
place is known (``seal``: inside the store transaction, after the version is
allocated) and the one moment a ciphertext is read for reveal (``open``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from uuid import UUID, uuid4

import asyncpg

from singura_vault.db.errors import ConstraintErrors, map_driver_errors
from singura_vault.db.pool import Database
from singura_vault.domain import (
    Credential,
    CredentialSlot,
    CredentialState,
    CredentialType,
    EncryptedCredential,
    EncryptedValue,
    PageCursor,
    StoredDataKey,
)
from singura_vault.errors import Aborted, AlreadyExists, NotFound, VaultError
from singura_vault.repositories._rows import credential_from_row, data_key_from_row
from singura_vault.repositories.queries import query

T = TypeVar("T")


LiveDataKeys = Callable[[], Awaitable[list[StoredDataKey]]]


class NoDataKey(Exception):  # noqa: N818 - a signal to the service, not an error for clients
    """The organization has no live data key yet; create one and store again."""


class _RequestIdTaken(AlreadyExists):
    """A concurrent store with the same request_id won the race."""


class _DataKeyRetired(Aborted):
    """The data key the value was sealed under was retired before the row committed."""


class _VersionTaken(Aborted):
    """A concurrent store of the same connection and type took the planned version."""


_STORE_ERRORS: ConstraintErrors = {
    "encrypted_credentials_request_key": lambda: _RequestIdTaken("request_id already used"),
    "encrypted_credentials_key_live": lambda: _DataKeyRetired(
        "the organization's data key was retired while the value was being sealed; retry"
    ),
    "encrypted_credentials_version_key": lambda: _VersionTaken(
        "concurrent stores of this credential kept taking the next version; retry"
    ),
}
# A retirement that wins the race against a store refuses the row (migration 008), and
# a concurrent store of the same connection and type may take the planned version
# (migration 014): both plan and seal again. The last attempt takes the connection's
# lock instead, so that a store under heavy contention on one credential still lands.
_STORE_ATTEMPTS = 5


def _not_found(organization_id: UUID, credential_id: UUID) -> NotFound:
    return NotFound(f"credential {credential_id} not found in organization {organization_id}")


def _connection_not_found(organization_id: UUID, connection_id: UUID) -> NotFound:
    return NotFound(f"connection {connection_id} not found in organization {organization_id}")


class CredentialRepository:
    """Immutable credential versions and wrapped data keys, under row-level security."""

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

    async def store(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType,
        expires_at: datetime | None,
        request_id: UUID | None,
        seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    ) -> Credential:
        """Write the next version of (connection, type), superseding the current one.

        The connection row is locked first, so concurrent stores for one
        connection are serialized: versions stay consecutive and exactly one
        version is current. ``seal`` encrypts the value for the allocated slot
        under the organization's newest data key; without one, NoDataKey is raised.
        If that key is retired before the row commits, the database refuses the row
        (migration 008) and the store starts again under the then-current key.
        """
        for attempt in range(1, _STORE_ATTEMPTS + 1):
            write = self._store_planned if attempt < _STORE_ATTEMPTS else self._store_locked
            try:
                return await write(
                    organization_id, connection_id, credential_type, expires_at, request_id, seal
                )
            except (_DataKeyRetired, _VersionTaken):
                if attempt == _STORE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _store_planned(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType,
        expires_at: datetime | None,
        request_id: UUID | None,
        seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    ) -> Credential:
        """Two round trips and no lock across them (migration 014): read what sealing
        needs, seal, then supersede and insert in one statement."""
        (plan,) = await self._db.fetch_scoped(
            organization_id,
            query("credential_store_plan_scoped"),
            organization_id,
            connection_id,
            credential_type.value,
            request_id,
        )
        if plan["existing_id"] is not None:
            return await self.get(organization_id, plan["existing_id"])
        if not plan["connection_found"]:
            raise _connection_not_found(organization_id, connection_id)
        if plan["key_version"] is None:
            raise NoDataKey
        slot = CredentialSlot(
            organization_id=organization_id,
            connection_id=connection_id,
            credential_id=uuid4(),
            type=credential_type,
            version=plan["last_version"] + 1,
            data_key=StoredDataKey(
                organization_id=organization_id,
                version=plan["key_version"],
                root_key_id=plan["root_key_id"],
                wrapped_key=plan["wrapped_key"],
            ),
        )
        value = await seal(slot)
        try:
            (row,) = await self._db.fetch_scoped(
                organization_id,
                query("credential_store_scoped"),
                *_new_row(slot, value, expires_at, request_id),
                writes=True,
                constraint_messages=_STORE_ERRORS,
            )
        except _RequestIdTaken:
            assert request_id is not None
            return await self._by_request_id(organization_id, request_id)
        return credential_from_row(row)

    async def _store_locked(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType,
        expires_at: datetime | None,
        request_id: UUID | None,
        seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    ) -> Credential:
        try:
            async with self._db.tenant(organization_id) as conn:
                if request_id is not None:
                    row = await conn.fetchrow(
                        query("credential_by_request_id"), organization_id, request_id
                    )
                    if row is not None:
                        return credential_from_row(row)
                locked = await conn.fetchval(
                    query("credential_lock_connection"), organization_id, connection_id
                )
                if locked is None:
                    raise _connection_not_found(organization_id, connection_id)
                key_row = await conn.fetchrow(query("data_key_current"), organization_id)
                if key_row is None:
                    raise NoDataKey
                return await store_version_in(
                    conn,
                    data_key_from_row(key_row),
                    connection_id,
                    credential_type,
                    expires_at,
                    seal,
                    request_id,
                )
        except _RequestIdTaken:
            assert request_id is not None
            return await self._by_request_id(organization_id, request_id)

    async def _by_request_id(self, organization_id: UUID, request_id: UUID) -> Credential:
        """The credential a concurrent store with the same request id made."""
        async with self._db.tenant(organization_id, read_only=True) as conn:
            row = await conn.fetchrow(
                query("credential_by_request_id"), organization_id, request_id
            )
        if row is None:
            raise Aborted("a concurrent store with this request_id failed; retry")
        return credential_from_row(row)

    async def get(self, organization_id: UUID, credential_id: UUID) -> Credential:
        rows = await self._db.fetch_scoped(
            organization_id,
            query("credential_get_scoped"),
            organization_id,
            credential_id,
            replica_ok=True,
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
            replica_ok=True,
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
            replica_ok=True,
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
            replica_ok=True,
        )
        return [credential_from_row(row) for row in rows]

    async def reveal(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType,
        version: int,
        open_: Callable[[EncryptedCredential, LiveDataKeys], Awaitable[T]],
    ) -> tuple[Credential, T]:
        """Read a ciphertext, let ``open_`` decrypt it, and audit the attempt atomically.

        ``open_`` also gets a loader of the organization's live data keys, in the
        same transaction, for the rare reveal whose recorded key does not open it.

        The audit event is written in the same transaction as the read: if it
        cannot be written, the transaction fails and nothing is returned. A
        refused or failed reveal (revoked, tampered) is recorded as a failure
        and committed before the error is raised.
        """
        ((credential, outcome),) = await self.reveal_many(
            organization_id, [RevealTarget(connection_id, credential_type, version)], open_
        )
        if isinstance(outcome, VaultError):
            raise outcome
        assert credential is not None
        return credential, outcome

    async def reveal_many(
        self,
        organization_id: UUID,
        targets: Sequence[RevealTarget],
        open_: Callable[[EncryptedCredential, LiveDataKeys], Awaitable[T]],
    ) -> list[tuple[Credential | None, T | VaultError]]:
        """Reveal several credentials in one transaction: one read for all, one audit
        event per credential found (in the same transaction: audit-or-fail), and per
        target its credential (None if there is none) and value, or the error of that
        target alone."""
        outcomes: list[tuple[Credential | None, T | VaultError]] = []
        events: list[_RevealEvent] = []
        rows = await self._db.fetch_scoped(
            organization_id,
            query("credential_for_reveal_scoped"),
            organization_id,
            [t.connection_id for t in targets],
            [t.type.value for t in targets],
            [t.version for t in targets],
        )
        found = {row["ord"]: row for row in rows}

        async def live_data_keys() -> list[StoredDataKey]:
            return await self.live_data_keys(organization_id)

        for index, target in enumerate(targets, 1):
            row = found.get(index)
            if row is None:
                outcomes.append((None, _no_such_credential(organization_id, target)))
                continue
            encrypted = encrypted_from_row(organization_id, row)
            failure: VaultError | None = None
            try:
                outcomes.append((encrypted.credential, await open_(encrypted, live_data_keys)))
            except VaultError as exc:
                failure = exc
                outcomes.append((encrypted.credential, exc))
            events.append(_reveal_event(encrypted.credential, failure))
        if events:
            # Audit-or-fail: nothing is returned unless this statement commits. It is a
            # second statement, not part of the read, because each event records whether
            # the vault could open the ciphertext.
            await self._db.fetch_scoped(
                organization_id,
                query("audit_append_scoped"),
                organization_id,
                *(list(column) for column in zip(*events, strict=True)),
                writes=True,
            )
        return outcomes

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


async def store_version_in(
    conn: asyncpg.Connection,
    data_key: StoredDataKey,
    connection_id: UUID,
    credential_type: CredentialType,
    expires_at: datetime | None,
    seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    request_id: UUID | None = None,
) -> Credential:
    """Write the next version of (connection, type) in the caller's transaction, which
    holds the connection's row lock (a store under contention does, and the OAuth
    refresh stores its access and refresh token together this way, so that both commit
    or neither does)."""
    organization_id = data_key.organization_id
    last = await conn.fetchval(
        query("credential_last_version"), organization_id, connection_id, credential_type.value
    )
    slot = CredentialSlot(
        organization_id=organization_id,
        connection_id=connection_id,
        credential_id=uuid4(),
        type=credential_type,
        version=last + 1,
        data_key=data_key,
    )
    value = await seal(slot)
    await conn.execute(
        query("credential_supersede"), organization_id, connection_id, credential_type.value
    )
    with map_driver_errors(_STORE_ERRORS):
        row = await conn.fetchrow(
            query("credential_insert"), *_new_row(slot, value, expires_at, request_id)
        )
    assert row is not None
    return credential_from_row(row)


@dataclass(frozen=True)
class RevealTarget:
    """One credential to reveal: a connection's credential of a type, at a version
    (0: the current one)."""

    connection_id: UUID
    type: CredentialType
    version: int


def _no_such_credential(organization_id: UUID, target: RevealTarget) -> NotFound:
    which = f"version {target.version}" if target.version else "credential"
    return NotFound(
        f"connection {target.connection_id} in organization {organization_id} has no "
        f"{target.type.value} {which}"
    )


def encrypted_from_row(organization_id: UUID, row: asyncpg.Record) -> EncryptedCredential:
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


def _new_row(
    slot: CredentialSlot,
    value: EncryptedValue,
    expires_at: datetime | None,
    request_id: UUID | None,
) -> tuple[object, ...]:
    """A new credential row, in the argument order of credential_insert and
    credential_store_scoped."""
    return (
        slot.organization_id,
        slot.credential_id,
        slot.connection_id,
        slot.type.value,
        slot.version,
        value.ciphertext,
        value.nonce,
        value.key_version,
        value.fingerprint,
        expires_at,
        request_id,
    )


# One credential.revealed event, as audit_append_scoped's columns: action, resource
# type, resource id, outcome, details (actor and request id are the request's).
_RevealEvent = tuple[str, str, str, str, dict[str, object]]


def _reveal_event(credential: Credential, failure: VaultError | None) -> _RevealEvent:
    """The credential.revealed event of one reveal attempt (ids and versions only)."""
    return (
        "credential.revealed",
        "credential",
        str(credential.id),
        "success" if failure is None else "failure",
        {
            "connection_id": str(credential.connection_id),
            "credential_type": credential.type.value,
            "version": credential.version,
            "key_version": credential.key_version,
            **({"error": failure.code.value} if failure is not None else {}),
        },
    )
