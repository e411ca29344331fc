"""Key rotation under concurrency: a row always records the data key that sealed it.

Rotations, rewraps, stores and retirements running at once must never leave a
credential that no key opens; rows already hit by the rewrap race of earlier
releases are found and corrected by RepairCredentialKeys.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
import grpc

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.service.access import AccessService
from singura_vault.service.rewrap import RewrapWorker
from tests.support.api_keys import make_key
from tests.support.audit import chain_pending_audit
from tests.support.auth import bearer
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, API_KEY, reveal, store
from tests.support.postgres import PostgresServer
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault, start_vault, stop_vault

Hook = Callable[[], Awaitable[None]]


class PlanThenRotate(KeyAdminRepository):
    """A repository that lets ``hook`` run right after the worker planned its job,
    as a RotateDataKey call arriving at that moment would."""

    def __init__(self, db: Database, hook: Hook) -> None:
        super().__init__(db)
        self._hook: Hook | None = hook

    async def organizations_to_rewrap(self) -> list[tuple[UUID, int]]:
        plan = await super().organizations_to_rewrap()
        hook, self._hook = self._hook, None
        if hook is not None:
            await hook()
        return plan


class UnwrapHook(keys.KeyManager):
    """A key manager that runs ``hook`` once, armed, when a data key is next unwrapped:
    between a store reading the current data key and its row committing."""

    hook: Hook | None = None

    async def data_key(
        self, organization_id: UUID, version: int, wrapped: keys.WrappedDataKey
    ) -> keys.DataKey:
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()
        return await super().data_key(organization_id, version, wrapped)


async def rotate(stubs: Stubs, org: str) -> int:
    created = await stubs.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    return created.data_keys[0].version


async def retire(stubs: Stubs, org: str, version: int) -> grpc.StatusCode:
    try:
        await stubs.keys.RetireKeyVersion(
            kpb.RetireKeyVersionRequest(
                data_key=kpb.DataKeyRef(organization_id=org, version=version)
            )
        )
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
    else:
        return grpc.StatusCode.OK
    # Still in use, or already retired: both are answers, anything else is a failure.
    assert code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND), code
    return code


async def job_of(vault: Vault, job_id: str) -> kpb.RewrapJob:
    return (await vault.keys.GetRewrapJob(kpb.GetRewrapJobRequest(job_id=job_id))).job


async def test_rotation_after_the_rewrap_plan_records_the_key_that_sealed(
    vault: Vault, db: Database, key_manager: keys.KeyManager
) -> None:
    """RotateDataKey committing after the worker learned the newest version: every
    credential still reveals (its row names the key the batch sealed under), and
    the job's done never exceeds its total."""
    org, conn = await tenant(vault)
    values = [canary(f"plan-{i}") for i in range(6)]
    for value in values:
        await store(vault, org, conn, value)
    await rotate(vault, org)
    job = (await vault.keys.StartRewrap(kpb.StartRewrapRequest())).job
    assert job.total == 6
    rotated_to: list[int] = []

    async def rotate_now() -> None:
        rotated_to.append(await rotate(vault, org))

    worker = RewrapWorker(PlanThenRotate(db, rotate_now), key_manager)
    assert await worker.work_once()
    assert rotated_to == [3]
    for version, value in enumerate(values, 1):
        assert await reveal(vault, org, conn, version) == value
    final = await job_of(vault, job.id)
    assert (final.done, final.total, final.failed) == (6, 6, 0)
    status = await vault.keys.GetKeyStatus(kpb.GetKeyStatusRequest(organization_id=org))
    assert {d.version: d.credential_count for d in status.data_keys} == {1: 0, 2: 0, 3: 6}


async def test_retiring_the_key_a_store_is_sealing_under_makes_it_seal_again(
    db: Database, access_service: AccessService, root_key: str
) -> None:
    """A retirement that commits between a store reading the current data key and the
    store's commit: the database refuses the row, and the store seals again under the
    current key -- the value reveals, nothing names a destroyed key."""
    manager = UnwrapHook(keys.LocalKeyring.from_encryption_key(root_key))
    vault = await start_vault(Components(db, key_manager=manager, access=access_service))
    try:
        org, conn = await tenant(vault)
        first = await store(vault, org, conn, canary("revoked-first"))
        await vault.credentials.RevokeCredential(
            crpb.RevokeCredentialRequest(organization_id=org, credential_id=first.id)
        )
        outcomes: list[grpc.StatusCode] = []

        async def rotate_and_retire() -> None:
            await rotate(vault, org)
            outcomes.append(await retire(vault, org, 1))

        manager.hook = rotate_and_retire
        value = canary("sealed-while-retired")
        stored = await store(vault, org, conn, value)
        assert outcomes == [grpc.StatusCode.OK]
        assert stored.key_version == 2
        assert await reveal(vault, org, conn) == value
    finally:
        await stop_vault(vault)


async def test_a_retirement_waits_for_a_store_in_flight_and_then_refuses(
    vault: Vault, postgres: PostgresServer, service_dsn: str, key_manager: keys.KeyManager
) -> None:
    """A credential row written but not yet committed under a data key version makes
    RetireKeyVersion wait for the commit, then refuse with the count."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("to-move"))
    await rotate(vault, org)
    job = (await vault.keys.StartRewrap(kpb.StartRewrapRequest())).job
    pool = await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=2))
    try:
        assert await RewrapWorker(KeyAdminRepository(pool), key_manager).work_once()
    finally:
        await pool.close()
    assert (await job_of(vault, job.id)).state == kpb.REWRAP_JOB_STATE_COMPLETED

    writer = await asyncpg.connect(service_dsn)
    watcher = await asyncpg.connect(postgres.superuser_dsn)  # sees every backend's waits
    try:
        tx = writer.transaction()
        await tx.start()
        await writer.execute("SELECT set_config('singura.organization_id', $1, true)", org)
        # Stands for a store between its INSERT and its COMMIT: a sealed row under v1.
        await writer.execute(
            "INSERT INTO singura.encrypted_credentials (organization_id, id, connection_id, "
            "credential_type, version, state, ciphertext, nonce, key_version) "
            "VALUES ($1, $2, $3, 'api_key', 1, 'superseded', $4, $5, 1)",
            UUID(org),
            uuid.uuid4(),
            UUID(conn),
            bytes(32),
            bytes(12),
        )
        writer_pid = writer.get_server_pid()
        retiring = asyncio.create_task(retire(vault, org, 1))
        while True:  # until the retirement's backend is seen waiting on the writer's lock
            waiting = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE $1 = ANY (pg_blocking_pids(pid)) AND wait_event_type = 'Lock'",
                writer_pid,
            )
            if waiting or retiring.done():
                break
            await asyncio.sleep(0.01)  # polling a condition that pg_stat_activity shows
        assert not retiring.done(), "the retirement must wait for the writer"
        await tx.commit()
        assert await retiring == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await writer.close()
        await watcher.close()


async def test_rotations_rewraps_stores_and_retirements_in_two_processes_lose_nothing(
    vault: Vault, second_process: str, service_dsn: str, root_key: str
) -> None:
    """Stores on two vault processes, rotations and retirements through both, and
    rewrap workers in two more pools, all at once for 10 rounds: afterwards every
    version of every credential reveals its exact value, and no job counted more
    than its total."""
    channel = grpc.aio.insecure_channel(second_process, interceptors=bearer(vault.admin_key))
    try:
        await _mixed_load(vault, [vault, Stubs.on(channel)], service_dsn, root_key)
    finally:
        await channel.close()


async def _mixed_load(vault: Vault, sides: list[Stubs], service_dsn: str, root_key: str) -> None:  # noqa: C901 - one step per kind of concurrent work
    tenants = [await tenant(vault) for _ in range(2)]
    expected: dict[tuple[str, str, int, int], str] = {}
    pools = [
        await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=3)) for _ in range(2)
    ]
    workers = [
        RewrapWorker(
            KeyAdminRepository(pool),
            keys.KeyManager(keys.LocalKeyring.from_encryption_key(root_key)),
            batch_size=7,
        )
        for pool in pools
    ]
    job_ids: set[str] = set()

    async def stores(round_: int, side: Stubs) -> None:
        for org, conn in tenants:
            for type_ in (ACCESS, API_KEY):
                value = canary(f"mix-{round_}")
                credential = await store(side, org, conn, value, type_)
                expected[(org, conn, type_, credential.version)] = value

    async def key_admin(round_: int) -> None:
        stubs = sides[round_ % 2]
        for org, _ in tenants:
            newest = await rotate(stubs, org)
            job_ids.add((await stubs.keys.StartRewrap(kpb.StartRewrapRequest())).job.id)
            for version in range(max(1, newest - 3), newest):
                await retire(stubs, org, version)

    try:
        for round_ in range(10):
            await asyncio.gather(
                *(stores(round_, side) for side in sides),
                key_admin(round_),
                *(worker.work_once() for worker in workers),
            )
        # Drain: one more job, worked to completion.
        job = (await vault.keys.StartRewrap(kpb.StartRewrapRequest())).job
        job_ids.add(job.id)
        while (await job_of(vault, job.id)).state == kpb.REWRAP_JOB_STATE_RUNNING:
            await workers[0].work_once()
    finally:
        for pool in pools:
            await pool.close()

    assert len(expected) == 10 * 2 * 2 * 2
    lost = []
    for (org, conn, type_, version), value in sorted(expected.items()):
        try:
            revealed = await reveal(sides[version % 2], org, conn, version, type_)
        except grpc.aio.AioRpcError as exc:
            lost.append((version, exc.code().name))
            continue
        assert revealed == value
    assert lost == []
    for job_id in job_ids:
        final = await job_of(vault, job_id)
        assert final.done + final.failed <= final.total, final
        assert final.failed == 0
    for org, _ in tenants:
        status = await vault.keys.GetKeyStatus(kpb.GetKeyStatusRequest(organization_id=org))
        live = [d for d in status.data_keys if d.state == "ACTIVE"]
        newest = max(d.version for d in live)
        assert all(d.credential_count == 0 for d in live if d.version != newest)


async def test_repair_corrects_rows_that_name_the_wrong_key_and_reports_the_rest(
    vault: Vault, db: Database, key_manager: keys.KeyManager, owner_dsn: str, tmp_path: Path
) -> None:
    """A database hit by the old rewrap race (rows sealed under v2 but recording v1):
    reveal says the value is intact and names the repair; `keys repair` corrects
    exactly those rows (audited), reports a tampered one, and every other reveals."""
    org, conn = await tenant(vault)
    values = [canary(f"repair-{i}") for i in range(5)]
    for value in values:
        await store(vault, org, conn, value)
    await rotate(vault, org)
    await vault.keys.StartRewrap(kpb.StartRewrapRequest())
    assert await RewrapWorker(KeyAdminRepository(db), key_manager).work_once()
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        # What the race left behind: the ciphertext under v2, the record saying v1.
        await owner.execute(
            "UPDATE singura.encrypted_credentials SET key_version = 1 WHERE version IN (1, 2, 3)"
        )
        await owner.execute(
            "UPDATE singura.encrypted_credentials "
            "SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1) "
            "WHERE version = 5"
        )
    finally:
        await owner.close()
    details = await expect_status(
        reveal(vault, org, conn, 2), grpc.StatusCode.DATA_LOSS, "intact", "keys repair"
    )
    assert values[1] not in details
    await expect_status(
        reveal(vault, org, conn, 5), grpc.StatusCode.DATA_LOSS, "under every live data key"
    )
    writer = vault.as_key(await make_key(vault, org, (apb.API_KEY_ROLE_WRITER,)))
    await expect_status(
        writer.keys.RepairCredentialKeys(kpb.RepairCredentialKeysRequest(organization_id=org)),
        grpc.StatusCode.PERMISSION_DENIED,
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env.update(SINGURA_API_KEY=vault.admin_key, SINGURA_DATA_DIR=str(tmp_path))
    command = [sys.executable, "-m", "singura_vault", "keys", "repair", "--address", vault.address]
    repaired = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert repaired.returncode == 1, repaired.stderr  # one credential cannot be recovered
    assert f"{org}: 5 checked, 3 repaired, 1 unrecoverable" in repaired.stdout
    assert repaired.stdout.count("recorded v1, sealed under v2") == 3
    assert all(value not in repaired.stdout + repaired.stderr for value in values)
    for version in (1, 2, 3, 4):
        assert await reveal(vault, org, conn, version) == values[version - 1]
    again = await vault.keys.RepairCredentialKeys(
        kpb.RepairCredentialKeysRequest(organization_id=org)
    )
    assert again.checked == 5
    assert (len(again.repaired), len(again.unrecoverable_credential_ids)) == (0, 1)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        await chain_pending_audit(owner)
        events = await owner.fetch(
            "SELECT actor, details FROM singura.audit_logs "
            "WHERE action = 'credential.key_version_repaired' AND actor <> 'system'"
        )
    finally:
        await owner.close()
    assert len(events) == 3
    moves = {
        (d["old_key_version"], d["key_version"])
        for d in map(json.loads, (e["details"] for e in events))
    }
    assert moves == {(1, 2)}


WAITING_WRITERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
    "AND wait_event_type = 'Lock' AND application_name = 'singura-vault'"
)


async def test_a_connection_lost_mid_store_is_unavailable_and_writes_nothing(
    db: Database,
    access_service: AccessService,
    root_key: str,
    postgres: PostgresServer,
    database_name: str,
) -> None:
    """The database backend of a store dies while its writing statement runs: the call is
    UNAVAILABLE (not INTERNAL), nothing is written, and a retry with the same request_id
    stores the value once. (The write is made to wait on a lock held by another session,
    so that its backend can be found and killed mid-statement.)"""
    manager = UnwrapHook(keys.LocalKeyring.from_encryption_key(root_key))
    vault = await start_vault(Components(db, key_manager=manager, access=access_service))
    killer = await asyncpg.connect(postgres.superuser_dsn)
    superuser = urlsplit(postgres.superuser_dsn).username or "postgres"
    blocker = await asyncpg.connect(postgres.dsn(superuser, database_name))
    kills: list[asyncio.Task[None]] = []
    try:
        org, conn = await tenant(vault)
        await store(vault, org, conn, canary("first"))  # creates the data key

        async def kill_the_waiting_writer() -> None:
            # Poll (as tests/support/polling.until does) until the write waits on the lock.
            for _ in range(3000):
                if await killer.fetchval(WAITING_WRITERS, database_name):
                    break
                await asyncio.sleep(0.01)
            killed = await killer.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 10000) FROM "
                "pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' "
                "AND application_name = 'singura-vault') t",
                database_name,
            )
            assert killed == 1
            await blocker.execute("ROLLBACK")

        async def hold_the_connection_row() -> None:
            await blocker.execute("BEGIN")
            await blocker.execute(
                "SELECT 1 FROM singura.platform_connections WHERE id = $1 FOR UPDATE",
                uuid.UUID(conn),
            )
            kills.append(asyncio.create_task(kill_the_waiting_writer()))

        manager.hook = hold_the_connection_row
        request = crpb.StoreCredentialRequest(
            organization_id=org,
            connection_id=conn,
            type=ACCESS,
            value=canary("lost"),
            request_id=str(uuid.uuid4()),
        )
        await expect_status(
            vault.credentials.StoreCredential(request), grpc.StatusCode.UNAVAILABLE, "retry"
        )
        versions = await vault.credentials.ListCredentialVersions(
            crpb.ListCredentialVersionsRequest(organization_id=org, connection_id=conn, type=ACCESS)
        )
        assert [c.version for c in versions.credentials] == [1]
        retried = (await vault.credentials.StoreCredential(request)).credential
        assert retried.version == 2
        assert await reveal(vault, org, conn) == request.value
        await asyncio.gather(*kills)
    finally:
        await blocker.close()
        await killer.close()
        await stop_vault(vault)
