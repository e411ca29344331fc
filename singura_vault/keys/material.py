"""Root-key text: decoding and checking what an operator supplies, generating new keys, naming keys.

This module turns ENCRYPTION_KEY (or a keyring file entry) into exactly 32 key
bytes, or refuses it, and derives the non-secret id a key is known by. It must
never put the supplied text or the key bytes in an exception message, a log
line or a repr: errors say which setting is wrong, what form is expected and
how to generate a good value.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import string

from cryptography.hazmat.primitives import hashes, hmac

from singura_vault.keys.aead import KEY_SIZE
from singura_vault.keys.errors import KeyConfigError

__all__ = [
    "GENERATE_HINT",
    "KEY_FORM",
    "decode_key",
    "derive_key_id",
    "encode_key",
    "generate_encryption_key",
    "generate_key_bytes",
]

KEY_FORM = "32 random bytes, base64- or hex-encoded (44 or 64 characters)"
GENERATE_HINT = "generate one with `singura-vault keys generate`"

_HEX_LENGTH = 2 * KEY_SIZE  # 64
_BASE64_LENGTHS = (43, 44)  # unpadded, padded
_HEXDIGITS = frozenset(string.hexdigits)
_URLSAFE_ONLY = frozenset("-_")
_STANDARD_ONLY = frozenset("+/")
_KEY_ID_LABEL = b"singura-vault root key id"
# Random 32-byte strings have about 30 distinct byte values; fewer than 16 (or
# only printable ASCII, odds about 1e-14) means the bytes came from a person,
# e.g. a base64-encoded passphrase, not from a random generator.
_MIN_DISTINCT_BYTES = 16


def decode_key(text: str, *, setting: str) -> bytes:
    """Decode base64 (standard or URL-safe, padding optional) or hex text of 32 random bytes.

    ``setting`` names where the text came from, for the error message
    (e.g. ``"ENCRYPTION_KEY"``). Raises KeyConfigError, never echoing ``text``.
    """
    key = _decode(text.strip())
    if key is None or len(key) != KEY_SIZE:
        raise KeyConfigError(f"{setting} must be {KEY_FORM}; {GENERATE_HINT}")
    problem = _why_not_random(key)
    if problem is not None:
        raise KeyConfigError(
            f"{setting} must be {KEY_FORM}, but it decodes to {problem}; {GENERATE_HINT}"
        )
    return key


def _decode(text: str) -> bytes | None:
    if len(text) == _HEX_LENGTH and _HEXDIGITS.issuperset(text):
        return bytes.fromhex(text)
    if len(text) not in _BASE64_LENGTHS:
        return None
    chars = set(text)
    if chars & _URLSAFE_ONLY and chars & _STANDARD_ONLY:
        return None
    altchars = b"-_" if chars & _URLSAFE_ONLY else b"+/"
    padded = text + "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Only the canonical encoding of the bytes: rejects stray trailing bits,
    # which a hand-typed 43-character string would usually have.
    if base64.b64encode(key, altchars=altchars).decode("ascii") != padded:
        return None
    return key


def _why_not_random(key: bytes) -> str | None:
    distinct = len(set(key))
    if distinct == 1:
        return "one byte value repeated"
    if all(0x20 <= byte < 0x7F for byte in key):
        return "printable text (an encoded passphrase?)"
    if distinct < _MIN_DISTINCT_BYTES:
        return "too few distinct byte values to be random"
    return None


def generate_key_bytes() -> bytes:
    """Return 32 bytes from the OS CSPRNG that :func:`decode_key` will accept."""
    while True:
        key = secrets.token_bytes(KEY_SIZE)
        if _why_not_random(key) is None:  # fails about once in 10**14 draws
            return key


def encode_key(key: bytes) -> str:
    """Return the standard, padded base64 text (44 characters) of 32 key bytes."""
    return base64.b64encode(key).decode("ascii")


def generate_encryption_key() -> str:
    """Return a new ENCRYPTION_KEY value: standard padded base64 of 32 random bytes."""
    return encode_key(generate_key_bytes())


def derive_key_id(key: bytes, prefix: str) -> str:
    """Return ``prefix-`` and 12 hex characters of HMAC-SHA256(key, label): stable, not secret.

    48 bits of a MAC under the key tell keys apart (after a rotation, say)
    and reveal nothing about the key itself.
    """
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(_KEY_ID_LABEL)
    return f"{prefix}-{mac.finalize().hex()[:12]}"
