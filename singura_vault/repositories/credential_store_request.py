"""What a store asks for and how it can be refused: :class:`StoreRequest`, the
sealing callback a store is given, and the errors a store's plan or write ends in
(the constraint violations a concurrent store, a retired data key or a deleted
connection cause, mapped to the client's status; a check-and-set store's mismatch).
Shared by the store path (credential_store.py) and the service that calls it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from singura_vault.db.errors import ConstraintErrors
from singura_vault.domain.credentials import CredentialSlot, CredentialType
from singura_vault.domain.sealed import EncryptedValue
from singura_vault.errors import Aborted, AlreadyExists, NotFound, connection_deleted

Seal = Callable[[CredentialSlot], Awaitable[EncryptedValue]]


class NoDataKey(Exception):  # noqa: N818 - a signal to the service, not an error for clients
    """The organization has no live data key yet; create one and store again."""


class RequestIdTaken(AlreadyExists):
    """A concurrent store with the same request_id won the race."""


class DataKeyRetired(Aborted):
    """The data key the value was sealed under was retired before the row committed."""


class VersionTaken(Aborted):
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


def version_mismatch(organization_id: UUID, store: StoreRequest, current: int) -> Aborted:
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


STORE_ERRORS: ConstraintErrors = {
    "encrypted_credentials_request_key": lambda: RequestIdTaken("request_id already used"),
    "encrypted_credentials_key_live": lambda: DataKeyRetired(
        "the organization's data key was retired while the value was being sealed; retry"
    ),
    "encrypted_credentials_version_key": lambda: VersionTaken(
        "concurrent stores of this credential kept taking the next version; retry"
    ),
    # Migration 030: the row refuses a version of a deleted connection's credential.
    "encrypted_credentials_connection_live": lambda: connection_deleted(
        "of this credential", "store its credentials"
    ),
}


def connection_not_found(organization_id: UUID, connection_id: UUID) -> NotFound:
    return NotFound(f"connection {connection_id} not found in organization {organization_id}")
