"""Connections: an organization's authorized link to a platform account, its status, and the
validated input that creates or changes one.

Plain frozen dataclasses and enums: no protobuf, no asyncpg.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


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
