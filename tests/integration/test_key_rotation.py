"""Key rotation without downtime: root keys, data keys, durable shared rewrap jobs."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.service.access import AccessService
from singura_vault.service.rewrap import RewrapWorker
from tests.support.audit import chain_pending_audit
from tests.support.canaries import canary
from tests.support.credentials import API_KEY, reveal, store
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Vault, start_vault, stop_vault


@pytest.fixture
async def file_keyring_vault(
    db: Database, access_service: AccessService, tmp_path: Path
) -> AsyncIterator[tuple[Vault, Path]]:
    """A vault whose root keys live in a keyring file it can rotate."""
    path = tmp_path / "keyring.json"
    keys.LocalKeyring.generate_file(path)
    manager = keys.KeyManager(keys.FileKeyring(path))
    vault = await start_vault(Components(db, key_manager=manager, access=access_service))
    yield vault, path
    await stop_vault(vault)


async def test_root_rotation_keeps_old_credentials_readable_and_wraps_new_ones(
    file_keyring_vault: tuple[Vault, Path],
) -> None:
    """After RotateRootKey every data key is under the new primary, old and new
    credentials read back, and the old root key can then be retired (not before)."""
    vault, path = file_keyring_vault
    org_a, conn_a = await tenant(vault)
    org_b, conn_b = await tenant(vault)
    old_a, old_b = canary("root-a"), canary("root-b")
    await store(vault, org_a, conn_a, old_a)
    await store(vault, org_b, conn_b, old_b)
    before = await vault.keys.GetKeyStatus(kpb.GetKeyStatusRequest())
    (old_root,) = [r.id for r in before.root_keys]
    await expect_status(
        vault.keys.RetireKeyVersion(kpb.RetireKeyVersionRequest(root_key_id="k9-000000000000")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    # A second process loaded the keyring before the rotation.
    other_process_keys = keys.KeyManager(keys.FileKeyring(path))

    rotated = await vault.keys.RotateRootKey(kpb.RotateRootKeyRequest())
    assert rotated.primary_root_key_id != old_root
    assert rotated.rewrapped_data_keys == 2
    assert await reveal(vault, org_a, conn_a) == old_a
    assert await reveal(vault, org_b, conn_b) == old_b
    org_c, conn_c = await tenant(vault)
    new_value = canary("root-c")
    await store(vault, org_c, conn_c, new_value)
    assert await reveal(vault, org_c, conn_c) == new_value
    status = await vault.keys.GetKeyStatus(kpb.GetKeyStatusRequest())
    counts = {r.id: (r.primary, r.data_key_count) for r in status.root_keys}
    assert counts == {old_root: (False, 0), rotated.primary_root_key_id: (True, 3)}
    assert {d.root_key_id for d in status.data_keys} == {rotated.primary_root_key_id}

    # The other process meets the new root key id, reloads the file, and reads on.
    rows = await KeyAdminRepository(vault.db).data_keys(uuid.UUID(org_a))
    reloaded = await other_process_keys.data_key(
        uuid.UUID(org_a),
        rows[0].version,
        keys.WrappedDataKey(rows[0].root_key_id, await _wrapped(vault, org_a)),
    )
    assert reloaded.version == rows[0].version

    await vault.keys.RetireKeyVersion(kpb.RetireKeyVersionRequest(root_key_id=old_root))
    status = await vault.keys.GetKeyStatus(kpb.GetKeyStatusRequest())
    assert [r.id for r in status.root_keys] == [rotated.primary_root_key_id]
    assert await reveal(vault, org_a, conn_a) == old_a


async def _wrapped(vault: Vault, org: str) -> bytes:
    async with vault.db.tenant(uuid.UUID(org)) as conn:
        blob: bytes = await conn.fetchval(
            "SELECT wrapped_key FROM singura.data_keys WHERE organization_id = $1", uuid.UUID(org)
        )
    return blob


async def test_env_root_key_rotates_with_previous_key(
    db: Database, access_service: AccessService, root_key: str
) -> None:
    """With ENCRYPTION_KEY the vault cannot mint a key: RotateRootKey explains how; after
    ENCRYPTION_KEY=new and ENCRYPTION_KEY_PREVIOUS=old it rewraps onto the new key."""
    first = keys.KeyManager(keys.LocalKeyring.from_encryption_key(root_key))
    vault = await start_vault(Components(db, key_manager=first, access=access_service))
    try:
        org, conn = await tenant(vault)
        value = canary("env-root")
        await store(vault, org, conn, value)
        await expect_status(
            vault.keys.RotateRootKey(kpb.RotateRootKeyRequest()),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ENCRYPTION_KEY_PREVIOUS",
        )
    finally:
        await stop_vault(vault)
    new_key = keys.generate_encryption_key()
    second = keys.KeyManager(keys.LocalKeyring.from_encryption_key(new_key, (root_key,)))
    vault = await start_vault(Components(db, key_manager=second, access=access_service))
    try:
        rotated = await vault.keys.RotateRootKey(kpb.RotateRootKeyRequest())
        assert rotated.rewrapped_data_keys == 1
        assert await reveal(vault, org, conn) == value
    finally:
        await stop_vault(vault)
    only_new = keys.KeyManager(keys.LocalKeyring.from_encryption_key(new_key))
    vault = await start_vault(Components(db, key_manager=only_new, access=access_service))
    try:
        assert await reveal(vault, org, conn) == value  # the old key is no longer needed
    finally:
        await stop_vault(vault)


async def bulk_credentials(
    vault: Vault, owner_dsn: str, key_manager: keys.KeyManager, org: str, conn: str, count: int
) -> None:
    """``count`` superseded API-key versions, sealed exactly as the vault seals them,
    inserted in one statement (storing them one RPC at a time would take minutes)."""
    await store(vault, org, conn, canary("bulk-first"), API_KEY)
    org_id, conn_id = uuid.UUID(org), uuid.UUID(conn)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        key_row = await owner.fetchrow(
            "SELECT version, root_key_id, wrapped_key FROM singura.data_keys"
        )
        assert key_row is not None
        data_key = await key_manager.data_key(
            org_id,
            key_row["version"],
            keys.WrappedDataKey(key_row["root_key_id"], key_row["wrapped_key"]),
        )
        records = []
        for version in range(2, count + 1):
            credential_id = uuid.uuid4()
            value = f"bulk-{version}".encode()
            binding = keys.CredentialBinding(
                org_id, conn_id, credential_id, "api_key", version, data_key.version
            )
            sealed = key_manager.seal(data_key, value, binding)
            records.append(
                (
                    org_id,
                    credential_id,
                    conn_id,
                    "api_key",
                    version,
                    "superseded",
                    sealed.ciphertext,
                    sealed.nonce,
                    data_key.version,
                    key_manager.fingerprint(data_key, value),
                )
            )
        columns = list(zip(*records, strict=True))
        # COPY is refused under row-level security; one INSERT of unnested arrays is as quick.
        await owner.execute(
            "INSERT INTO singura.encrypted_credentials (organization_id, id, connection_id, "
            "credential_type, version, state, ciphertext, nonce, key_version, fingerprint) "
            "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int[], "
            "$6::text[], $7::bytea[], $8::bytea[], $9::int[], $10::text[])",
            *[list(c) for c in columns],
        )
    finally:
        await owner.close()


async def test_rewrap_ten_thousand_while_reading_and_writing(
    vault: Vault, owner_dsn: str, key_manager: keys.KeyManager, service_dsn: str, root_key: str
) -> None:
    """Rotate a data key and rewrap 10,000 credentials with two workers (two pools, as
    two processes would) while reads and writes go on: no read fails, no write is lost,
    each credential is rewrapped exactly once and all end on the newest key."""
    org, conn = await tenant(vault)
    count = 10_000
    await bulk_credentials(vault, owner_dsn, key_manager, org, conn, count)
    rotated = await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    assert [k.version for k in rotated.data_keys] == [2]
    job = (await vault.keys.StartRewrap(kpb.StartRewrapRequest())).job
    assert job.total == count
    again = (await vault.keys.StartRewrap(kpb.StartRewrapRequest())).job
    assert again.id == job.id  # one running job, shared

    pools = [
        await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=2)) for _ in range(2)
    ]
    workers = [
        RewrapWorker(
            KeyAdminRepository(pool),
            keys.KeyManager(keys.LocalKeyring.from_encryption_key(root_key)),
            batch_size=150,
        )
        for pool in pools
    ]
    stop = asyncio.Event()
    reads = writes = 0
    written: list[str] = []

    async def traffic() -> None:
        nonlocal reads, writes
        while not stop.is_set():
            version = random.randint(2, count)  # noqa: S311 - picks a row, not a secret
            assert await reveal(vault, org, conn, version, API_KEY) == f"bulk-{version}"
            value = canary("during-rewrap")
            await store(vault, org, conn, value)
            written.append(value)
            assert await reveal(vault, org, conn) == value
            reads += 2
            writes += 1

    traffic_task = asyncio.create_task(traffic())
    try:
        results = await asyncio.gather(*(w.work_once() for w in workers))
    finally:
        stop.set()
        await traffic_task
        for pool in pools:
            await pool.close()
    assert any(results)
    assert reads > 0
    assert writes > 0
    final = (await vault.keys.GetRewrapJob(kpb.GetRewrapJobRequest(job_id=job.id))).job
    assert final.state == kpb.REWRAP_JOB_STATE_COMPLETED
    assert final.done == count  # every credential counted once: none skipped, none twice
    status = await vault.keys.GetKeyStatus(kpb.GetKeyStatusRequest(organization_id=org))
    per_version = {d.version: d.credential_count for d in status.data_keys}
    assert per_version[1] == 0
    assert per_version[2] == count + len(written)
    assert await reveal(vault, org, conn, count, API_KEY) == f"bulk-{count}"
    await vault.keys.RetireKeyVersion(
        kpb.RetireKeyVersionRequest(data_key=kpb.DataKeyRef(organization_id=org, version=1))
    )


async def test_retiring_a_data_key_in_use_is_refused(vault: Vault) -> None:
    """RetireKeyVersion names how many credentials still need the version."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("in-use"))
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    await expect_status(
        vault.keys.RetireKeyVersion(
            kpb.RetireKeyVersionRequest(data_key=kpb.DataKeyRef(organization_id=org, version=1))
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "still encrypts 1 credentials",
    )
    assert await reveal(vault, org, conn)


async def test_killed_rewrap_process_resumes_without_skipping_or_repeating(
    vault: Vault,
    owner_dsn: str,
    key_manager: keys.KeyManager,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> None:
    """SIGKILL the vault process that works a rewrap job mid-way; another worker
    finishes it, and the job counts every credential exactly once."""
    org, conn = await tenant(vault)
    count = 3_000
    await bulk_credentials(vault, owner_dsn, key_manager, org, conn, count)
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    job = (await vault.keys.StartRewrap(kpb.StartRewrapRequest())).job
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env.update(
        DATABASE_URL=service_dsn,
        ENCRYPTION_KEY=root_key,
        SINGURA_AUTH_SECRET=base64.b64encode(auth_secret).decode(),
        SINGURA_LISTEN=f"127.0.0.1:{port}",
        SINGURA_REWRAP_BATCH_SIZE="10",
        SINGURA_LOG_LEVEL="warning",
    )
    process = subprocess.Popen(  # noqa: ASYNC220 - it runs alongside; we only poll the job
        [sys.executable, "-m", "singura_vault", "serve"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            progress = (await vault.keys.GetRewrapJob(kpb.GetRewrapJobRequest(job_id=job.id))).job
            if progress.done >= 200 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)  # polling a job's progress, not synchronising on time
        process.send_signal(signal.SIGKILL)
    finally:
        await asyncio.to_thread(process.wait, 30)
    killed_at = (await vault.keys.GetRewrapJob(kpb.GetRewrapJobRequest(job_id=job.id))).job
    assert 200 <= killed_at.done < count, "the job must be caught mid-way"
    assert killed_at.state == kpb.REWRAP_JOB_STATE_RUNNING
    pool = await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=2))
    try:
        worker = RewrapWorker(
            KeyAdminRepository(pool),
            keys.KeyManager(keys.LocalKeyring.from_encryption_key(root_key)),
        )
        assert await worker.work_once()
    finally:
        await pool.close()
    final = (await vault.keys.GetRewrapJob(kpb.GetRewrapJobRequest(job_id=job.id))).job
    assert final.state == kpb.REWRAP_JOB_STATE_COMPLETED
    assert final.done == count
    owner = await asyncpg.connect(owner_dsn)
    try:
        await chain_pending_audit(owner)
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        rewrapped_events = await owner.fetchval(
            "SELECT count(*) FROM singura.audit_logs WHERE action = 'credential.rewrapped'"
        )
        stale = await owner.fetchval(
            "SELECT count(*) FROM singura.encrypted_credentials WHERE key_version < 2"
        )
    finally:
        await owner.close()
    assert stale == 0
    assert rewrapped_events == count  # each credential re-encrypted exactly once


async def test_a_tampered_credential_is_skipped_not_retried_forever(
    vault: Vault, owner_dsn: str, key_manager: keys.KeyManager, service_dsn: str, root_key: str
) -> None:
    """A credential whose ciphertext fails its check is recorded as failed and skipped;
    the job completes with everything else rewrapped."""
    org, conn = await tenant(vault)
    await bulk_credentials(vault, owner_dsn, key_manager, org, conn, 50)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        await owner.execute(
            "UPDATE singura.encrypted_credentials "
            "SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1) "
            "WHERE credential_type = 'api_key' AND version = 7"
        )
    finally:
        await owner.close()
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    job = (await vault.keys.StartRewrap(kpb.StartRewrapRequest())).job
    pool = await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=2))
    try:
        worker = RewrapWorker(
            KeyAdminRepository(pool),
            keys.KeyManager(keys.LocalKeyring.from_encryption_key(root_key)),
            batch_size=20,
        )
        assert await worker.work_once()
    finally:
        await pool.close()
    final = (await vault.keys.GetRewrapJob(kpb.GetRewrapJobRequest(job_id=job.id))).job
    assert final.state == kpb.REWRAP_JOB_STATE_COMPLETED
    assert (final.done, final.failed, final.total) == (49, 1, 50)
    await expect_status(reveal(vault, org, conn, 7, API_KEY), grpc.StatusCode.DATA_LOSS)
    assert await reveal(vault, org, conn, 8, API_KEY) == "bulk-8"
