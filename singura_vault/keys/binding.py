"""The associated data that binds every ciphertext to where it belongs.

AES-GCM authenticates associated data without encrypting it. Binding a sealed
credential to its organization, connection, credential, type and versions (and
a wrapped data key to its organization and version) means a ciphertext copied
to another row fails to open instead of revealing one tenant's secret under
another's name. The encodings are canonical and unambiguous (fixed-width
fields, one length-prefixed string, a versioned domain prefix each); they must
never change for existing data. A new layout needs a new prefix.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from uuid import UUID

__all__ = ["CredentialBinding", "data_key_associated_data"]

CREDENTIAL_DOMAIN = b"singura-vault/credential/v1\x00"
DATA_KEY_DOMAIN = b"singura-vault/data-key/v1\x00"
_UINT32_MAX = 2**32 - 1
_UINT32 = struct.Struct(">I")


def _check_uuid(name: str, value: object) -> None:
    if not isinstance(value, UUID):
        raise TypeError(f"{name} must be a uuid.UUID")


def _check_uint32(name: str, value: object) -> None:
    # bool is an int; a True version is a bug, not version 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int")
    if not 0 <= value <= _UINT32_MAX:
        raise ValueError(f"{name} must be between 0 and {_UINT32_MAX}")


@dataclass(frozen=True, slots=True)
class CredentialBinding:
    """Where a sealed credential belongs; its encoding is the ciphertext's associated data."""

    organization_id: UUID
    connection_id: UUID
    credential_id: UUID
    credential_type: str
    version: int
    key_version: int

    def __post_init__(self) -> None:
        _check_uuid("organization_id", self.organization_id)
        _check_uuid("connection_id", self.connection_id)
        _check_uuid("credential_id", self.credential_id)
        if not isinstance(self.credential_type, str):
            raise TypeError("credential_type must be a str")
        _check_uint32("version", self.version)
        _check_uint32("key_version", self.key_version)

    def associated_data(self) -> bytes:
        """Return prefix, three 16-byte UUIDs, length-prefixed UTF-8 type, two uint32 versions."""
        credential_type = self.credential_type.encode("utf-8")
        return b"".join(
            (
                CREDENTIAL_DOMAIN,
                self.organization_id.bytes,
                self.connection_id.bytes,
                self.credential_id.bytes,
                _UINT32.pack(len(credential_type)),
                credential_type,
                _UINT32.pack(self.version),
                _UINT32.pack(self.key_version),
            )
        )


def data_key_associated_data(organization_id: UUID, version: int) -> bytes:
    """Return the associated data that binds a wrapped data key to its organization and version."""
    _check_uuid("organization_id", organization_id)
    _check_uint32("version", version)
    return DATA_KEY_DOMAIN + organization_id.bytes + _UINT32.pack(version)
