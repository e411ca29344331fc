"""LocalKeyring: root keys held in process memory, from ENCRYPTION_KEY or a keyring file.

Wrapping a data key is AES-256-GCM under a root key with a fresh random nonce
and the caller's associated data; the stored blob is ``nonce || ciphertext``.
The keyring keeps prepared ciphers, never hands a root key out, and cannot be
constructed by hand, pickled, copied or printed with its keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self, final

from singura_vault.keys.aead import NONCE_SIZE, Aes256Gcm
from singura_vault.keys.errors import KeyConfigError
from singura_vault.keys.holder import KeyHolder
from singura_vault.keys.keyring_format import (
    is_valid_key_id,
    read_keyring_file,
    write_new_keyring_file,
)
from singura_vault.keys.material import decode_key, derive_key_id, generate_key_bytes
from singura_vault.keys.records import WrappedDataKey

__all__ = ["LocalKeyring"]

ENV_KEY_PREFIX = "env"
FILE_KEY_PREFIX = "k1"


@final
class LocalKeyring(KeyHolder):
    """A KeyProvider whose root keys are in this process's memory."""

    __slots__ = ("_ciphers", "_primary")
    _ciphers: dict[str, Aes256Gcm]
    _primary: str

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        raise TypeError(
            "LocalKeyring cannot be constructed directly; use LocalKeyring.from_encryption_key(), "
            "LocalKeyring.from_file() or LocalKeyring.generate_file()"
        )

    @classmethod
    def _create(cls, keys: Mapping[str, bytes], primary: str) -> LocalKeyring:
        self = object.__new__(cls)
        object.__setattr__(self, "_ciphers", {key_id: Aes256Gcm(k) for key_id, k in keys.items()})
        object.__setattr__(self, "_primary", primary)
        return self

    @classmethod
    def from_encryption_key(cls, value: str, previous: Sequence[str] = ()) -> LocalKeyring:
        """Build a keyring from ENCRYPTION_KEY (base64 or hex of exactly 32 random bytes),
        primary, plus the ENCRYPTION_KEY_PREVIOUS keys, which can still unwrap.

        A key's id is ``env-`` and 12 hex characters derived from the key, so
        it stays the same across restarts and differs between keys.
        """
        key = decode_key(value, setting="ENCRYPTION_KEY")
        key_id = derive_key_id(key, ENV_KEY_PREFIX)
        keys = {key_id: key}
        for old in previous:
            old_key = decode_key(old, setting="ENCRYPTION_KEY_PREVIOUS")
            keys.setdefault(derive_key_id(old_key, ENV_KEY_PREFIX), old_key)
        return cls._create(keys, key_id)

    @classmethod
    def from_file(cls, path: Path) -> LocalKeyring:
        """Load a keyring file (mode 0600 or stricter; see keyring_format for the format)."""
        keys, primary = read_keyring_file(path)
        return cls._create(keys, primary)

    @classmethod
    def generate_file(cls, path: Path) -> LocalKeyring:
        """Create a keyring file with one fresh key, atomically and mode 0600; never overwrite."""
        key = generate_key_bytes()
        key_id = derive_key_id(key, FILE_KEY_PREFIX)
        write_new_keyring_file(path, {key_id: key}, key_id)
        # Read back what was written: the file, not memory, is what the next start uses.
        return cls.from_file(path)

    def primary_key_id(self) -> str:
        return self._primary

    def key_ids(self) -> tuple[str, ...]:
        """Return the ids of every root key held, in file order."""
        return tuple(self._ciphers)

    def description(self) -> str:
        count = len(self._ciphers)
        return f"local keyring ({count} key{'s' if count != 1 else ''}, primary {self._primary})"

    def __repr__(self) -> str:
        ids = ", ".join(self._ciphers)
        return f"<LocalKeyring keys=[{ids}] primary={self._primary}: key material redacted>"

    async def wrap(self, plaintext_key: bytes, associated_data: bytes) -> WrappedDataKey:
        """Encrypt a data key under the primary root key; the blob is nonce || ciphertext."""
        nonce, ciphertext = self._ciphers[self._primary].encrypt(plaintext_key, associated_data)
        return WrappedDataKey(root_key_id=self._primary, blob=nonce + ciphertext)

    async def unwrap(self, wrapped: WrappedDataKey, associated_data: bytes) -> bytes:
        """Decrypt a wrapped data key.

        Raises IntegrityError if it fails to authenticate, KeyConfigError if
        its root key is not in this keyring.
        """
        cipher = self._ciphers.get(wrapped.root_key_id)
        if cipher is None:
            # The id comes from the database; name it only if it is a sane id.
            shown = wrapped.root_key_id if is_valid_key_id(wrapped.root_key_id) else "(invalid id)"
            raise KeyConfigError(
                f"root key {shown} is not in the keyring; set ENCRYPTION_KEY to the key it was "
                "created with, or add that key to SINGURA_KEYRING_FILE"
            )
        blob = bytes(wrapped.blob)
        return cipher.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], associated_data)
