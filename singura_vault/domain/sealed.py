"""What the database holds of a sealed value: the ciphertext with the version of the data key
that sealed it, and that data key wrapped by a root key (never a key in the clear).

Plain frozen dataclasses and enums: no protobuf, no asyncpg.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class StoredDataKey:
    """An organization's data key as the database holds it: wrapped by a root key."""

    organization_id: UUID
    version: int
    root_key_id: str
    wrapped_key: bytes


@dataclass(frozen=True)
class EncryptedValue:
    """A sealed secret ready for the database: nonce, ciphertext+tag, fingerprint, and
    the version of the data key that sealed it -- what the row must record, taken from
    the sealer rather than from what the caller believed was current."""

    nonce: bytes
    ciphertext: bytes
    fingerprint: str
    key_version: int
