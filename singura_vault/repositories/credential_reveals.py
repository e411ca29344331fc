"""The reveal path: read a ciphertext, have it opened, audit the attempt.

It never sees a key or a plaintext: the service's ``open_`` callback (SealingService
.open_credential) turns the row into a value, and this module hands it back only
after the attempt's audit event has committed.

What is and is not one transaction (#28): a reveal is three steps, none of which
shares a transaction with another.

1. The read: one statement (``credential_for_reveal_batch`` for coalesced calls,
   ``credential_for_reveal_scoped`` otherwise), its own read-only transaction on the
   primary. It commits nothing.
2. The opening, in this process: the data key comes from the key manager's cache
   (or its root-key provider), and only for a ciphertext its recorded key does not
   open does a second read-only transaction load the organization's live data keys.
3. The audit event: one statement (``audit_append_batch`` / ``audit_append_scoped``,
   repositories/sql/audit.sql), its own transaction, with an event for every attempt
   found -- successes and refusals alike.

Audit-or-fail holds because step 3's statement has committed before any value is
returned: the value exists only in this coroutine's frame until then, and if the
statement fails (database gone, a constraint, the whole coalesced batch refused)
this raises and the value is dropped. A call cancelled while it waits to join an
audit batch is left out of it and returns nothing; one cancelled while the batch
runs may leave an event for a value it never received (the vault errs towards an
event too many, never one too few). Between steps 1 and 3 a concurrent revoke or
state change may commit: the reveal returns what the read's snapshot held, and the
event names that version and key version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar, cast
from uuid import UUID

import asyncpg

from singura_vault.db.coalesce import Coalescer
from singura_vault.db.pool import Database
from singura_vault.db.scope import RequestScope
from singura_vault.domain.credentials import Credential, CredentialType, EncryptedCredential
from singura_vault.domain.sealed import StoredDataKey
from singura_vault.errors import InvariantBroken, VaultError, connection_deleted
from singura_vault.repositories._rows import credential_from_row, encrypted_from_row, in_item_order
from singura_vault.repositories.audit import (
    AuditEntry,
    ScopedEntry,
    append_for_request,
    append_for_requests,
)
from singura_vault.repositories.credentials import RevealTarget, no_such_credential
from singura_vault.repositories.data_keys import DataKeyRepository
from singura_vault.repositories.queries import query

T = TypeVar("T")

# The organization's live data keys, read only when a ciphertext's recorded key does
# not open it (a read of its own).
LiveDataKeys = Callable[[], Awaitable[list[StoredDataKey]]]
Opener = Callable[[EncryptedCredential, LiveDataKeys], Awaitable[T]]


class CredentialReveals:
    """RevealCredential, BatchRevealCredentials and GetAccessToken's read of a token."""

    def __init__(self, db: Database, data_keys: DataKeyRepository) -> None:
        self._db = db
        self._data_keys = data_keys
        # The hot calls' statements, shared by concurrent calls (db/coalesce.py,
        # migration 022) unless db.coalesces says otherwise.
        self._reveal_reads = Coalescer(self._read_for_reveal_batch, operation="reveal_read")
        self._audit_appends = Coalescer(partial(append_for_requests, db), operation="audit_append")

    async def reveal(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType,
        version: int,
        open_: Opener[T],
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
        open_: Opener[T],
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
            raise no_such_credential(organization_id, target)
        encrypted = encrypted_from_row(organization_id, row)
        # A deleted connection's credential is refused (and the attempt audited) even
        # where the caller would not want it as it is (GetAccessToken would refresh).
        failure: VaultError | None = _refusal(row)
        if failure is None and wanted is not None and not wanted(encrypted.credential):
            return None

        async def live_data_keys() -> list[StoredDataKey]:
            return await self._data_keys.live_data_keys(organization_id)

        value: T | None = None
        if failure is None:
            try:
                value = await open_(encrypted, live_data_keys)
            except VaultError as exc:
                failure = exc
        # Audit-or-fail: this raises, and nothing is returned, unless the event commits.
        await self._audit_appends.submit(
            ScopedEntry(scope, organization_id, _reveal_event(encrypted.credential, failure))
        )
        if failure is not None:
            raise failure
        return encrypted.credential, cast(T, value)

    async def _reveal_alone(
        self,
        organization_id: UUID,
        target: RevealTarget,
        open_: Opener[T],
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
        return in_item_order(rows, len(items))

    async def reveal_many(
        self,
        organization_id: UUID,
        targets: Sequence[RevealTarget],
        open_: Opener[T],
    ) -> list[tuple[Credential | None, T | VaultError]]:
        """Reveal several credentials of one request: one read for all, then one
        statement with an audit event per credential found, committed before anything
        is returned (audit-or-fail, as for :meth:`reveal`), and per target its
        credential (None if there is none) and value, or the error of that target
        alone."""
        outcomes: list[tuple[Credential | None, T | VaultError]] = []
        events: list[AuditEntry] = []
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
            return await self._data_keys.live_data_keys(organization_id)

        for index, target in enumerate(targets, 1):
            row = found.get(index)
            if row is None:
                outcomes.append((None, no_such_credential(organization_id, target)))
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
            await append_for_request(self._db, organization_id, events)
        return outcomes


def _refusal(row: asyncpg.Record) -> VaultError | None:
    """Why a reveal read's row must not be opened: its connection is deleted
    (migration 030: the read says so in the same statement)."""
    if row["connection_deleted"]:
        return connection_deleted(row["connection_id"], "reveal its credentials")
    return None


def _reveal_event(credential: Credential, failure: VaultError | None) -> AuditEntry:
    """The credential.revealed event of one reveal attempt (ids and versions only)."""
    return AuditEntry(
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
