"""The key-management package: AES-256-GCM, envelope keys, key loading, and what never leaks.

Pure unit tests: no database, no network; files only under tmp_path.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import pickle
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from structlog.testing import capture_logs

from singura_vault.keys import (
    CredentialBinding,
    DataKey,
    FileKeyring,
    IntegrityError,
    KeyConfigError,
    KeyManager,
    KeyProvider,
    LocalKeyring,
    Sealed,
    WrappedDataKey,
    generate_encryption_key,
)
from singura_vault.keys import load_key_provider as load_provider_from
from singura_vault.keys.aead import Aes256Gcm, _seal_with_nonce_for_tests
from tests.support.canaries import canary

GENERATE_HINT = "singura-vault keys generate"

# A fixed root key whose standard base64 contains both '+' and '/', so that the
# standard and URL-safe encodings differ.
ROOT_KEY = bytes.fromhex("f8e0c1b2a3948576675849302a1b0cfdeedfd0c1b2a39485766758493a2b1c0d")
ROOT_KEY_B64 = base64.b64encode(ROOT_KEY).decode()
OTHER_ROOT_KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0")

ORG_A = uuid.UUID("11111111-1111-4111-8111-111111111111")
ORG_B = uuid.UUID("22222222-2222-4222-8222-222222222222")


@dataclass(frozen=True)
class KeySettings:
    """The root-key settings keys.load_key_provider reads (config.Settings' defaults)."""

    data_dir: Path
    embedded: bool
    production: bool
    encryption_key: str | None = None
    keyring_file: Path | None = None
    previous_encryption_keys: tuple[str, ...] = ()
    kms: Any = "local"
    transit_address: str | None = None
    transit_key: str | None = None
    transit_token_file: Path | None = None
    transit_mount: str | None = None
    transit_ca_file: Path | None = None


def load_key_provider(**options: Any) -> tuple[KeyProvider, str]:
    """keys.load_key_provider over settings built from these keyword options."""
    return load_provider_from(KeySettings(**options))


def expected_env_key_id(key: bytes) -> str:
    """The documented key id, computed independently with the standard library."""
    return "env-" + hmac.new(key, b"singura-vault root key id", hashlib.sha256).hexdigest()[:12]


def encodings_of(key: bytes) -> list[str]:
    """Every text form a key could leak as."""
    return [
        key.hex(),
        key.hex().upper(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode(),
        base64.b64encode(key).decode().rstrip("="),
        repr(key),
    ]


class SpyProvider:
    """A real LocalKeyring behind a wrapper that counts calls and remembers wrapped DEKs."""

    def __init__(self, inner: LocalKeyring) -> None:
        self.inner = inner
        self.wraps = 0
        self.unwraps = 0
        self.wrapped_material: list[bytes] = []

    def primary_key_id(self) -> str:
        return self.inner.primary_key_id()

    async def wrap(self, plaintext_key: bytes, associated_data: bytes) -> WrappedDataKey:
        self.wraps += 1
        self.wrapped_material.append(plaintext_key)
        return await self.inner.wrap(plaintext_key, associated_data)

    async def unwrap(self, wrapped: WrappedDataKey, associated_data: bytes) -> bytes:
        self.unwraps += 1
        return await self.inner.unwrap(wrapped, associated_data)


def root_keyring(key: bytes = ROOT_KEY) -> LocalKeyring:
    return LocalKeyring.from_encryption_key(base64.b64encode(key).decode())


def binding(org: uuid.UUID = ORG_A, key_version: int = 1) -> CredentialBinding:
    return CredentialBinding(
        organization_id=org,
        connection_id=uuid.UUID("33333333-3333-4333-8333-333333333333"),
        credential_id=uuid.UUID("44444444-4444-4444-8444-444444444444"),
        credential_type="oauth_refresh_token",
        version=7,
        key_version=key_version,
    )


async def new_data_key(
    manager: KeyManager, org: uuid.UUID = ORG_A, version: int = 1
) -> tuple[DataKey, WrappedDataKey]:
    wrapped = await manager.create_data_key(org, version)
    return await manager.data_key(org, version, wrapped), wrapped


def write_keyring(path: Path, document: Any, mode: int = 0o600) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    path.chmod(mode)
    return path


# ---- AES-256-GCM known answers ---------------------------------------------

# McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", revised 2005,
# Appendix B, Test Cases 13-16 (AES-256, 96-bit IVs); the same values are in
# NIST's GCM validation material and in most AES-GCM test suites.
_K15 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
_P15 = (
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
_C15 = (
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
)
GCM_VECTORS = {
    # name: (key, iv, plaintext, aad, ciphertext, tag)
    "tc13-empty-plaintext-no-aad": (
        "00" * 32,
        "00" * 12,
        "",
        "",
        "",
        "530f8afbc74536b9a963b4f1c4cb738b",
    ),
    "tc14-one-block-no-aad": (
        "00" * 32,
        "00" * 12,
        "00" * 16,
        "",
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
    ),
    "tc15-four-blocks-no-aad": (
        _K15,
        "cafebabefacedbaddecaf888",
        _P15,
        "",
        _C15,
        "b094dac5d93471bdec1a502270e3cc6c",
    ),
    "tc16-partial-block-with-aad": (
        _K15,
        "cafebabefacedbaddecaf888",
        _P15[:120],
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        _C15[:120],
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
}


@pytest.mark.parametrize("name", sorted(GCM_VECTORS))
def test_aes_256_gcm_matches_published_vectors(name: str) -> None:
    """Encryption gives the published ciphertext and tag, and decryption gives the plaintext."""
    key, iv, plaintext, aad, ciphertext, tag = (bytes.fromhex(v) for v in GCM_VECTORS[name])
    expected = ciphertext + tag
    assert _seal_with_nonce_for_tests(key, iv, plaintext, aad) == expected
    assert AESGCM(key).encrypt(iv, plaintext, aad) == expected  # the library agrees too
    assert Aes256Gcm(key).decrypt(iv, expected, aad) == plaintext


def _tc16() -> tuple[Aes256Gcm, bytes, bytes, bytes]:
    key, iv, _plaintext, aad, ciphertext, tag = (
        bytes.fromhex(v) for v in GCM_VECTORS["tc16-partial-block-with-aad"]
    )
    return Aes256Gcm(key), iv, ciphertext + tag, aad


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda iv, ct, aad: (iv, _flip(ct, len(ct) - 1), aad), id="tag-byte"),
        pytest.param(lambda iv, ct, aad: (iv, _flip(ct, 0), aad), id="ciphertext-byte"),
        pytest.param(lambda iv, ct, aad: (iv, ct, _flip(aad, 3)), id="aad-byte"),
        pytest.param(lambda iv, ct, aad: (iv, ct, aad + b"\x00"), id="aad-extended"),
        pytest.param(lambda iv, ct, aad: (iv, ct, b""), id="aad-removed"),
        pytest.param(lambda iv, ct, aad: (iv, ct[:-1], aad), id="truncated-by-one"),
        pytest.param(lambda iv, ct, aad: (iv, ct[-16:], aad), id="tag-only"),
        pytest.param(lambda iv, ct, aad: (iv, ct[:15], aad), id="shorter-than-tag"),
        pytest.param(lambda iv, ct, aad: (iv, b"", aad), id="empty"),
        pytest.param(lambda iv, ct, aad: (_flip(iv, 11), ct, aad), id="nonce-byte"),
        pytest.param(lambda iv, ct, aad: (iv[:8], ct, aad), id="nonce-64-bit"),
    ],
)
def test_any_modification_fails_as_integrity_error(
    tamper: Callable[[bytes, bytes, bytes], tuple[bytes, bytes, bytes]],
) -> None:
    """A changed tag, ciphertext, AAD or nonce, or a truncated ciphertext, raises IntegrityError."""
    cipher, iv, sealed, aad = _tc16()
    with pytest.raises(IntegrityError) as info:
        cipher.decrypt(*tamper(iv, sealed, aad))
    assert str(info.value) == IntegrityError.MESSAGE
    # cryptography's InvalidTag is not shown in tracebacks either.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


# ---- associated data --------------------------------------------------------


def test_credential_associated_data_has_the_documented_layout() -> None:
    """The binding encodes to prefix, three raw UUIDs, length-prefixed type and two uint32s."""
    assert binding().associated_data() == (
        b"singura-vault/credential/v1\x00"
        + bytes.fromhex("11111111111141118111111111111111")
        + bytes.fromhex("33333333333343338333333333333333")
        + bytes.fromhex("44444444444444448444444444444444")
        + b"\x00\x00\x00\x13oauth_refresh_token"
        + b"\x00\x00\x00\x07"
        + b"\x00\x00\x00\x01"
    )


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("version", -1, ValueError),
        ("key_version", 2**32, ValueError),
        ("version", True, TypeError),
        ("organization_id", str(ORG_A), TypeError),
        ("credential_type", b"oauth", TypeError),
    ],
)
def test_binding_rejects_values_it_cannot_encode(field: str, value: Any, error: type) -> None:
    """A binding with a non-UUID id, a non-str type or an out-of-range version is refused."""
    with pytest.raises(error):
        replace(binding(), **{field: value})


# ---- seal and open ----------------------------------------------------------


async def test_seal_then_open_returns_the_plaintext() -> None:
    """A sealed credential opens to the same bytes under the same key and binding."""
    secret = canary("keys-roundtrip").encode()
    manager = KeyManager(root_keyring())
    key, _ = await new_data_key(manager)
    sealed = manager.seal(key, secret, binding())
    assert len(sealed.nonce) == 12
    assert len(sealed.ciphertext) == len(secret) + 16
    assert secret not in sealed.ciphertext
    assert secret.decode() not in repr(sealed)
    assert manager.open(key, sealed, binding()) == secret
    assert manager.open(key, manager.seal(key, b"", binding()), binding()) == b""


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("organization_id", ORG_B),
        ("connection_id", uuid.UUID("55555555-5555-4555-8555-555555555555")),
        ("credential_id", uuid.UUID("66666666-6666-4666-8666-666666666666")),
        ("credential_type", "api_key"),
        ("version", 8),
        ("key_version", 2),
    ],
)
async def test_open_fails_when_any_binding_field_changes(field: str, value: Any) -> None:
    """Changing any one field of the binding makes open raise IntegrityError."""
    manager = KeyManager(root_keyring())
    key, _ = await new_data_key(manager)
    sealed = manager.seal(key, b"secret", binding())
    with pytest.raises(IntegrityError):
        manager.open(key, sealed, replace(binding(), **{field: value}))


async def test_ciphertext_moved_to_another_organization_fails() -> None:
    """A credential row copied into another organization does not open under that org's key."""
    manager = KeyManager(root_keyring())
    key_a, _ = await new_data_key(manager, ORG_A)
    key_b, _ = await new_data_key(manager, ORG_B)
    sealed = manager.seal(key_a, b"secret", binding(ORG_A))
    with pytest.raises(IntegrityError):
        manager.open(key_b, sealed, binding(ORG_B))


async def test_open_fails_on_tampered_sealed_value() -> None:
    """A flipped ciphertext bit or a swapped nonce raises IntegrityError, not InvalidTag."""
    manager = KeyManager(root_keyring())
    key, _ = await new_data_key(manager)
    sealed = manager.seal(key, b"secret", binding())
    other = manager.seal(key, b"secret", binding())
    with pytest.raises(IntegrityError):
        manager.open(key, Sealed(sealed.nonce, _flip(sealed.ciphertext, 2)), binding())
    with pytest.raises(IntegrityError):
        manager.open(key, Sealed(other.nonce, sealed.ciphertext), binding())


async def test_seal_refuses_a_binding_for_another_key() -> None:
    """Sealing with a binding whose organization or key version differs from the key's is a bug."""
    manager = KeyManager(root_keyring())
    key, _ = await new_data_key(manager)
    with pytest.raises(ValueError, match="binding is for organization"):
        manager.seal(key, b"secret", binding(ORG_B))
    with pytest.raises(ValueError, match="key version 2"):
        manager.seal(key, b"secret", binding(key_version=2))


async def test_every_seal_uses_a_fresh_nonce() -> None:
    """1000 seals of the same plaintext under the same key use 1000 different nonces."""
    manager = KeyManager(root_keyring())
    key, _ = await new_data_key(manager)
    sealed = [manager.seal(key, b"same", binding()) for _ in range(1000)]
    assert len({s.nonce for s in sealed}) == 1000
    assert len({s.ciphertext for s in sealed}) == 1000


# ---- data keys and root keys ------------------------------------------------


async def test_wrapped_data_key_is_bound_to_its_organization_and_version() -> None:
    """A DEK wrapped for org A version 1 cannot be unwrapped as org B or as version 2."""
    wrapped = await KeyManager(root_keyring()).create_data_key(ORG_A, 1)
    manager = KeyManager(root_keyring())
    with pytest.raises(IntegrityError):
        await manager.data_key(ORG_B, 1, wrapped)
    with pytest.raises(IntegrityError):
        await manager.data_key(ORG_A, 2, wrapped)
    assert (await manager.data_key(ORG_A, 1, wrapped)).version == 1


async def test_tampered_wrapped_key_fails_as_integrity_error() -> None:
    """A modified or truncated wrapped-key blob raises IntegrityError."""
    wrapped = await KeyManager(root_keyring()).create_data_key(ORG_A, 1)
    manager = KeyManager(root_keyring())
    for blob in (_flip(wrapped.blob, 20), wrapped.blob[:-1], wrapped.blob[:12], b""):
        with pytest.raises(IntegrityError):
            await manager.data_key(ORG_A, 1, WrappedDataKey(wrapped.root_key_id, blob))


async def test_unknown_root_key_is_a_config_error() -> None:
    """A DEK wrapped under a root key the keyring lacks raises KeyConfigError naming the id."""
    wrapped = await KeyManager(root_keyring(OTHER_ROOT_KEY)).create_data_key(ORG_A, 1)
    with pytest.raises(KeyConfigError) as info:
        await KeyManager(root_keyring()).data_key(ORG_A, 1, wrapped)
    assert str(info.value).startswith(f"root key {wrapped.root_key_id} is not in the keyring;")
    bogus = WrappedDataKey(ROOT_KEY_B64, wrapped.blob)  # a key-like id is never echoed
    with pytest.raises(KeyConfigError) as info:
        await KeyManager(root_keyring()).data_key(ORG_A, 1, bogus)
    assert ROOT_KEY_B64 not in str(info.value)


async def test_wrong_root_key_under_the_same_id_fails_as_integrity_error(tmp_path: Path) -> None:
    """Two keyring files that reuse an id for different keys cannot read each other's DEKs."""

    def keyring(name: str, key: bytes) -> LocalKeyring:
        document = {
            "format": "singura-vault-keyring/v1",
            "primary": "k1",
            "keys": {"k1": base64.b64encode(key).decode()},
        }
        return LocalKeyring.from_file(write_keyring(tmp_path / name, document))

    wrapped = await KeyManager(keyring("a.json", ROOT_KEY)).create_data_key(ORG_A, 1)
    with pytest.raises(IntegrityError):
        await KeyManager(keyring("b.json", OTHER_ROOT_KEY)).data_key(ORG_A, 1, wrapped)


async def test_local_keyring_blob_is_nonce_then_aes_gcm_of_the_key() -> None:
    """The local keyring's blob is a 12-byte nonce and AES-256-GCM(root key) of the DEK."""
    spy = SpyProvider(root_keyring())
    wrapped = await KeyManager(spy).create_data_key(ORG_A, 3)
    ad = b"singura-vault/data-key/v1\x00" + ORG_A.bytes + b"\x00\x00\x00\x03"
    nonce, ciphertext = wrapped.blob[:12], wrapped.blob[12:]
    assert AESGCM(ROOT_KEY).decrypt(nonce, ciphertext, ad) == spy.wrapped_material[0]
    assert len(wrapped.blob) == 12 + 32 + 16
    assert wrapped.root_key_id == expected_env_key_id(ROOT_KEY)


# ---- ENCRYPTION_KEY ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(base64.b64encode(ROOT_KEY).decode(), id="base64"),
        pytest.param(base64.b64encode(ROOT_KEY).decode().rstrip("="), id="base64-unpadded"),
        pytest.param(base64.urlsafe_b64encode(ROOT_KEY).decode(), id="urlsafe"),
        pytest.param(
            base64.urlsafe_b64encode(ROOT_KEY).decode().rstrip("="), id="urlsafe-unpadded"
        ),
        pytest.param(ROOT_KEY.hex(), id="hex"),
        pytest.param(ROOT_KEY.hex().upper(), id="hex-upper"),
        pytest.param(base64.b64encode(ROOT_KEY).decode() + "\n", id="trailing-newline"),
    ],
)
def test_encryption_key_encodings_are_accepted_with_one_id(text: str) -> None:
    """Base64 (standard, URL-safe, with or without padding) and hex give the same key and id."""
    keyring = LocalKeyring.from_encryption_key(text)
    assert keyring.key_ids() == (expected_env_key_id(ROOT_KEY),)
    assert keyring.primary_key_id() == expected_env_key_id(ROOT_KEY)


_PASSPHRASE = "correct horse battery staple 123"  # 32 characters, not 32 random bytes


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_PASSPHRASE, id="32-char-passphrase"),
        pytest.param(base64.b64encode(_PASSPHRASE.encode()).decode(), id="base64-of-passphrase"),
        pytest.param(_PASSPHRASE.encode().hex(), id="hex-of-passphrase"),
        pytest.param(base64.b64encode(ROOT_KEY[:31]).decode(), id="31-bytes-base64"),
        pytest.param(base64.b64encode(ROOT_KEY + b"\x01").decode(), id="33-bytes-base64"),
        pytest.param(ROOT_KEY[:31].hex(), id="31-bytes-hex"),
        pytest.param((ROOT_KEY + b"\x01").hex(), id="33-bytes-hex"),
        pytest.param("!@#$%^&*()" * 5, id="garbage"),
        pytest.param("ZZZZ" + ROOT_KEY.hex()[4:], id="hex-with-non-hex"),
        pytest.param(base64.b64encode(bytes(32)).decode(), id="all-zero-base64"),
        pytest.param("00" * 32, id="all-zero-hex"),
        pytest.param("ab" * 32, id="all-equal-hex"),
        pytest.param(bytes(range(8)).hex() * 4, id="eight-distinct-bytes"),
        pytest.param(
            base64.b64encode(ROOT_KEY).decode()[:1] + "-" + base64.b64encode(ROOT_KEY).decode()[2:],
            id="mixed-alphabets",
        ),
        pytest.param(base64.b64encode(ROOT_KEY).decode()[:42] + "B=", id="non-canonical-bits"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_encryption_keys_are_refused_without_echo(text: str) -> None:
    """Anything but 32 random bytes in base64 or hex is refused with a hint and no echo."""
    with pytest.raises(KeyConfigError) as info:
        LocalKeyring.from_encryption_key(text)
    message = str(info.value)
    assert message.startswith(
        "ENCRYPTION_KEY must be 32 random bytes, base64- or hex-encoded (44 or 64 characters)"
    )
    assert f"`{GENERATE_HINT}`" in message
    if text:
        assert text not in message
        assert text[:12] not in message


def test_generated_encryption_keys_are_fresh_and_accepted() -> None:
    """generate_encryption_key returns 44-character padded base64 of 32 new random bytes."""
    first, second = generate_encryption_key(), generate_encryption_key()
    assert first != second
    for text in (first, second):
        assert len(text) == 44
        assert len(base64.b64decode(text, validate=True)) == 32
        LocalKeyring.from_encryption_key(text)


# ---- keyring files ----------------------------------------------------------


def test_generated_keyring_file_is_private_and_loads(tmp_path: Path) -> None:
    """generate_file writes a 0600 keyring with one key, atomically, and from_file reads it back."""
    path = tmp_path / "keyring.json"
    keyring = LocalKeyring.generate_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["format"] == "singura-vault-keyring/v1"
    assert list(document["keys"]) == [document["primary"]] == list(keyring.key_ids())
    assert keyring.primary_key_id().startswith("k1-")
    assert len(base64.b64decode(document["keys"][document["primary"]], validate=True)) == 32
    assert LocalKeyring.from_file(path).key_ids() == keyring.key_ids()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyring.json"]  # no temp file left


def test_generate_file_refuses_to_overwrite(tmp_path: Path) -> None:
    """generate_file leaves an existing keyring untouched and raises KeyConfigError."""
    path = tmp_path / "keyring.json"
    LocalKeyring.generate_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyConfigError, match="already exists"):
        LocalKeyring.generate_file(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyring.json"]


async def test_keyring_file_with_two_keys_reads_what_the_env_key_wrapped(tmp_path: Path) -> None:
    """A file holding the old ENCRYPTION_KEY under its id unwraps old DEKs; new ones use primary."""
    old_id = expected_env_key_id(ROOT_KEY)
    wrapped = await KeyManager(root_keyring()).create_data_key(ORG_A, 1)
    document = {
        "format": "singura-vault-keyring/v1",
        "primary": "k2",
        "keys": {old_id: ROOT_KEY_B64, "k2": base64.b64encode(OTHER_ROOT_KEY).decode()},
    }
    keyring = LocalKeyring.from_file(write_keyring(tmp_path / "k.json", document, 0o400))
    assert keyring.key_ids() == (old_id, "k2")
    manager = KeyManager(keyring)
    assert (await manager.data_key(ORG_A, 1, wrapped)).organization_id == ORG_A
    assert (await manager.create_data_key(ORG_B, 1)).root_key_id == "k2"
    assert manager.provider_description == "local keyring (2 keys, primary k2)"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700])
def test_keyring_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A keyring file with any group or other permission bit is refused with a chmod 600 hint."""
    path = tmp_path / "keyring.json"
    LocalKeyring.generate_file(path)
    path.chmod(mode)
    if mode & 0o077 == 0:  # 0700: owner-only is accepted
        LocalKeyring.from_file(path)
        return
    with pytest.raises(KeyConfigError) as info:
        LocalKeyring.from_file(path)
    assert f"chmod 600 {path}" in str(info.value)


def _valid_document() -> dict[str, Any]:
    return {"format": "singura-vault-keyring/v1", "primary": "k1", "keys": {"k1": ROOT_KEY_B64}}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param({**_valid_document(), "primary": "k9"}, "not in", id="primary-missing"),
        pytest.param(
            {k: v for k, v in _valid_document().items() if k != "primary"},
            "exactly the fields",
            id="no-primary-field",
        ),
        pytest.param(
            {**_valid_document(), "format": "v0"}, "exactly the fields", id="wrong-format"
        ),
        pytest.param({**_valid_document(), "extra": 1}, "exactly the fields", id="unknown-field"),
        pytest.param({**_valid_document(), "keys": {}}, "non-empty", id="no-keys"),
        pytest.param({**_valid_document(), "keys": []}, "non-empty", id="keys-not-object"),
        pytest.param(
            {**_valid_document(), "keys": {"k1": base64.b64encode(ROOT_KEY[:31]).decode()}},
            "must be 32 random bytes",
            id="short-key",
        ),
        pytest.param(
            {**_valid_document(), "keys": {"k1": ROOT_KEY_B64, ROOT_KEY.hex(): ROOT_KEY_B64}},
            "key id",
            id="key-as-id",
        ),
        pytest.param({**_valid_document(), "keys": {"k1": 5}}, "must be a string", id="key-number"),
        pytest.param("{not json", "not valid JSON", id="json-garbage"),
        pytest.param('["a list"]', "must be a JSON object", id="json-list"),
        pytest.param(
            '{"format": "singura-vault-keyring/v1", "primary": "k1", '
            f'"keys": {{"k1": "{ROOT_KEY_B64}", "k1": "{ROOT_KEY.hex()}"}}}}',
            "twice",
            id="duplicate-id",
        ),
    ],
)
def test_malformed_keyring_files_are_refused_without_echo(
    tmp_path: Path, document: Any, expected: str
) -> None:
    """A keyring file with a bad format, primary, key or JSON is refused; no key text is echoed."""
    path = write_keyring(tmp_path / "keyring.json", document)
    with pytest.raises(KeyConfigError) as info:
        LocalKeyring.from_file(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    for leak in (*encodings_of(ROOT_KEY), base64.b64encode(ROOT_KEY[:31]).decode()):
        assert leak not in message


def test_missing_keyring_file_is_refused(tmp_path: Path) -> None:
    """A keyring path that does not exist is a KeyConfigError naming the path."""
    with pytest.raises(KeyConfigError, match="does not exist"):
        LocalKeyring.from_file(tmp_path / "nope.json")


# ---- key holders never leak ------------------------------------------------


async def test_data_key_and_keyring_reprs_contain_no_key_bytes() -> None:
    """repr and str of a DataKey and a LocalKeyring name ids and versions, never key material."""
    spy = SpyProvider(root_keyring())
    manager = KeyManager(spy)
    key, wrapped = await new_data_key(manager, ORG_A, 3)
    dek = spy.wrapped_material[0]
    assert repr(key) == f"<DataKey org={ORG_A} v3: key material redacted>"
    assert str(key) == repr(key) == f"{key}"
    keyring = spy.inner
    for text in (repr(key), str(key), repr(keyring), str(keyring), repr(manager), repr(wrapped)):
        assert "redacted" in text or "KeyManager" in text or "WrappedDataKey" in text
        for leak in (*encodings_of(dek), *encodings_of(ROOT_KEY)):
            assert leak not in text
    assert expected_env_key_id(ROOT_KEY) in repr(keyring)


async def test_key_holders_cannot_be_pickled_or_copied(tmp_path: Path) -> None:
    """pickle, copy.copy and copy.deepcopy of a DataKey, a LocalKeyring or a FileKeyring
    raise TypeError, and a FileKeyring's attributes cannot be changed from outside."""
    manager = KeyManager(root_keyring())
    key, _ = await new_data_key(manager)
    LocalKeyring.generate_file(tmp_path / "keyring.json")
    file_keyring = FileKeyring(tmp_path / "keyring.json")
    with pytest.raises(AttributeError, match="immutable"):
        file_keyring._path = tmp_path / "elsewhere.json"  # type: ignore[misc]  # the point
    for holder in (key, root_keyring(), Aes256Gcm(ROOT_KEY), file_keyring):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            with pytest.raises(TypeError, match="cannot be copied or serialized"):
                pickle.dumps(holder, protocol=protocol)
        with pytest.raises(TypeError, match="cannot be copied or serialized"):
            copy.copy(holder)
        with pytest.raises(TypeError, match="cannot be copied or serialized"):
            copy.deepcopy(holder)
        with pytest.raises(TypeError, match="cannot be copied or serialized"):
            holder.__getstate__()


async def test_key_holders_cannot_be_built_or_changed_from_outside() -> None:
    """DataKey and LocalKeyring refuse direct construction, and a DataKey cannot be relabelled."""
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        DataKey()
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        DataKey(ORG_A, 1, ROOT_KEY)
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        DataKey.__new__(DataKey)
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        LocalKeyring()
    key, _ = await new_data_key(KeyManager(root_keyring()))
    with pytest.raises(AttributeError, match="immutable"):
        key.organization_id = ORG_B
    with pytest.raises(TypeError):
        vars(key)  # slots only: no __dict__ to rummage in


# ---- choosing the provider --------------------------------------------------


def test_production_without_a_key_is_refused(tmp_path: Path) -> None:
    """SINGURA_ENV=production with neither ENCRYPTION_KEY nor a keyring file refuses to start."""
    with pytest.raises(KeyConfigError) as info:
        load_key_provider(
            encryption_key=None,
            keyring_file=None,
            data_dir=tmp_path,
            embedded=True,
            production=True,
        )
    assert str(info.value) == (
        "SINGURA_ENV=production requires ENCRYPTION_KEY or SINGURA_KEYRING_FILE; "
        "generate a key with `singura-vault keys generate`"
    )
    assert list(tmp_path.iterdir()) == []


def test_development_generates_a_private_keyring_and_warns(tmp_path: Path) -> None:
    """Embedded, non-production and keyless: data_dir/keyring.json (0600) and a warning event."""
    with capture_logs() as events:
        provider, mode = load_key_provider(
            encryption_key=None,
            keyring_file=None,
            data_dir=tmp_path,
            embedded=True,
            production=False,
        )
        again, _ = load_key_provider(
            encryption_key=None,
            keyring_file=None,
            data_dir=tmp_path,
            embedded=True,
            production=False,
        )
    path = tmp_path / "keyring.json"
    assert mode == "development"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert isinstance(provider, FileKeyring)
    assert isinstance(again, FileKeyring)
    assert again.key_ids() == provider.key_ids()  # the second start reuses the file
    warnings = [e for e in events if e["event"] == "development_keyring_in_use"]
    assert len(warnings) == 2
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["keyring_path"] == str(path)
    assert "backed up separately from the database" in warnings[0]["detail"]
    stored_key = json.loads(path.read_text())["keys"][provider.primary_key_id()]
    assert stored_key not in repr(events)


def test_both_key_settings_are_refused(tmp_path: Path) -> None:
    """ENCRYPTION_KEY and SINGURA_KEYRING_FILE together are ambiguous and refused."""
    path = tmp_path / "keyring.json"
    LocalKeyring.generate_file(path)
    with pytest.raises(KeyConfigError, match="set only one"):
        load_key_provider(
            encryption_key=ROOT_KEY_B64,
            keyring_file=path,
            data_dir=tmp_path,
            embedded=True,
            production=False,
        )


def test_external_database_without_a_key_is_refused(tmp_path: Path) -> None:
    """An external DATABASE_URL outside production still needs an explicit root key."""
    with pytest.raises(KeyConfigError) as info:
        load_key_provider(
            encryption_key=None,
            keyring_file=None,
            data_dir=tmp_path,
            embedded=False,
            production=False,
        )
    assert "ENCRYPTION_KEY or SINGURA_KEYRING_FILE" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_explicit_keys_select_env_and_file_modes(tmp_path: Path) -> None:
    """ENCRYPTION_KEY gives mode "env" and SINGURA_KEYRING_FILE mode "file", even in production."""
    path = tmp_path / "ring.json"
    generated = LocalKeyring.generate_file(path)
    common: dict[str, Any] = {"data_dir": tmp_path, "embedded": False, "production": True}
    env, env_mode = load_key_provider(encryption_key=ROOT_KEY_B64, keyring_file=None, **common)
    file, file_mode = load_key_provider(encryption_key=None, keyring_file=path, **common)
    assert (env_mode, file_mode) == ("env", "file")
    assert env.primary_key_id() == expected_env_key_id(ROOT_KEY)
    assert file.primary_key_id() == generated.primary_key_id()


# ---- the data-key cache -----------------------------------------------------


async def test_data_key_cache_skips_the_provider_until_forgotten() -> None:
    """A second data_key() for the same wrapped key is served from cache; forgetting drops it."""
    wrapped = await KeyManager(root_keyring()).create_data_key(ORG_A, 1)
    other = await KeyManager(root_keyring()).create_data_key(ORG_B, 1)
    spy = SpyProvider(root_keyring())
    manager = KeyManager(spy)
    first = await manager.data_key(ORG_A, 1, wrapped)
    assert await manager.data_key(ORG_A, 1, wrapped) is first
    await manager.data_key(ORG_B, 1, other)
    assert spy.unwraps == 2
    assert manager.forget_organization(ORG_A) == 1
    assert manager.forget_organization(ORG_A) == 0
    assert await manager.data_key(ORG_A, 1, wrapped) is not first
    await manager.data_key(ORG_B, 1, other)
    assert spy.unwraps == 3


async def test_created_data_key_is_verified_and_cached() -> None:
    """create_data_key checks its wrapped key unwraps once, then serves it from cache."""
    spy = SpyProvider(root_keyring())
    manager = KeyManager(spy)
    wrapped = await manager.create_data_key(ORG_A, 1)
    assert (spy.wraps, spy.unwraps) == (1, 1)
    key = await manager.data_key(ORG_A, 1, wrapped)
    assert spy.unwraps == 1
    assert manager.open(key, manager.seal(key, b"v", binding()), binding()) == b"v"


async def test_data_key_cache_is_bounded_and_least_recently_used() -> None:
    """With cache_size=2 the least recently used key is evicted and unwrapped again."""
    creator = KeyManager(root_keyring())
    wrapped = [await creator.create_data_key(ORG_A, v) for v in (1, 2, 3)]
    spy = SpyProvider(root_keyring())
    manager = KeyManager(spy, cache_size=2)
    await manager.data_key(ORG_A, 1, wrapped[0])
    await manager.data_key(ORG_A, 2, wrapped[1])
    await manager.data_key(ORG_A, 1, wrapped[0])  # 1 is now the most recent
    await manager.data_key(ORG_A, 3, wrapped[2])  # evicts 2
    assert spy.unwraps == 3
    await manager.data_key(ORG_A, 1, wrapped[0])
    assert spy.unwraps == 3
    await manager.data_key(ORG_A, 2, wrapped[1])
    assert spy.unwraps == 4


async def test_a_rewrapped_row_is_not_a_cache_hit() -> None:
    """A different wrapped blob for the same organization and version is unwrapped, not reused."""
    spy = SpyProvider(root_keyring())
    manager = KeyManager(spy)
    wrapped = await KeyManager(root_keyring()).create_data_key(ORG_A, 1)
    await manager.data_key(ORG_A, 1, wrapped)
    with pytest.raises(IntegrityError):
        await manager.data_key(
            ORG_A, 1, WrappedDataKey(wrapped.root_key_id, _flip(wrapped.blob, 30))
        )
    assert spy.unwraps == 2


# ---- fingerprints -----------------------------------------------------------


async def test_fingerprints_are_stable_per_key_and_value() -> None:
    """A fingerprint is 16 hex characters, stable for key and value, different otherwise."""
    spy = SpyProvider(root_keyring())
    manager = KeyManager(spy)
    key_a, _ = await new_data_key(manager, ORG_A)
    key_b, _ = await new_data_key(manager, ORG_B)
    key_a2, _ = await new_data_key(manager, ORG_A, 2)
    value = manager.fingerprint(key_a, b"xoxb-1")
    assert len(value) == 16
    assert set(value) <= set("0123456789abcdef")
    assert manager.fingerprint(key_a, b"xoxb-1") == value
    assert manager.fingerprint(key_a, b"xoxb-2") != value
    assert manager.fingerprint(key_b, b"xoxb-1") != value
    assert manager.fingerprint(key_a2, b"xoxb-1") != value
    # The documented construction: HMAC-SHA256 under HKDF-SHA256(DEK, info).
    fingerprint_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"singura-vault fingerprint v1"
    ).derive(spy.wrapped_material[0])
    assert value == hmac.new(fingerprint_key, b"xoxb-1", hashlib.sha256).hexdigest()[:16]


def test_key_provider_protocol_is_met_by_the_local_keyring() -> None:
    """LocalKeyring and the test spy both satisfy the KeyProvider port."""
    providers: list[KeyProvider] = [root_keyring(), SpyProvider(root_keyring())]
    assert [p.primary_key_id() for p in providers] == [expected_env_key_id(ROOT_KEY)] * 2
