"""The audit signing key from the operator's side (issue #25): `audit verify` parses the
public keys it is given before trusting a key id (a wrong file is exit 2, not a false
tamper alarm); a vault never signs with a key other than the one its database's
checkpoints continue with -- a restore without the key refuses to start -- and
`audit rotate-signing-key` is the one, audited, way to a new key, verifiable across the
rotation with both public keys; `audit export` does not replace files unless --force."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import asyncpg
import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.config.environment import load_settings
from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.db.pool import Database
from singura_vault.errors import ConfigError
from singura_vault.proto.singura.vault.v1 import audit_pb2 as pb
from singura_vault.proto.singura.vault.v1 import audit_pb2_grpc
from singura_vault.service.access import AccessService
from singura_vault.service.audit_checkpoints import check_audit_signer, checkpoint_message, micros
from singura_vault.service.audit_offline import _timestamp, read_jsonl
from tests.support.audit import chain_of
from tests.support.audit_checkpoints import audit, checkpoint, cli, export_files, grow
from tests.support.cli import Serving, cli_environment, free_port, run
from tests.support.postgres import PostgresServer
from tests.support.status import expect_status
from tests.support.vault import Vault, start_vault, stop_vault

CLI = [sys.executable, "-m", "singura_vault"]


def load(path: Path) -> list[dict[str, object]]:
    return read_jsonl(path.read_text(encoding="utf-8").splitlines(), str(path))


def verify_files(
    events: Path, checkpoints: Path, *public_keys: Path
) -> subprocess.CompletedProcess[str]:
    """`audit verify --export` (offline: no vault, no database in its environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env["SINGURA_DATA_DIR"] = str(events.parent / "verify-data")
    flags = [arg for path in public_keys for arg in ("--public-key", str(path))]
    return subprocess.run(
        [*CLI, "audit", "verify", "--export", str(events), "--checkpoints", str(checkpoints),
         *flags],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def database_cli(
    args: list[str], service_dsn: str, tmp_path: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    """An operator's command on the test database (DATABASE_URL, no running vault needed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env.update(DATABASE_URL=service_dsn, SINGURA_DATA_DIR=str(tmp_path / "op-data"), **extra)
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def signed_org(vault: Vault) -> tuple[str, str]:
    """An organization whose chain has two checkpoints; (org id, a connection id)."""
    org, events = await chain_of(vault, 4)
    conn = events[1].resource_id
    await checkpoint(vault, org)
    await grow(vault, org, conn, 2, "a")
    await checkpoint(vault, org)
    return org, conn


async def test_a_file_that_is_not_the_public_key_is_exit_2_not_tampering(
    signing_vault: Vault, signer: keys.AuditSigner, tmp_path: Path
) -> None:
    """A text file, a keyring (JSON), the private signing key itself and a PEM private key
    given as --public-key each stop `audit verify` with exit 2 and what the file is; the
    private ones name the command that prints the public key. A real public key of
    another key is still TAMPERED (exit 1), naming both key ids."""
    org, _ = await signed_org(signing_vault)
    events, checkpoints, public = await export_files(signing_vault, org, tmp_path)
    assert verify_files(events, checkpoints, public).returncode == 0

    text = tmp_path / "notes.txt"
    text.write_text("the audit key is in the safe\n")
    keyring = tmp_path / "keyring.json"
    keys.LocalKeyring.generate_file(keyring)
    pkcs8 = tmp_path / "private.pem"
    pkcs8.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cases = {
        text: "is text with no PEM block",
        keyring: "a keyring file",
        tmp_path / "audit-signing-key": "a private key",  # the vault's own key file
        pkcs8: "a PEM private key (-----BEGIN PRIVATE KEY-----), a private key",
    }
    for wrong, what in cases.items():
        result = await asyncio.to_thread(verify_files, events, checkpoints, wrong)
        assert result.returncode == 2, (wrong, result.stdout, result.stderr)
        assert "TAMPERED" not in result.stderr
        assert f"--public-key {wrong} " in result.stderr
        assert what in result.stderr
        if "private key" in what:
            assert "singura-vault audit public-key" in result.stderr
            assert "--key-file" in result.stderr
        else:
            assert "expected the audit signing key's public key" in result.stderr
        # The file's content (beyond a PEM header) never reaches the message.
        for line in wrong.read_text().splitlines():
            assert (
                line.startswith("-----")
                or line.strip()[:16] not in result.stderr
                or not line.strip()
            )

    other = keys.AuditSigner.generate_file(tmp_path / "other-key")
    other_public = tmp_path / "other.pem"
    other_public.write_text(other.public_key_pem)
    tampered = await asyncio.to_thread(verify_files, events, checkpoints, other_public)
    assert tampered.returncode == 1
    assert f"signed by key {signer.key_id}, not by the given public key ({other.key_id})" in (
        tampered.stderr
    )

    # `audit public-key --key-file` prints what the refusal sends the auditor to fetch.
    derived = tmp_path / "derived.pem"
    printed = await asyncio.to_thread(
        cli,
        ["audit", "public-key", "--key-file", str(tmp_path / "audit-signing-key"),
         "--output", str(derived)],
        signing_vault,
        tmp_path,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert derived.read_text() == signer.public_key_pem
    assert verify_files(events, checkpoints, derived).returncode == 0


async def test_a_database_signed_with_another_key_refuses_to_start(
    signing_vault: Vault,
    db: Database,
    service_dsn: str,
    root_key: str,
    auth_secret: bytes,
    tmp_path: Path,
) -> None:
    """A restored database whose checkpoints were signed with a key the vault does not
    have: in development no key is generated (the start is refused, naming the key id the
    checkpoints expect, where the file should be, and `audit rotate-signing-key`); with a
    configured key file of another key, `serve` exits 2 before serving."""
    await signed_org(signing_vault)
    data_dir = tmp_path / "restored-data"
    settings = load_settings({"SINGURA_DATA_DIR": str(data_dir)})
    fresh = keys.load_audit_signer(None, data_dir=data_dir, embedded=True, production=False)
    assert fresh is not None
    with pytest.raises(ConfigError) as refused:
        await check_audit_signer(db, fresh, settings)
    message = str(refused.value)
    assert "signed with key ed25519-" in message
    assert str(data_dir / "audit-signing-key") in message
    assert "singura-vault audit rotate-signing-key" in message
    assert not (data_dir / "audit-signing-key").exists()  # nothing generated silently

    other = tmp_path / "other-signing-key"
    keys.AuditSigner.generate_file(other)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env.update(
        DATABASE_URL=service_dsn,
        ENCRYPTION_KEY=root_key,
        SINGURA_AUTH_SECRET=base64.b64encode(auth_secret).decode(),
        SINGURA_AUDIT_SIGNING_KEY_FILE=str(other),
        SINGURA_LISTEN=f"127.0.0.1:{free_port()}",
        SINGURA_DATA_DIR=str(tmp_path / "serve-data"),
    )
    served = await asyncio.to_thread(
        subprocess.run,
        [*CLI, "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert served.returncode == 2, served.stderr[-2000:]
    assert "refusing to start" in served.stderr
    assert "audit rotate-signing-key" in served.stderr
    assert "vault_serving" not in served.stderr


async def test_rotate_signing_key_is_audited_and_verifies_across_the_rotation(
    signing_vault: Vault,
    signer: keys.AuditSigner,
    db: Database,
    key_manager: keys.KeyManager,
    access_service: AccessService,
    postgres: PostgresServer,
    database_name: str,
    service_dsn: str,
    tmp_path: Path,
) -> None:
    """`audit rotate-signing-key` records `audit.signing_key_rotated` with both key ids and
    signs the moved chains with the new key; a vault still holding the old key signs
    nothing and may not start; the new key's first checkpoint of a chain names the old key
    id in its signed message; the export verifies with both public keys (and names the
    change), not with either alone; the rotation cannot be repeated nor undone."""
    org, conn = await signed_org(signing_vault)
    new_key_file = tmp_path / "new-signing-key"
    new = keys.AuditSigner.generate_file(new_key_file)
    key_env = {"SINGURA_AUDIT_SIGNING_KEY_FILE": str(new_key_file)}

    rotated = await asyncio.to_thread(
        database_cli, ["audit", "rotate-signing-key"], service_dsn, tmp_path, **key_env
    )
    assert rotated.returncode == 0, rotated.stderr
    assert f"{signer.key_id} -> {new.key_id}" in rotated.stdout
    superuser = await asyncpg.connect(postgres.dsn("postgres", database_name))
    try:
        event = await superuser.fetchrow(
            "SELECT actor, resource_id, details FROM singura.audit_logs "
            "WHERE organization_id IS NULL AND action = 'audit.signing_key_rotated'"
        )
    finally:
        await superuser.close()
    assert event is not None
    assert (event["actor"], event["resource_id"]) == ("operator", new.key_id)
    assert json.loads(event["details"]) == {
        "key_id": new.key_id,
        "previous_key_id": signer.key_id,
    }

    # The vault still holding the old key signs nothing now, and would not start.
    await grow(signing_vault, org, conn, 1, "b")
    await expect_status(
        audit(signing_vault).CreateAuditCheckpoint(
            pb.CreateAuditCheckpointRequest(organization_id=org)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        f"is not the key that signs this database's checkpoints ({new.key_id}",
    )
    settings = load_settings({"SINGURA_DATA_DIR": str(tmp_path / "d")})
    with pytest.raises(ConfigError, match=f"signed with key {new.key_id}"):
        await check_audit_signer(db, signer, settings)
    await check_audit_signer(db, new, settings)

    renewed = await start_vault(
        Components(db, key_manager=key_manager, access=access_service, audit_signer=new)
    )
    try:
        first_new = await checkpoint(renewed, org)
        assert first_new.key_id == new.key_id
        await grow(renewed, org, conn, 2, "c")
        await checkpoint(renewed, org)
        events, checkpoints, new_public = await export_files(renewed, org, tmp_path / "x")
    finally:
        await stop_vault(renewed)
    chain = load(checkpoints)
    assert [c["key_id"] for c in chain] == [signer.key_id] * 2 + [new.key_id] * 2
    assert chain[2]["previous_signature"] == chain[1]["signature"]
    # The first checkpoint under the new key signs the old key's id as its seventh line.
    c = chain[2]
    args = (
        UUID(str(c["organization_id"])),
        int(str(c["sequence"])),
        bytes.fromhex(str(c["hash"])),
        micros(_timestamp(str(c["sign_time"]))),
        bytes.fromhex(str(c["previous_signature"])),
    )
    signature = bytes.fromhex(str(c["signature"]))
    public = keys.parse_public_key(new.public_key_pem.encode(), "new")
    assert public.verify(checkpoint_message(*args, signer.key_id), signature)
    assert not public.verify(checkpoint_message(*args), signature)

    old_public = tmp_path / "old.pem"
    old_public.write_text(signer.public_key_pem)
    both = await asyncio.to_thread(verify_files, events, checkpoints, old_public, new_public)
    assert both.returncode == 0, both.stderr
    assert "and 4 signed checkpoints verified" in both.stdout
    assert f"signing key changed at position {c['sequence']}: {signer.key_id} -> " in both.stdout
    only_old = await asyncio.to_thread(verify_files, events, checkpoints, old_public)
    assert only_old.returncode == 1
    assert "--public-key once per key" in only_old.stderr
    only_new = await asyncio.to_thread(verify_files, events, checkpoints, new_public)
    assert only_new.returncode == 1

    again = await asyncio.to_thread(
        database_cli, ["audit", "rotate-signing-key"], service_dsn, tmp_path, **key_env
    )
    assert again.returncode == 1
    assert "already is the key that signs" in again.stderr
    assert "keys generate-signing-key" in again.stderr
    back = await asyncio.to_thread(
        database_cli,
        ["audit", "rotate-signing-key"],
        service_dsn,
        tmp_path,
        SINGURA_AUDIT_SIGNING_KEY_FILE=str(tmp_path / "audit-signing-key"),
    )
    assert back.returncode == 1
    assert "a retired key is not brought back" in back.stderr


async def test_export_does_not_replace_a_file_unless_forced(
    signing_vault: Vault, tmp_path: Path
) -> None:
    """`audit export --output EXISTING` (or --checkpoints EXISTING) is refused with exit 2
    and leaves the file as it was, as `backup` does; --force replaces it."""
    org, _ = await signed_org(signing_vault)
    output, checkpoints = tmp_path / "events.jsonl", tmp_path / "checkpoints.jsonl"
    address = ["--address", signing_vault.address]
    for existing in (output, checkpoints):
        existing.write_text("keep me\n")
        other = checkpoints if existing is output else output
        other.unlink(missing_ok=True)
        refused = await asyncio.to_thread(
            cli,
            ["audit", "export", "--organization", org, "--output", str(output),
             "--checkpoints", str(checkpoints), *address],
            signing_vault,
            tmp_path,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert f"{existing} already exists" in refused.stderr
        assert "--force" in refused.stderr
        assert existing.read_text() == "keep me\n"
        assert not other.exists()
    forced = await asyncio.to_thread(
        cli,
        ["audit", "export", "--organization", org, "--output", str(output),
         "--checkpoints", str(checkpoints), "--force", *address],
        signing_vault,
        tmp_path,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert len(load(output)) == 6
    assert len(load(checkpoints)) == 2
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob(".*.partial")))


def test_audit_commands_describe_themselves() -> None:
    """`audit prune --help` and `audit rotate-signing-key --help` say what they do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    prune = run(["audit", "prune", "--help"], env)
    assert prune.returncode == 0
    assert "Delete the audit events older than --older-than" in prune.stdout
    rotate = run(["audit", "rotate-signing-key", "--help"], env)
    assert rotate.returncode == 0
    assert "audit.signing_key_rotated" in rotate.stdout


@pytest.fixture
def data_dirs() -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """Two embedded development vaults' environments: the original and the restored."""
    made = []
    envs = []
    for prefix in ("sv-orig-", "sv-rest-"):
        data_dir = Path(tempfile.mkdtemp(prefix=prefix))
        made.append(data_dir)
        envs.append(cli_environment(data_dir))
    yield envs[0], envs[1]
    for data_dir in made:
        EmbeddedPostgres(data_dir).stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_development_restore_without_the_signing_key_refuses_until_rotated(
    data_dirs: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    """The issue's path: back up a development vault that signed checkpoints, restore it
    into a new data dir with keyring.json and auth-secret but not audit-signing-key
    (restore warns about it), and `serve` exits 2 instead of generating a new key;
    `audit rotate-signing-key` generates one explicitly, and the vault then serves."""
    original, restored = data_dirs
    source, target = Path(original["SINGURA_DATA_DIR"]), Path(restored["SINGURA_DATA_DIR"])
    vault = Serving(original)
    try:
        admin_key = (source / "admin-api-key").read_text().strip()
        with grpc.insecure_channel(original["SINGURA_LISTEN"]) as channel:
            audit_pb2_grpc.AuditServiceStub(channel).CreateAuditCheckpoint(
                pb.CreateAuditCheckpointRequest(organization_id=""),
                metadata=(("authorization", f"Bearer {admin_key}"),),
            )
        archive = tmp_path / "vault.dump"
        made = run(["backup", "--output", str(archive)], original)
        assert made.returncode == 0, made.stderr
    finally:
        assert vault.terminate() == 0
    original_key = keys.AuditSigner.from_file(source / "audit-signing-key").key_id

    loaded = run(["restore", str(archive)], restored, timeout=180)
    assert loaded.returncode == 0, loaded.stderr
    assert "audit-signing-key" in loaded.stderr  # the restore warning names it
    for name in ("keyring.json", "auth-secret"):  # what the old step 3 said to copy
        (target / name).write_bytes((source / name).read_bytes())
        (target / name).chmod(0o600)

    refused = run(["serve"], restored, timeout=180)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"signed with key {original_key}" in refused.stderr
    assert "audit rotate-signing-key" in refused.stderr
    assert not (target / "audit-signing-key").exists()

    rotated = run(["audit", "rotate-signing-key"], restored, timeout=180)
    assert rotated.returncode == 0, rotated.stderr
    assert f"{original_key} -> ed25519-" in rotated.stdout
    assert stat.S_IMODE((target / "audit-signing-key").stat().st_mode) == 0o600
    assert Serving(restored).terminate() == 0
