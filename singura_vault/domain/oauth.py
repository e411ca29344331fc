"""OAuth: an organization's client for a platform, the refresh bookkeeping of a connection, and
the authorizations of the connect flow.

Plain frozen dataclasses and enums: no protobuf, no asyncpg.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from singura_vault.domain.connections import Platform
from singura_vault.domain.sealed import EncryptedValue, StoredDataKey


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
