"""Tenants: an organization, its plan, and the validated input that creates or changes one.

Plain frozen dataclasses and enums: no protobuf, no asyncpg.
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
