"""Credentials: a stored secret's versions, their lifecycle and usability states, and the row
facts a credential's ciphertext is bound to (never the secret).

Plain frozen dataclasses and enums: no protobuf, no asyncpg.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from singura_vault.domain.sealed import EncryptedValue, StoredDataKey


class CredentialType(enum.Enum):
    """Kind of secret; the value is the database spelling (names, not secrets)."""

    # ruff's S105 reads these type names as hard-coded passwords; they are not.

    ACCESS_TOKEN = "access_token"  # noqa: S105 - a credential type name, not a password
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a credential type name, not a password
    API_KEY = "api_key"
    CLIENT_SECRET = "client_secret"  # noqa: S105 - a credential type name, not a password
    WEBHOOK_SECRET = "webhook_secret"  # noqa: S105 - a credential type name, not a password
    PRIVATE_KEY = "private_key"


class CredentialState(enum.Enum):
    """Lifecycle state of a credential version.

    EXPIRED is derived, never stored: an ACTIVE row whose expires_at has passed.
    """

    ACTIVE = "active"
    SUPERSEDED = "superseded"
    REVOKED = "revoked"
    EXPIRED = "expired"


class CredentialVersionState(enum.Enum):
    """Whether a credential version may be used (migration 029), beside its lifecycle
    state: ENABLED, DISABLED (refused, skipped as current; also while its destruction
    is scheduled, derived like EXPIRED) or DESTROYED (its ciphertext erased for good)."""

    ENABLED = "enabled"
    DISABLED = "disabled"
    DESTROYED = "destroyed"


class VersionTransition(enum.Enum):
    """A change of a version's state, as singura.credential_version_change_scoped
    names it."""

    DISABLE = "disable"
    ENABLE = "enable"
    DESTROY = "destroy"
    CANCEL_DESTROY = "cancel_destroy"


@dataclass(frozen=True)
class Credential:
    """Metadata of one stored secret version (never the secret)."""

    id: UUID
    organization_id: UUID
    connection_id: UUID
    type: CredentialType
    version: int
    state: CredentialState
    key_version: int
    fingerprint: str
    created_at: datetime
    expires_at: datetime | None
    state_changed_at: datetime | None
    version_state: CredentialVersionState = CredentialVersionState.ENABLED
    # When the version is (or was) to be destroyed; None unless scheduled or destroyed.
    destroy_at: datetime | None = None


@dataclass(frozen=True)
class CredentialSlot:
    """Where a new credential version will be written; what its ciphertext is bound to."""

    organization_id: UUID
    connection_id: UUID
    credential_id: UUID
    type: CredentialType
    version: int
    data_key: StoredDataKey


@dataclass(frozen=True)
class EncryptedCredential:
    """A credential row with its ciphertext and the wrapped data key that opens it."""

    credential: Credential
    value: EncryptedValue | None  # None once revoked
    data_key: StoredDataKey | None  # None once the data key is destroyed


@dataclass(frozen=True)
class SealedCredential:
    """A credential's ciphertext with the row facts bound into it (for rewrap and repair)."""

    id: UUID
    connection_id: UUID
    type: CredentialType
    version: int
    key_version: int
    nonce: bytes
    ciphertext: bytes
