"""KeyProvider: the port through which root keys wrap and unwrap data keys.

Root keys (key-encryption keys) live behind this interface: today in process
memory (:class:`LocalKeyring`), later in an OpenBao/Vault transit engine or a
cloud KMS reached over HTTP, which is why wrapping is async. Implementations
must never log or expose root keys, and must raise :class:`IntegrityError`
when a blob fails to authenticate and :class:`KeyConfigError` when it names a
root key they do not hold.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from singura_vault.keys.records import WrappedDataKey

__all__ = ["DescribedKeyProvider", "KeyProvider"]


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
