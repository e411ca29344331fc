"""Credential and data-key persistence: the only module that runs credential SQL.

It never sees a key or a plaintext. Encryption happens in the credential
service, which this repository calls back at the one moment the ciphertext's
place is known (``seal``: inside the store transaction, after the version is
allocated) and the one moment a ciphertext is read for reveal (``open``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4

import asyncpg

from singura_vault.db.coalesce import Coalescer
from singura_vault.db.errors import ConstraintErrors, map_driver_errors
from singura_vault.db.pool import Database
from singura_vault.db.scope import RequestScope
from singura_vault.domain import (
    Credential,
    CredentialSlot,
    CredentialState,
    CredentialType,
    EncryptedCredential,
    EncryptedValue,
    PageCursor,
    StoredDataKey,
    VersionTransition,
)
from singura_vault.errors import (
    Aborted,
    AlreadyExists,
    InvariantBroken,
    NotFound,
    VaultError,
    connection_deleted,
)
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


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One StoreCredential's write: the next version of (connection, type), its expiry
    and idempotency key, and for a check-and-set store the version it expects to be
    current (0: none stored yet; None: store whatever is current)."""

    connection_id: UUID
    type: CredentialType
    expires_at: datetime | None
    request_id: UUID | None
    expected_version: int | None = None


def _version_mismatch(organization_id: UUID, store: StoreRequest, current: int) -> Aborted:
    """ABORTED for a check-and-set store whose expected version is not the current one;
    the current version is in the ErrorInfo metadata for the client's next attempt."""
    now = f"version {current}" if current else "no version yet"
    return Aborted(
        f"connection {store.connection_id} in organization {organization_id} has {now} of "
        f"its {store.type.value}, not version {store.expected_version} as expected_version "
        "says; read the current version and retry with it",
        reason="CREDENTIAL_VERSION_MISMATCH",
        metadata={
            "current_version": str(current),
            "expected_version": str(store.expected_version),
        },
    )


_STORE_ERRORS: ConstraintErrors = {
    "encrypted_credentials_request_key": lambda: _RequestIdTaken("request_id already used"),
    "encrypted_credentials_key_live": lambda: _DataKeyRetired(
        "the organization's data key was retired while the value was being sealed; retry"
    ),
    "encrypted_credentials_version_key": lambda: _VersionTaken(
        "concurrent stores of this credential kept taking the next version; retry"
    ),
    # Migration 030: the row refuses a version of a deleted connection's credential.
    "encrypted_credentials_connection_live": lambda: connection_deleted(
        "of this credential", "store its credentials"
    ),
}
# A retirement that wins the race against a store refuses the row (migration 008), and
# a concurrent store of the same connection and type may take the planned version
# (migration 014): both plan and seal again. The last attempt takes the connection's
# lock instead, so that a store under heavy contention on one credential still lands.
_STORE_ATTEMPTS = 5
# A store batch runs each item in a subtransaction (migration 022); PostgreSQL caches 64
# subtransaction ids per backend before other sessions' snapshots get slower.
_STORE_WRITE_BATCH = 32


def _not_found(organization_id: UUID, credential_id: UUID) -> NotFound:
    return NotFound(f"credential {credential_id} not found in organization {organization_id}")


def _connection_not_found(organization_id: UUID, connection_id: UUID) -> NotFound:
    return NotFound(f"connection {connection_id} not found in organization {organization_id}")


class CredentialRepository:
    """Immutable credential versions and wrapped data keys, under row-level security."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # The hot calls' statements, shared by concurrent calls (db/coalesce.py,
        # migration 022) unless db.coalesces says otherwise.
        self._reveal_reads = Coalescer(self._read_for_reveal_batch, operation="reveal_read")
        self._audit_appends = Coalescer(self._append_audit_batch, operation="audit_append")
        self._gets = Coalescer(self._get_batch, operation="credential_get")
        self._store_plans = Coalescer(self._plan_store_batch, operation="store_plan")
        self._store_writes = Coalescer(
            self._write_store_batch, operation="store_write", max_batch=_STORE_WRITE_BATCH
        )

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
        store: StoreRequest,
        seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    ) -> Credential:
        """Write the next version of (connection, type), superseding the current one.

        The connection row is locked first, so concurrent stores for one
        connection are serialized: versions stay consecutive and exactly one
        version is current. ``seal`` encrypts the value for the allocated slot
        under the organization's newest data key; without one, NoDataKey is raised.
        If that key is retired before the row commits, the database refuses the row
        (migration 008) and the store starts again under the then-current key.

        A check-and-set store (``store.expected_version``) is refused with ABORTED
        (CREDENTIAL_VERSION_MISMATCH) when the plan reads another current version. It
        plans the version after the one it expects, and every write lands only on top
        of the version before it (migration 022's check, the version key everywhere),
        so when a concurrent store takes that version first this one has lost: it is
        refused too, instead of planning again -- unless the winner was its own
        request_id's earlier attempt, which it returns.
        """
        for attempt in range(1, _STORE_ATTEMPTS + 1):
            write = self._store_planned if attempt < _STORE_ATTEMPTS else self._store_locked
            try:
                return await write(organization_id, store, seal)
            except _VersionTaken:
                if store.expected_version is not None:
                    return await self._after_lost_check_and_set(organization_id, store)
                if attempt == _STORE_ATTEMPTS:
                    raise
            except _DataKeyRetired:
                if attempt == _STORE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _after_lost_check_and_set(
        self, organization_id: UUID, store: StoreRequest
    ) -> Credential:
        """A check-and-set store whose version a concurrent store took: the credential
        of its request_id if that was its own earlier attempt, else the mismatch with
        the version that is current now."""
        async with self._db.tenant(organization_id, read_only=True) as conn:
            if store.request_id is not None:
                row = await conn.fetchrow(
                    query("credential_by_request_id"), organization_id, store.request_id
                )
                if row is not None:
                    return credential_from_row(row)
            current: int = await conn.fetchval(
                query("credential_last_version"),
                organization_id,
                store.connection_id,
                store.type.value,
            )
        if current == store.expected_version:
            # Versions only grow, so the store that took ours must have been rolled
            # back; whether this one would now succeed is the caller's to try again.
            raise Aborted("a concurrent store of this credential interfered; retry")
        raise _version_mismatch(organization_id, store, current)

    async def _store_planned(
        self,
        organization_id: UUID,
        store: StoreRequest,
        seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    ) -> Credential:
        """Two round trips and no lock across them (migration 014): read what sealing
        needs, seal, then supersede and insert in one statement."""
        connection_id, credential_type, request_id = (
            store.connection_id,
            store.type,
            store.request_id,
        )
        scope = self._db.request_scope(organization_id)
        if self._db.coalesces:
            plan: Mapping[str, Any] = await self._store_plans.submit(
                _PlanItem(
                    scope,
                    organization_id,
                    connection_id,
                    credential_type,
                    request_id,
                    store.expected_version is not None,
                )
            )
        else:
            (row,) = await self._db.fetch_scoped(
                organization_id,
                query("credential_store_plan_scoped"),
                organization_id,
                connection_id,
                credential_type.value,
                request_id,
            )
            plan = dict(row.items())
        if plan["existing_id"] is not None:
            return await self.get(organization_id, plan["existing_id"])
        if not plan["connection_found"]:
            raise _connection_not_found(organization_id, connection_id)
        if store.expected_version is not None and plan["last_version"] != store.expected_version:
            raise _version_mismatch(organization_id, store, plan["last_version"])
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
        new_row = _new_row(slot, value, store.expires_at, request_id)
        try:
            if self._db.coalesces:
                return await self._store_writes.submit(_WriteItem(scope, organization_id, new_row))
            (row,) = await self._db.fetch_scoped(
                organization_id,
                query("credential_store_scoped"),
                *new_row,
                writes=True,
                constraint_messages=_STORE_ERRORS,
            )
        except _RequestIdTaken:
            if request_id is None:
                raise InvariantBroken("_store_planned: request_id is None") from None
            return await self._by_request_id(organization_id, request_id)
        return credential_from_row(row)

    async def _plan_store_batch(self, items: Sequence[_PlanItem]) -> list[dict[str, Any]]:
        rows = await self._db.fetch_batch(
            query("credential_store_plan_batch"),
            [item.scope for item in items],
            [item.organization_id for item in items],
            [item.connection_id for item in items],
            [item.type.value for item in items],
            [item.request_id for item in items],
        )
        plans: list[dict[str, Any]] = []
        taken: dict[tuple[UUID, UUID, CredentialType], int] = {}
        for item, row in zip(items, _in_item_order(rows, len(items)), strict=True):
            # the plan has a row for every item
            if row is None:
                raise InvariantBroken("_plan_store_batch: row is None")
            plan = dict(row.items())
            if plan["existing_id"] is None and plan["key_version"] is not None:
                # Stores of one credential planned together take consecutive versions,
                # so that one batch can land them all, each on top of the one before.
                # A check-and-set store expects the version it was read at: it plans
                # on top of that or, if another store of the batch took it first,
                # loses to that one when it writes.
                key = (item.organization_id, item.connection_id, item.type)
                if item.check_and_set:
                    taken.setdefault(key, 0)
                else:
                    offset = taken[key] = taken.get(key, -1) + 1
                    plan["last_version"] += offset
            plans.append(plan)
        return plans

    async def _write_store_batch(
        self, items: Sequence[_WriteItem]
    ) -> list[Credential | VaultError]:
        """Write several stores' rows in one transaction. Items go in (organization,
        connection, type) order, so that concurrent batches lock connection rows in
        one order; an item that hit a constraint (a lost race) is done again on its
        own, which raises exactly what it raised before coalescing."""
        order = sorted(range(len(items)), key=lambda n: _lock_order(items[n].row))
        rows = await self._db.fetch_batch(
            query("credential_store_batch"),
            [items[n].scope for n in order],
            *(list(column) for column in zip(*(items[n].row for n in order), strict=True)),
            writes=True,
        )
        by_ord = {row["ord"]: row for row in rows}
        outcomes: list[Credential | VaultError] = [Aborted("store not written; retry")] * len(items)
        for position, n in enumerate(order, 1):
            row = by_ord.get(position)
            if row is None or row["failed"] is not None:
                outcomes[n] = await self._write_alone(items[n], row["failed"] if row else None)
            else:
                outcomes[n] = credential_from_row(row)
        return outcomes

    async def _write_alone(
        self, item: _WriteItem, constraint: str | None
    ) -> Credential | VaultError:
        """A store that lost a race in its batch: the error its constraint maps to
        (the caller plans again, or finds the replayed request), or, for any other
        constraint, the outcome of the single-call statement."""
        known = _STORE_ERRORS.get(constraint or "")
        if known is not None:
            return known()
        try:
            (row,) = await self._db.fetch_scoped(
                item.organization_id,
                query("credential_store_scoped"),
                *item.row,
                writes=True,
                constraint_messages=_STORE_ERRORS,
            )
        except VaultError as exc:
            return exc
        return credential_from_row(row)

    async def _store_locked(
        self,
        organization_id: UUID,
        store: StoreRequest,
        seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    ) -> Credential:
        """The last attempt: plan under the connection's lock, so that the version read
        (and a check-and-set store's comparison) holds until the row is written."""
        connection_id, request_id = store.connection_id, store.request_id
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
                    store.type,
                    store.expires_at,
                    seal,
                    request_id,
                    expected_version=store.expected_version,
                )
        except _RequestIdTaken:
            if request_id is None:
                raise InvariantBroken("_store_locked: request_id is None") from None
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

    async def reveal(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType,
        version: int,
        open_: Callable[[EncryptedCredential, LiveDataKeys], Awaitable[T]],
    ) -> tuple[Credential, T]:
        """Read a ciphertext, let ``open_`` decrypt it, and audit the attempt.

        ``open_`` also gets a loader of the organization's live data keys (a read of
        its own) for the rare reveal whose recorded key does not open it.

        The read and the audit event are two statements, each its own transaction:
        the event records whether the vault could open the value, so it is written
        after. Audit-or-fail holds because the value is returned only once the
        event's statement has committed; if it cannot be written, this raises and
        nothing is returned. A refused or failed reveal (revoked, tampered) is
        recorded as a failure and committed before the error is raised.
        """
        revealed = await self.reveal_if(
            organization_id, RevealTarget(connection_id, credential_type, version), open_
        )
        if revealed is None:
            raise InvariantBroken("reveal: revealed is None")
        return revealed

    async def reveal_if(
        self,
        organization_id: UUID,
        target: RevealTarget,
        open_: Callable[[EncryptedCredential, LiveDataKeys], Awaitable[T]],
        wanted: Callable[[Credential], bool] | None = None,
    ) -> tuple[Credential, T] | None:
        """:meth:`reveal`, but if ``wanted`` says no to the credential read (or there is
        none), None: nothing decrypted, nothing audited (GetAccessToken's fresh path
        reads the token it may hand out and refreshes first if it is not fresh).

        The read and the audit event are each a coalesced statement shared with
        concurrent calls (db/coalesce.py); the event is committed before the value is
        returned, as :meth:`reveal_many` does for its batch."""
        if not self._db.coalesces:
            return await self._reveal_alone(organization_id, target, open_, wanted)
        scope = self._db.request_scope(organization_id)
        row = await self._reveal_reads.submit(_RevealItem(scope, organization_id, target))
        if row is None:
            if wanted is not None:
                return None
            raise _no_such_credential(organization_id, target)
        encrypted = encrypted_from_row(organization_id, row)
        # A deleted connection's credential is refused (and the attempt audited) even
        # where the caller would not want it as it is (GetAccessToken would refresh).
        failure: VaultError | None = _refusal(row)
        if failure is None and wanted is not None and not wanted(encrypted.credential):
            return None

        async def live_data_keys() -> list[StoredDataKey]:
            return await self.live_data_keys(organization_id)

        value: T | None = None
        if failure is None:
            try:
                value = await open_(encrypted, live_data_keys)
            except VaultError as exc:
                failure = exc
        # Audit-or-fail: this raises, and nothing is returned, unless the event commits.
        await self._audit_appends.submit(
            _AuditItem(scope, organization_id, _reveal_event(encrypted.credential, failure))
        )
        if failure is not None:
            raise failure
        return encrypted.credential, cast(T, value)

    async def _reveal_alone(
        self,
        organization_id: UUID,
        target: RevealTarget,
        open_: Callable[[EncryptedCredential, LiveDataKeys], Awaitable[T]],
        wanted: Callable[[Credential], bool] | None,
    ) -> tuple[Credential, T] | None:
        """reveal_if in statements of its own (a replica attached: db.coalesces)."""
        if wanted is not None:
            rows = await self._db.fetch_scoped(
                organization_id,
                query("credential_for_reveal_scoped"),
                organization_id,
                [target.connection_id],
                [target.type.value],
                [target.version],
            )
            if not rows or (_refusal(rows[0]) is None and not wanted(credential_from_row(rows[0]))):
                return None
        ((credential, outcome),) = await self.reveal_many(organization_id, [target], open_)
        if isinstance(outcome, VaultError):
            raise outcome
        if credential is None:
            raise InvariantBroken("_reveal_alone: credential is None")
        return credential, outcome

    async def _read_for_reveal_batch(
        self, items: Sequence[_RevealItem]
    ) -> list[asyncpg.Record | None]:
        rows = await self._db.fetch_batch(
            query("credential_for_reveal_batch"),
            [item.scope for item in items],
            [item.organization_id for item in items],
            [item.target.connection_id for item in items],
            [item.target.type.value for item in items],
            [item.target.version for item in items],
        )
        return _in_item_order(rows, len(items))

    async def _append_audit_batch(self, items: Sequence[_AuditItem]) -> list[None]:
        await self._db.fetch_batch(
            query("audit_append_batch"),
            [item.scope for item in items],
            [item.organization_id for item in items],
            *(list(column) for column in zip(*(item.event for item in items), strict=True)),
            writes=True,
        )
        return [None] * len(items)

    async def _get_batch(self, items: Sequence[_GetItem]) -> list[asyncpg.Record | None]:
        rows = await self._db.fetch_batch(
            query("credential_get_batch"),
            [item.scope for item in items],
            [item.organization_id for item in items],
            [item.credential_id for item in items],
        )
        return _in_item_order(rows, len(items))

    async def reveal_many(
        self,
        organization_id: UUID,
        targets: Sequence[RevealTarget],
        open_: Callable[[EncryptedCredential, LiveDataKeys], Awaitable[T]],
    ) -> list[tuple[Credential | None, T | VaultError]]:
        """Reveal several credentials of one request: one read for all, then one
        statement with an audit event per credential found, committed before anything
        is returned (audit-or-fail, as for :meth:`reveal`), and per target its
        credential (None if there is none) and value, or the error of that target
        alone."""
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
            failure: VaultError | None = _refusal(row)
            if failure is not None:
                outcomes.append((encrypted.credential, failure))
            else:
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
            raise _no_such_credential(organization_id, target)
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


async def store_version_in(
    conn: asyncpg.Connection,
    data_key: StoredDataKey,
    connection_id: UUID,
    credential_type: CredentialType,
    expires_at: datetime | None,
    seal: Callable[[CredentialSlot], Awaitable[EncryptedValue]],
    request_id: UUID | None = None,
    *,
    expected_version: int | None = None,
) -> Credential:
    """Write the next version of (connection, type) in the caller's transaction, which
    holds the connection's row lock (a store under contention does, and the OAuth
    refresh stores its access and refresh token together this way, so that both commit
    or neither does). With ``expected_version``, ABORTED unless that is the last one."""
    organization_id = data_key.organization_id
    last = await conn.fetchval(
        query("credential_last_version"), organization_id, connection_id, credential_type.value
    )
    if expected_version is not None and last != expected_version:
        raise _version_mismatch(
            organization_id,
            StoreRequest(connection_id, credential_type, None, request_id, expected_version),
            last,
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
    if row is None:
        raise InvariantBroken("store_version_in: row is None")
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


def _refusal(row: asyncpg.Record) -> VaultError | None:
    """Why a reveal read's row must not be opened: its connection is deleted
    (migration 030: the read says so in the same statement)."""
    if row["connection_deleted"]:
        return connection_deleted(row["connection_id"], "reveal its credentials")
    return None


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


@dataclass(frozen=True, slots=True)
class _RevealItem:
    scope: RequestScope
    organization_id: UUID
    target: RevealTarget


@dataclass(frozen=True, slots=True)
class _AuditItem:
    scope: RequestScope
    organization_id: UUID
    event: _RevealEvent


@dataclass(frozen=True, slots=True)
class _GetItem:
    scope: RequestScope
    organization_id: UUID
    credential_id: UUID


@dataclass(frozen=True, slots=True)
class _PlanItem:
    scope: RequestScope
    organization_id: UUID
    connection_id: UUID
    type: CredentialType
    request_id: UUID | None
    check_and_set: bool = False


@dataclass(frozen=True, slots=True)
class _WriteItem:
    scope: RequestScope
    organization_id: UUID
    row: tuple[object, ...]  # _new_row's columns


def _lock_order(row: tuple[object, ...]) -> tuple[str, str, str, int]:
    """(organization, connection, type, version) of a _new_row: the order a store batch
    locks connections in and lands one credential's versions in."""
    version = row[4]
    if not isinstance(version, int):
        raise InvariantBroken("_lock_order: version is not a int")
    return (str(row[0]), str(row[2]), str(row[3]), version)


def _in_item_order(rows: Sequence[asyncpg.Record], count: int) -> list[asyncpg.Record | None]:
    """A batch's rows by their item (``ord``, 1-based): each item's row, or None."""
    by_item = {row["ord"]: row for row in rows}
    return [by_item.get(n) for n in range(1, count + 1)]
