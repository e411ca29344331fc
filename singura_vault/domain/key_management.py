"""Key management: data key metadata, rewrap jobs, key-version repairs, and an
organization's own root key (customer-managed keys) with the migrations between root keys.

Plain frozen dataclasses and enums: no protobuf, no asyncpg.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


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
