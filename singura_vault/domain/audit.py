"""The audit chain: an event, the filters of a listing, what verification reads, and the
signed checkpoints of a chain's head.

Plain frozen dataclasses and enums: no protobuf, no asyncpg.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


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
