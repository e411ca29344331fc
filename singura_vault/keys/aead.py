"""AES-256-GCM, the one authenticated cipher the vault uses, behind a small interface.

:class:`Aes256Gcm` owns a prepared ``AESGCM`` instance (building one costs about
half an encryption, so holders keep theirs) and picks a fresh random 96-bit
nonce on every encryption. Decryption failures of any kind come out as
:class:`IntegrityError`, never as ``cryptography``'s ``InvalidTag``.

This module must never let a caller choose the nonce outside tests: with GCM a
repeated (key, nonce) pair leaks the authentication key. The one exception is
:func:`_seal_with_nonce_for_tests`, which exists for known-answer tests and
says so in its name.
"""

from __future__ import annotations

import os
from typing import final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from singura_vault.keys.errors import IntegrityError
from singura_vault.keys.holder import KeyHolder

__all__ = ["KEY_SIZE", "NONCE_SIZE", "TAG_SIZE", "Aes256Gcm"]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16


@final
class Aes256Gcm(KeyHolder):
    """One AES-256-GCM key: encrypt with a random nonce, decrypt or raise IntegrityError."""

    __slots__ = ("_cipher",)
    _cipher: AESGCM

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"an AES-256-GCM key is exactly {KEY_SIZE} bytes")
        object.__setattr__(self, "_cipher", AESGCM(key))

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> tuple[bytes, bytes]:
        """Return (nonce, ciphertext with its 16-byte tag) under a fresh random nonce."""
        # 96 random bits per message: NIST SP 800-38D allows 2**32 messages per
        # key this way, far beyond one organization's data key.
        nonce = os.urandom(NONCE_SIZE)
        return nonce, self._cipher.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        """Return the plaintext, or raise IntegrityError if anything fails to authenticate."""
        if len(nonce) != NONCE_SIZE or len(ciphertext) < TAG_SIZE:
            raise IntegrityError
        try:
            return self._cipher.decrypt(nonce, ciphertext, associated_data)
        except InvalidTag:
            raise IntegrityError from None


def _seal_with_nonce_for_tests(
    key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes
) -> bytes:
    """DANGEROUS, tests only: encrypt under a caller-chosen nonce, for known-answer tests.

    Reusing a nonce with the same key breaks GCM's confidentiality and
    authenticity; nothing outside tests may call this.
    """
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)
