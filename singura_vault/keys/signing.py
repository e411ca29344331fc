"""The audit signing key: Ed25519, kept like the root key, never in the database.

The vault signs the heads of its audit hash chains with it (signed checkpoints,
docs/audit.md). Whoever holds only the public key can verify a checkpoint offline;
whoever holds only the database -- a superuser included -- cannot make one, so a
chain that was re-hashed after a checkpoint no longer matches it.

The key file holds the 32-byte Ed25519 private seed as base64 text, mode 0600,
checked like the keyring file (owner-only, regular file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from singura_vault.keys.errors import KeyConfigError
from singura_vault.keys.holder import KeyHolder
from singura_vault.keys.material import decode_key, encode_key, generate_key_bytes
from singura_vault.private_files import read_private_file, write_new_private_file

__all__ = ["AuditSigner", "load_audit_signer", "public_key_id", "verify_signature"]

_MAX_FILE_BYTES = 256


class AuditSigner(KeyHolder):
    """Signs checkpoint messages; exposes only the public key and its id."""

    __slots__ = ("_private", "key_id", "public_key_pem")

    def __init__(self, seed: bytes) -> None:
        private = Ed25519PrivateKey.from_private_bytes(seed)
        pem = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )
        object.__setattr__(self, "_private", private)
        object.__setattr__(self, "public_key_pem", pem)
        object.__setattr__(self, "key_id", public_key_id(self.public_key_pem))

    _private: Ed25519PrivateKey
    public_key_pem: str
    key_id: str

    def __repr__(self) -> str:
        return f"<AuditSigner {self.key_id}: private key redacted>"

    @classmethod
    def from_file(cls, path: Path) -> AuditSigner:
        where = f"audit signing key file {path}"
        data = read_private_file(path, where, _MAX_FILE_BYTES, error=KeyConfigError)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise KeyConfigError(f"{where} is not base64 text") from None
        return cls(decode_key(text, setting=where))

    @classmethod
    def generate_file(cls, path: Path) -> AuditSigner:
        """Write a new key file (0600; never over an existing one) and return its signer."""
        seed = generate_key_bytes()
        write_new_private_file(
            path,
            (encode_key(seed) + "\n").encode("ascii"),
            f"audit signing key file {path} already exists; refusing to overwrite it "
            "(checkpoints signed with it could no longer be matched to a key you hold)",
            error=KeyConfigError,
        )
        return cls(seed)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def public_key_id(public_key_pem: str) -> str:
    """A short stable id of a public key: ``ed25519-`` and 12 hex characters of its SHA-256."""
    return "ed25519-" + hashlib.sha256(public_key_pem.strip().encode("ascii")).hexdigest()[:12]


def verify_signature(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by that key.

    KeyConfigError if the text is not an Ed25519 public key in PEM form.
    """
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise KeyConfigError("the public key is not a PEM-encoded public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyConfigError("the public key is not an Ed25519 key")
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


DEVELOPMENT_SIGNING_KEY_NAME = "audit-signing-key"


def load_audit_signer(
    key_file: Path | None, *, data_dir: Path, embedded: bool, production: bool
) -> AuditSigner | None:
    """The configured signer; in embedded development a generated one in the data dir.

    None (no signed checkpoints) only outside production with an external database
    and no key file; production requires SINGURA_AUDIT_SIGNING_KEY_FILE.
    """
    if key_file is not None:
        return AuditSigner.from_file(key_file)
    if production:
        raise KeyConfigError(
            "SINGURA_ENV=production requires SINGURA_AUDIT_SIGNING_KEY_FILE (the Ed25519 key "
            "that signs audit checkpoints); create one with "
            "`singura-vault keys generate-signing-key --output FILE`"
        )
    if not embedded:
        return None
    path = data_dir / DEVELOPMENT_SIGNING_KEY_NAME
    if path.exists():
        return AuditSigner.from_file(path)
    return AuditSigner.generate_file(path)
