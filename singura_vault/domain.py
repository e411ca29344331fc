"""Domain records shared by the service and repository layers.

Plain frozen dataclasses: no protobuf, no asyncpg. The API layer maps them to
and from messages; repositories build them from rows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


class Plan(enum.Enum):
    """Commercial plan; the value is the database spelling."""

    FREE = "free"
    STARTER = "starter"
    PROFESSIONAL = "professional"
    ENTERPRISE = "enterprise"


class Platform(enum.Enum):
    """SaaS platform of a connection; the value is the database spelling."""

    SLACK = "slack"
    GOOGLE_WORKSPACE = "google_workspace"
    MICROSOFT_365 = "microsoft_365"
    GITHUB = "github"
    SALESFORCE = "salesforce"
    ATLASSIAN = "atlassian"
    ZOOM = "zoom"
    DROPBOX = "dropbox"


class ConnectionStatus(enum.Enum):
    """Lifecycle status of a connection; the value is the database spelling."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    ERROR = "error"
    EXPIRED = "expired"
    REVOKED = "revoked"


class ScopeDrift(enum.Enum):
    """Which connections ListConnections keeps by their scopes (migration 020): granted
    differs from requested. Connections with no requested scopes recorded never drift."""

    # A requested scope was not granted, or one was granted that nobody asked for.
    ANY = "any"
    # A requested scope was not granted.
    MISSING = "missing"
    # A scope was granted that nobody asked for.
    EXTRA = "extra"


class ExpirySource(enum.Enum):
    """Where the expiry of the access token the vault last stored came from."""

    # The token response's expires_in.
    PROVIDER = "provider"
    # The response had none; the catalogue's default_expires_in_s was used.
    CATALOGUE = "catalogue"
    # No expiry known: the response had none, nor does the catalogue.
    NONE = "none"


@dataclass(frozen=True)
class Organization:
    """A tenant."""

    id: UUID
    name: str
    slug: str
    domain: str
    plan: Plan
    settings: dict[str, Any]
    connection_limit: int
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass(frozen=True)
class NewOrganization:
    """Validated input for creating an organization."""

    name: str
    slug: str
    domain: str
    plan: Plan
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OrganizationChanges:
    """Validated partial update; None means "leave unchanged"."""

    name: str | None = None
    slug: str | None = None
    domain: str | None = None
    plan: Plan | None = None
    settings: dict[str, Any] | None = None


@dataclass(frozen=True)
class Connection:
    """One authorized link between an organization and a platform account."""

    id: UUID
    organization_id: UUID
    platform: Platform
    platform_user_id: str
    platform_workspace_id: str
    display_name: str
    permissions_granted: tuple[str, ...]
    metadata: dict[str, Any]
    status: ConnectionStatus
    status_reason: str
    last_sync_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    # The vault's OAuth refresh bookkeeping (migration 016); zero values until the
    # first refresh.
    last_refresh_at: datetime | None = None
    refresh_failure_count: int = 0
    last_refresh_error: str = ""
    next_refresh_at: datetime | None = None
    # The scopes requested when CompleteAuthorization last authorized it (migration 019).
    requested_scopes: tuple[str, ...] = ()
    # Where the current access token's expiry came from, when the vault stored it
    # (CompleteAuthorization or a refresh; migration 020); None otherwise.
    expiry_source: ExpirySource | None = None
    # Slack's user-token scopes (authed_user.scope), kept apart from the bot scopes in
    # permissions_granted; empty elsewhere. Set by CompleteAuthorization (migration 021).
    granted_user_scopes: tuple[str, ...] = ()
    # Soft delete (migration 030): when DeleteConnection marked it, the earliest time
    # the purge job removes it, and whether the delete revoked its grant at the platform.
    deleted_at: datetime | None = None
    purge_at: datetime | None = None
    deleted_revoked_at_provider: bool = False

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True)
class NewConnection:
    """Validated input for creating a connection."""

    organization_id: UUID
    platform: Platform
    platform_user_id: str
    platform_workspace_id: str
    display_name: str
    permissions_granted: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectionChanges:
    """Validated partial update of a connection; None means unchanged."""

    display_name: str | None = None
    metadata: dict[str, Any] | None = None
    permissions_granted: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PageCursor:
    """Keyset position: the (time, id) sort key of the last row of the previous page."""

    at: datetime
    id: UUID


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
class StoredDataKey:
    """An organization's data key as the database holds it: wrapped by a root key."""

    organization_id: UUID
    version: int
    root_key_id: str
    wrapped_key: bytes


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
class EncryptedValue:
    """A sealed secret ready for the database: nonce, ciphertext+tag, fingerprint, and
    the version of the data key that sealed it -- what the row must record, taken from
    the sealer rather than from what the caller believed was current."""

    nonce: bytes
    ciphertext: bytes
    fingerprint: str
    key_version: int


@dataclass(frozen=True)
class EncryptedCredential:
    """A credential row with its ciphertext and the wrapped data key that opens it."""

    credential: Credential
    value: EncryptedValue | None  # None once revoked
    data_key: StoredDataKey | None  # None once the data key is destroyed


@dataclass(frozen=True)
class ApiKey:
    """An API key's metadata; the secret exists only in the caller's hands."""

    id: UUID
    key_id: str
    organization_id: UUID | None
    roles: tuple[str, ...]
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewApiKey:
    """A key to insert: its public id and the digest of its secret."""

    key_id: str
    secret_digest: bytes
    organization_id: UUID | None
    roles: tuple[str, ...]
    name: str
    created_by: str
    expires_at: datetime | None


@dataclass(frozen=True)
class KeyLookup:
    """What singura.api_key_lookup() said about a presented key."""

    status: str  # ok | unknown | revoked | expired
    organization_id: UUID | None
    roles: tuple[str, ...]
    expires_at: datetime | None


@dataclass(frozen=True)
class AuditEvent:
    """One entry of an organization's (or the system's) audit chain."""

    id: int
    organization_id: UUID | None
    sequence: int
    occurred_at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str | None
    request_id: str | None
    outcome: str
    details: dict[str, Any]
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class AuditFilter:
    """Optional filters of audit listing and export (None = any)."""

    start: datetime | None = None
    end: datetime | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    actor: str | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class ChainLink:
    """What verification needs of one event: stored links and the recomputed canonical text."""

    id: int
    sequence: int
    prev_hash: bytes
    hash: bytes
    canonical: str


@dataclass(frozen=True)
class ChainState:
    """A chain's prune checkpoint (if any) and its head as the appends left it."""

    pruned_through: int
    pruned_count: int
    pruned_last_hash: bytes | None
    head_sequence: int
    head_hash: bytes | None
    # Events recorded but not chained yet (migration 012), and when the oldest was.
    pending_count: int = 0
    oldest_pending_at: datetime | None = None


@dataclass(frozen=True)
class DataKeyInfo:
    """A data key version's metadata (never the key)."""

    organization_id: UUID
    version: int
    root_key_id: str
    state: str
    created_at: datetime


@dataclass(frozen=True)
class RewrapJob:
    """A durable re-encryption job."""

    id: UUID
    state: str
    total: int
    done: int
    failed: int
    started_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


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


@dataclass(frozen=True)
class KeyRepair:
    """A credential whose record named the wrong data-key version, corrected."""

    credential_id: UUID
    recorded_key_version: int
    sealed_key_version: int


@dataclass(frozen=True)
class RepairPage:
    """One page of a key-version repair: how many checked, what was corrected, what no
    live data key opens, and the last credential id (where the next page starts)."""

    checked: int
    repaired: tuple[KeyRepair, ...]
    unrecoverable: tuple[UUID, ...]
    last_id: UUID | None


@dataclass(frozen=True)
class ChainHead:
    """The newest event of one audit chain, to be signed, and the chain's newest
    checkpoint signature and signing key id (None before its first checkpoint)."""

    organization_id: UUID | None  # None: the system chain
    sequence: int
    head_hash: bytes
    previous_signature: bytes | None
    previous_key_id: str | None = None


@dataclass(frozen=True)
class SignedCheckpoint:
    """An audit chain head signed with the vault's Ed25519 audit signing key."""

    organization_id: UUID | None  # None: the system chain
    sequence: int
    head_hash: bytes
    signed_at: datetime
    key_id: str
    previous_signature: bytes | None
    signature: bytes


class ClientAuthMethod(enum.Enum):
    """How an OAuth client authenticates at a token endpoint (RFC 6749 2.3.1)."""

    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method's name, not a secret
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 - a method's name, not a secret


@dataclass(frozen=True)
class OAuthClientSettings:
    """An organization's OAuth client for a platform, without its secret."""

    organization_id: UUID
    platform: Platform
    client_id: str
    token_url: str
    revocation_url: str
    scopes: tuple[str, ...]
    auth_method: ClientAuthMethod
    # The connect flow (migration 019): registered redirect URIs, matched exactly, and
    # the authorization endpoint override ("" = the catalogue's).
    redirect_uris: tuple[str, ...] = ()
    authorization_url: str = ""


@dataclass(frozen=True)
class OAuthClientRecord:
    """A stored OAuth client: its settings, the id its sealed secret is bound to, and
    that secret with the data key that opens it (None once the key is destroyed)."""

    settings: OAuthClientSettings
    id: UUID
    secret: EncryptedValue
    data_key: StoredDataKey | None
    created_at: datetime
    updated_at: datetime
    # Slack's signing secret, sealed like ``secret`` (migration 027); None: not set.
    signing_secret: EncryptedValue | None = None


@dataclass(frozen=True)
class RefreshState:
    """A connection's refresh bookkeeping, as the refresh transaction reads it."""

    last_refresh_at: datetime | None = None
    failure_count: int = 0
    last_error: str = ""
    next_refresh_at: datetime | None = None
    # A refresh that may have reached the provider and whose result was never
    # committed: set before the token endpoint is called, cleared with the result.
    intent_started_at: datetime | None = None
    intent_refresh_version: int | None = None


@dataclass(frozen=True)
class RefreshClaim:
    """A connection the background worker has leased for a refresh; keepalive when only
    its age makes it due (its access token is not about to expire)."""

    organization_id: UUID
    connection_id: UUID
    keepalive: bool


@dataclass(frozen=True)
class NewAuthorization:
    """A validated StartAuthorization, as stored: the state only as its hash, the PKCE
    verifier only sealed (bound to id)."""

    organization_id: UUID
    id: UUID
    state_hash: bytes
    platform: Platform
    redirect_uri: str
    requested_scopes: tuple[str, ...]
    reconnect_connection_id: UUID | None
    display_name: str
    started_by: str
    verifier: EncryptedValue | None


@dataclass(frozen=True)
class PendingAuthorization:
    """A started authorization as CompleteAuthorization reads it, under its row lock."""

    organization_id: UUID
    id: UUID
    platform: Platform
    redirect_uri: str
    requested_scopes: tuple[str, ...]
    reconnect_connection_id: UUID | None
    display_name: str
    started_by: str
    verifier: EncryptedValue | None
    # What opens the verifier; None if it has none or the data key is gone.
    data_key: StoredDataKey | None
    expires_at: datetime
    expired: bool
    consumed_at: datetime | None
    code_hash: bytes | None
    outcome: str | None
    result_connection_id: UUID | None
    result_reauthorized: bool | None
    result_granted_scopes: tuple[str, ...] | None


@dataclass(frozen=True, repr=False)
class OrganizationKeyProviderRow:
    """An organization's key provider as stored (migration 031): where its transit key
    is, and its token sealed under the global root key (ciphertext only)."""

    id: UUID
    organization_id: UUID
    address: str
    mount: str
    key_name: str
    token_root_key_id: str
    token_wrapped_key: bytes
    token_nonce: bytes
    token_ciphertext: bytes
    created_by: str
    created_at: datetime
    cleared_at: datetime | None

    def __repr__(self) -> str:  # never the sealed token, even as ciphertext
        return (
            f"<OrganizationKeyProviderRow {self.id} org={self.organization_id} "
            f"{self.address} key={self.key_name}>"
        )


@dataclass(frozen=True)
class OrganizationKeyMigration:
    """A move of an organization's data keys to another root key (migration 031)."""

    id: UUID
    organization_id: UUID
    target_provider_id: UUID | None  # None: the global root key
    state: str  # running, completed, superseded
    total: int
    done: int
    started_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
