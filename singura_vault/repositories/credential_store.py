"""The store path: StoreCredential's plan, seal and write, and the versions the OAuth
code stores inside its own transactions.

It never sees a key or a plaintext. Encryption happens in the sealing service, which
this module calls back at the one moment the ciphertext's place is known (``seal``:
after the version is planned, before the row is written).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from singura_vault.db.coalesce import Coalescer
from singura_vault.db.errors import map_driver_errors
from singura_vault.db.pool import Database
from singura_vault.db.scope import RequestScope
from singura_vault.domain.credentials import Credential, CredentialSlot, CredentialType
from singura_vault.domain.sealed import EncryptedValue, StoredDataKey
from singura_vault.errors import (
    Aborted,
    InvariantBroken,
    VaultError,
)
from singura_vault.repositories._rows import credential_from_row, data_key_from_row, in_item_order
from singura_vault.repositories.credential_store_request import (
    STORE_ERRORS,
    DataKeyRetired,
    NoDataKey,
    RequestIdTaken,
    Seal,
    StoreRequest,
    VersionTaken,
    connection_not_found,
    version_mismatch,
)
from singura_vault.repositories.credentials import CredentialRepository
from singura_vault.repositories.queries import query

# A retirement that wins the race against a store refuses the row (migration 008), and
# a concurrent store of the same connection and type may take the planned version
# (migration 014): both plan and seal again. The last attempt takes the connection's
# lock instead, so that a store under heavy contention on one credential still lands.
_STORE_ATTEMPTS = 5
# A store batch runs each item in a subtransaction (migration 022); PostgreSQL caches 64
# subtransaction ids per backend before other sessions' snapshots get slower.
_STORE_WRITE_BATCH = 32


class CredentialStore:
    """StoreCredential: the next version of a connection's credential, under
    row-level security."""

    def __init__(self, db: Database, credentials: CredentialRepository) -> None:
        self._db = db
        self._credentials = credentials
        # The hot calls' statements, shared by concurrent calls (db/coalesce.py,
        # migration 022) unless db.coalesces says otherwise.
        self._store_plans = Coalescer(self._plan_store_batch, operation="store_plan")
        self._store_writes = Coalescer(
            self._write_store_batch, operation="store_write", max_batch=_STORE_WRITE_BATCH
        )

    async def store(
        self,
        organization_id: UUID,
        store: StoreRequest,
        seal: Seal,
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
            except VersionTaken:
                if store.expected_version is not None:
                    return await self._after_lost_check_and_set(organization_id, store)
                if attempt == _STORE_ATTEMPTS:
                    raise
            except DataKeyRetired:
                if attempt == _STORE_ATTEMPTS:
                    raise
        raise InvariantBroken("store: every attempt either returned or raised")

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
        raise version_mismatch(organization_id, store, current)

    async def _store_planned(
        self,
        organization_id: UUID,
        store: StoreRequest,
        seal: Seal,
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
            return await self._credentials.get(organization_id, plan["existing_id"])
        if not plan["connection_found"]:
            raise connection_not_found(organization_id, connection_id)
        if store.expected_version is not None and plan["last_version"] != store.expected_version:
            raise version_mismatch(organization_id, store, plan["last_version"])
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
                constraint_messages=STORE_ERRORS,
            )
        except RequestIdTaken:
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
        for item, row in zip(items, in_item_order(rows, len(items)), strict=True):
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
        known = STORE_ERRORS.get(constraint or "")
        if known is not None:
            return known()
        try:
            (row,) = await self._db.fetch_scoped(
                item.organization_id,
                query("credential_store_scoped"),
                *item.row,
                writes=True,
                constraint_messages=STORE_ERRORS,
            )
        except VaultError as exc:
            return exc
        return credential_from_row(row)

    async def _store_locked(
        self,
        organization_id: UUID,
        store: StoreRequest,
        seal: Seal,
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
                    raise connection_not_found(organization_id, connection_id)
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
        except RequestIdTaken:
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


async def store_version_in(
    conn: asyncpg.Connection,
    data_key: StoredDataKey,
    connection_id: UUID,
    credential_type: CredentialType,
    expires_at: datetime | None,
    seal: Seal,
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
        raise version_mismatch(
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
    with map_driver_errors(STORE_ERRORS):
        row = await conn.fetchrow(
            query("credential_insert"), *_new_row(slot, value, expires_at, request_id)
        )
    if row is None:
        raise InvariantBroken("store_version_in: row is None")
    return credential_from_row(row)


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
