"""DataKey: the holder of one organization's unwrapped data key (DEK).

A DataKey is made only inside this package, by :class:`KeyManager`, from bytes
a :class:`KeyProvider` unwrapped. It keeps a prepared AES-256-GCM cipher and a
fingerprint key derived from the DEK, not the DEK itself, and it must never
give either back: no accessor, no pickling, no copying, no key bytes in its
repr. Callers pass it to :class:`KeyManager` methods and nowhere else.
"""

from __future__ import annotations

from typing import Self, final
from uuid import UUID

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from singura_vault.keys.aead import KEY_SIZE, Aes256Gcm
from singura_vault.keys.holder import KeyHolder

__all__ = ["DataKey"]

_FINGERPRINT_INFO = b"singura-vault fingerprint v1"
FINGERPRINT_HEX_CHARS = 16


@final
class DataKey(KeyHolder):
    """One organization's data key at one version; opaque, handed out by KeyManager only."""

    __slots__ = ("_aead", "_fingerprint_mac", "organization_id", "version")
    organization_id: UUID
    version: int
    _aead: Aes256Gcm
    _fingerprint_mac: hmac.HMAC

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        # As Tink's KeysetHandle: a key holder built by hand could wrap any
        # bytes under any organization's name.
        raise TypeError(
            "DataKey cannot be constructed directly; "
            "get one from KeyManager.create_data_key() or KeyManager.data_key()"
        )

    @classmethod
    def _create(cls, organization_id: UUID, version: int, material: bytes) -> DataKey:
        """Package-internal: wrap freshly generated or unwrapped DEK bytes."""
        if len(material) != KEY_SIZE:
            raise ValueError(f"a data key is exactly {KEY_SIZE} bytes")
        fingerprint_key = HKDF(
            algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=_FINGERPRINT_INFO
        ).derive(material)
        self = object.__new__(cls)
        object.__setattr__(self, "organization_id", organization_id)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "_aead", Aes256Gcm(material))
        object.__setattr__(self, "_fingerprint_mac", hmac.HMAC(fingerprint_key, hashes.SHA256()))
        return self

    def __repr__(self) -> str:
        return f"<DataKey org={self.organization_id} v{self.version}: key material redacted>"

    def _encrypt(self, plaintext: bytes, associated_data: bytes) -> tuple[bytes, bytes]:
        return self._aead.encrypt(plaintext, associated_data)

    def _decrypt(self, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        return self._aead.decrypt(nonce, ciphertext, associated_data)

    def _fingerprint(self, plaintext: bytes) -> str:
        # Copying the keyed MAC skips the key schedule on every call.
        mac = self._fingerprint_mac.copy()
        mac.update(plaintext)
        return mac.finalize().hex()[:FINGERPRINT_HEX_CHARS]
