"""KeyProvider: the port through which root keys wrap and unwrap data keys.

Root keys (key-encryption keys) live behind this interface: in process memory
(:class:`LocalKeyring`, from ENCRYPTION_KEY or a keyring file) or in an
OpenBao/Vault transit engine reached over HTTP (:class:`TransitKeyProvider`,
keys/transit.py; also an organization's own customer-managed key,
keys/organization.py), which is why wrapping is async. Implementations
must never log or expose root keys, and must raise :class:`IntegrityError`
when a blob fails to authenticate and :class:`KeyConfigError` when it names a
root key they do not hold.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from singura_vault.keys.records import WrappedDataKey

__all__ = [
    "DescribedKeyProvider",
    "KeyProvider",
    "ListingKeyProvider",
    "RefreshingKeyProvider",
    "RetiringKeyProvider",
    "RewrappingKeyProvider",
    "RotatingKeyProvider",
]


class KeyProvider(Protocol):
    """Wraps data keys under the primary root key and unwraps them under any root key held."""

    def primary_key_id(self) -> str:
        """Return the id of the root key that new data keys are wrapped with."""
        ...

    async def wrap(self, plaintext_key: bytes, associated_data: bytes) -> WrappedDataKey:
        """Encrypt a data key under the primary root key, authenticating associated_data."""
        ...

    async def unwrap(self, wrapped: WrappedDataKey, associated_data: bytes) -> bytes:
        """Decrypt a wrapped data key; IntegrityError if it fails, KeyConfigError if unknown."""
        ...


@runtime_checkable
class DescribedKeyProvider(Protocol):
    """A provider that can describe itself for logs and `keys` commands, without secrets."""

    def description(self) -> str:
        """Return e.g. ``local keyring (2 keys, primary env-0123456789ab)``."""
        ...


# Optional abilities. KeyManager asks isinstance() of these (method presence, as
# runtime_checkable Protocols check it) and falls back, or explains what the operator
# must do instead, when a provider lacks one.


@runtime_checkable
class RefreshingKeyProvider(Protocol):
    """A remote provider that is reached once at start (and whenever it must re-read)."""

    async def refresh(self) -> None: ...


@runtime_checkable
class ListingKeyProvider(Protocol):
    """A provider that can say every root key id it can unwrap with."""

    def key_ids(self) -> tuple[str, ...]: ...


@runtime_checkable
class RotatingKeyProvider(Protocol):
    """A provider that can make a new root key version primary; returns its id."""

    async def rotate(self) -> str: ...


@runtime_checkable
class RetiringKeyProvider(Protocol):
    """A provider that can stop holding a root key."""

    async def retire(self, key_id: str) -> None: ...


@runtime_checkable
class RewrappingKeyProvider(Protocol):
    """A provider that re-encrypts a wrapped data key under its primary root key on its
    own side (an external KMS), so the data key never leaves it."""

    async def rewrap(self, wrapped: WrappedDataKey, associated_data: bytes) -> WrappedDataKey: ...
