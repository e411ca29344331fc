"""API keys (who may call the vault): a key's metadata, what is inserted, and what a lookup
said (never the secret).

Plain frozen dataclasses and enums: no protobuf, no asyncpg.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


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
