"""Customer-managed keys: an organization's data keys wrapped by its own transit key.

An organization may have a root key of its own in its OpenBao/Vault transit engine
(issue #29, item 5). Its provider is a row in PostgreSQL (migration 031) whose token
is sealed here under the GLOBAL root key: a fresh 32-byte key, wrapped by the global
provider, AES-256-GCM-encrypts the token, both bound to the provider row and its
organization. The provider's root key ids are ``org-transit:<provider id>:v<N>``, so a
data key row names exactly which key wraps it and reads never guess.

    OrganizationKeyRecord      the stored, non-secret form of a provider row
    organization_key_prefix    the root key id prefix of one provider
    provider_id_of             which provider a root key id names (None: the global root)

Nothing here may log, format or raise with the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from uuid import UUID

from singura_vault.keys.records import Sealed, WrappedDataKey

__all__ = [
    "ORGANIZATION_KEY_PREFIX",
    "TOKEN_DOMAIN",
    "OrganizationKeyRecord",
    "organization_key_prefix",
    "provider_id_of",
    "token_associated_data",
]

ORGANIZATION_KEY_PREFIX: Final = "org-transit"
# Prefixed to the associated data of a sealed provider token; must never change.
TOKEN_DOMAIN: Final = b"singura-vault/organization-key-token/v1\x00"


@dataclass(frozen=True, slots=True, repr=False)
class OrganizationKeyRecord:
    """An organization's key provider as stored: where its key is, and its token sealed
    under the global root key (``token_key`` wraps the key that sealed ``token``)."""

    provider_id: UUID
    organization_id: UUID
    address: str
    mount: str
    key_name: str
    token_key: WrappedDataKey
    token: Sealed

    def __repr__(self) -> str:
        return (
            f"OrganizationKeyRecord({self.provider_id}, org={self.organization_id}, "
            f"{self.address} mount={self.mount} key={self.key_name}: token sealed)"
        )


def organization_key_prefix(provider_id: UUID) -> str:
    return f"{ORGANIZATION_KEY_PREFIX}:{provider_id}"


def provider_id_of(root_key_id: str) -> UUID | None:
    """The provider an ``org-transit:<id>:v<N>`` root key id names; None for any other id."""
    if not root_key_id.startswith(ORGANIZATION_KEY_PREFIX + ":"):
        return None
    middle = root_key_id[len(ORGANIZATION_KEY_PREFIX) + 1 :].rpartition(":v")[0]
    try:
        return UUID(middle)
    except ValueError:
        return None


def token_associated_data(provider_id: UUID, organization_id: UUID) -> bytes:
    """Binds a sealed token (and the key that sealed it) to its provider row."""
    return TOKEN_DOMAIN + provider_id.bytes + organization_id.bytes
