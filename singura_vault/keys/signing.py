"""The audit signing key: Ed25519, kept like the root key, never in the database.

The vault signs the heads of its audit hash chains with it (signed checkpoints,
docs/audit.md). Whoever holds only the public key can verify a checkpoint offline;
whoever holds only the database -- a superuser included -- cannot make one, so a
chain that was re-hashed after a checkpoint no longer matches it.

The key file holds the 32-byte Ed25519 private seed as base64 text, mode 0600,
checked like the keyring file (owner-only, regular file).

A public key given to the verifier is parsed before anything is derived from it:
a file that is not an Ed25519 public key (a keyring, the private key itself, a
certificate, any other text) is a KeyConfigError that says what it is, never a
key id that happens not to match (which would read as tampering).

In embedded development the key is generated in the data directory -- but only
once the database says no other key signed its checkpoints:
:func:`load_audit_signer` returns a signer whose file is still to be written
(:attr:`AuditSigner.unsaved_path`), and the caller writes it with
:meth:`AuditSigner.save_generated` after that check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from singura_vault.keys.errors import KeyConfigError
from singura_vault.keys.holder import KeyHolder
from singura_vault.keys.material import decode_key, encode_key, generate_key_bytes
from singura_vault.local import DEVELOPMENT_SIGNING_KEY_FILE
from singura_vault.private_files import read_private_file, write_new_private_file

__all__ = [
    "AuditPublicKey",
    "AuditSigner",
    "load_audit_signer",
    "parse_public_key",
    "public_key_id",
    "verify_signature",
]

_MAX_FILE_BYTES = 256
PUBLIC_KEY_EXPECTED = (
    "expected the audit signing key's public key: an Ed25519 public key in PEM form "
    "(-----BEGIN PUBLIC KEY-----), as `singura-vault audit public-key --output FILE` "
    "writes it"
)
PUBLIC_KEY_COMMANDS = (
    "`singura-vault audit public-key --output FILE` prints the public key of a running "
    "vault, `singura-vault audit public-key --key-file KEYFILE --output FILE` that of a "
    "key file"
)


class AuditPublicKey:
    """A parsed Ed25519 public key and its id; build it with :func:`parse_public_key`."""

    __slots__ = ("_key", "key_id", "pem")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.pem = _pem(key)
        self.key_id = _key_id_of_pem(self.pem)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"<AuditPublicKey {self.key_id}>"


class AuditSigner(KeyHolder):
    """Signs checkpoint messages; exposes only the public key and its id."""

    __slots__ = ("_private", "key_id", "public_key_pem", "unsaved_path")

    def __init__(self, seed: bytes, *, unsaved_path: Path | None = None) -> None:
        private = Ed25519PrivateKey.from_private_bytes(seed)
        pem = _pem(private.public_key())
        object.__setattr__(self, "_private", private)
        object.__setattr__(self, "public_key_pem", pem)
        object.__setattr__(self, "key_id", _key_id_of_pem(pem))
        object.__setattr__(self, "unsaved_path", unsaved_path)

    _private: Ed25519PrivateKey
    public_key_pem: str
    key_id: str
    # A development key generated in memory, whose file is not written yet.
    unsaved_path: Path | None

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
        signer = cls.generate_unsaved(path)
        signer.save_generated()
        return signer

    @classmethod
    def generate_unsaved(cls, path: Path) -> AuditSigner:
        """A new key in memory, to be written to ``path`` by :meth:`save_generated`
        once the caller knows it may (no other key signed the checkpoints)."""
        return cls(generate_key_bytes(), unsaved_path=path)

    def save_generated(self) -> Path:
        """Write the generated key to its file (0600; never over an existing one)."""
        path = self.unsaved_path
        if path is None:
            raise KeyConfigError(f"audit signing key {self.key_id} was not generated here")
        seed = self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        write_new_private_file(
            path,
            (encode_key(seed) + "\n").encode("ascii"),
            f"audit signing key file {path} already exists; refusing to overwrite it "
            "(checkpoints signed with it could no longer be matched to a key you hold)",
            error=KeyConfigError,
        )
        object.__setattr__(self, "unsaved_path", None)
        return path

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def _pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _key_id_of_pem(canonical_pem: str) -> str:
    return "ed25519-" + hashlib.sha256(canonical_pem.strip().encode("ascii")).hexdigest()[:12]


def public_key_id(public_key_pem: str) -> str:
    """A short stable id of a public key: ``ed25519-`` and 12 hex characters of the
    SHA-256 of its PEM form as the vault writes it. The text is parsed first (so a
    re-wrapped or CRLF copy of the key has the same id); KeyConfigError if it is not
    an Ed25519 public key."""
    return parse_public_key(public_key_pem.encode("utf-8"), "the public key").key_id


def verify_signature(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by that key.

    KeyConfigError if the text is not an Ed25519 public key in PEM form.
    """
    return parse_public_key(public_key_pem.encode("utf-8"), "the public key").verify(
        message, signature
    )


_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def parse_public_key(data: bytes, where: str) -> AuditPublicKey:
    """The Ed25519 public key in ``data`` (PEM), or KeyConfigError saying what ``data``
    is instead and what was expected. ``where`` names the file in the message; the
    content never appears in it. A private key is refused with the commands that print
    its public key: the verifier never needs one, and should never be handed one."""
    what = _what_it_is_instead(data)
    if what is None:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            what = "a PEM block that does not parse as a public key"
        else:
            if isinstance(key, Ed25519PublicKey):
                return AuditPublicKey(key)
            what = f"{_algorithm(key)} public key, not an Ed25519 one"
    if what.startswith("private:"):
        raise KeyConfigError(
            f"{where} is {what.removeprefix('private:')}, a private key; refusing to use it "
            f"(verifying needs only the public key, and a private key should never leave "
            f"the vault's host); {PUBLIC_KEY_COMMANDS}"
        )
    raise KeyConfigError(f"{where} is {what}; {PUBLIC_KEY_EXPECTED}")


def _what_it_is_instead(data: bytes) -> str | None:
    """What ``data`` is when it is clearly not a PEM public key; None to try parsing.
    Answers starting ``private:`` describe a private key."""
    if not data.strip():
        return "empty"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return "not text (binary data, or text that is not ASCII)"
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return _describe_json(stripped)
    blocks = [m.decode("ascii") for m in _PEM_BEGIN.findall(data)]
    if any("PRIVATE KEY" in block for block in blocks):
        return f"private:a PEM private key (-----BEGIN {blocks[0]}-----)"
    if stripped.startswith("ssh-"):
        return "an OpenSSH public key line, not PEM"
    if not blocks:
        if len(stripped.split()) == 1 and _decodes_to_32_bytes(stripped):
            return (
                "private:the text of a 32-byte secret key (as in the vault's "
                "audit-signing-key file)"
            )
        return "text with no PEM block (no -----BEGIN PUBLIC KEY----- line)"
    if blocks[0] != "PUBLIC KEY":
        return f"a PEM {blocks[0].lower()}, not a public key"
    return None


def _describe_json(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        return "text that starts like JSON but is not a public key"
    if isinstance(value, dict) and "keys" in value:
        return "JSON holding keys (a keyring file?), not a public key"
    return "a JSON document, not a public key"


def _decodes_to_32_bytes(text: str) -> bool:
    """Whether ``text`` is hex or base64 of 32 bytes: how the vault writes secret keys."""
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return True
    padded = text + "=" * (-len(text) % 4)
    for altchars in (b"+/", b"-_"):
        try:
            if len(base64.b64decode(padded, altchars=altchars, validate=True)) == 32:
                return True
        except (binascii.Error, ValueError):
            pass
    return False


def _algorithm(key: object) -> str:
    """The key's kind, with its article ("an RSA")."""
    if isinstance(key, rsa.RSAPublicKey):
        return "an RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "an elliptic-curve (ECDSA)"
    if isinstance(key, Ed448PublicKey):
        return "an Ed448"
    return "another kind of"


def load_audit_signer(
    key_file: Path | None, *, data_dir: Path, embedded: bool, production: bool
) -> AuditSigner | None:
    """The configured signer; in embedded development the data dir's key file, or a
    new key whose file is not written yet (``unsaved_path``: the caller writes it once
    the database holds no checkpoints of another key, so that a restore without its
    key never silently starts a new one).

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
    path = data_dir / DEVELOPMENT_SIGNING_KEY_FILE
    if path.exists():
        return AuditSigner.from_file(path)
    return AuditSigner.generate_unsaved(path)
