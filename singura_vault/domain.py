"""Domain records shared by the service and repository layers.

Plain frozen dataclasses: no protobuf, no asyncpg. The API layer maps them to
and from messages; repositories build them from rows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
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
    """Keyset position: the sort key of the last row of the previous page."""

    created_at: datetime
    id: UUID


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results and the cursor to continue from (None on the last page)."""

    items: tuple[T, ...]
    next_cursor: PageCursor | None
