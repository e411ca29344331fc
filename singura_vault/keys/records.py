"""The non-secret records the key package hands to storage: wrapped data keys and sealed values.

These hold only ciphertext and identifiers, so they may be stored, logged by
id and copied freely. Their reprs leave the ciphertext out anyway, to keep log
lines short. They must never hold a plaintext or an unwrapped key.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Sealed", "WrappedDataKey"]


@dataclass(frozen=True, slots=True, repr=False)
class WrappedDataKey:
    """A data key encrypted under a root key: what the database stores per organization key version.

    ``blob`` is provider-specific; for the local keyring it is the 12-byte
    nonce followed by the AES-256-GCM ciphertext and tag.
    """

    root_key_id: str
    blob: bytes

    def __repr__(self) -> str:
        return f"WrappedDataKey(root_key_id={self.root_key_id!r}, blob=<{len(self.blob)} bytes>)"


@dataclass(frozen=True, slots=True, repr=False)
class Sealed:
    """An AES-256-GCM encrypted credential: 12-byte nonce, ciphertext ending in the 16-byte tag."""

    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"Sealed(nonce=<{len(self.nonce)} bytes>, ciphertext=<{len(self.ciphertext)} bytes>)"
