"""Benchmark: rewrap throughput -- re-encrypting N credentials onto a new data key.

Loads N credential versions for one organization (sealed exactly as the vault
seals them, inserted 1,000 per transaction), rotates the organization's data key,
starts a rewrap job and lets W workers (each with its own pool, as W vault
processes would) drain it. Reports credentials/s, the job's count (which must
equal N: nothing skipped, nothing twice) and CPU use.

    python bench/rewrap.py                          # N=100000, workers 1 and 2
    python bench/rewrap.py --credentials 20000 --workers 1,2,4 --batch-size 500
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import _harness as h
import asyncpg

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.config import PoolSettings
from singura_vault.context import Principal, RequestContext, bind_request
from singura_vault.db.pool import Database
from singura_vault.db.setup import apply_migrations, bootstrap_embedded_roles
from singura_vault.domain.connections import ConnectionStatus, NewConnection, Platform
from singura_vault.domain.credentials import CredentialType
from singura_vault.domain.organizations import NewOrganization, Plan
from singura_vault.repositories.connections import ConnectionRepository
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.repositories.organizations import OrganizationRepository
from singura_vault.service.rewrap import RewrapWorker

CHUNK = 1000


async def load(
    pg: h.Postgres, db: Database, manager: keys.KeyManager, count: int
) -> tuple[uuid.UUID, float]:
    """One organization, one connection, ``count`` sealed credential versions."""
    suffix = uuid.uuid4().hex[:8]
    org, _ = await OrganizationRepository(db).create(
        NewOrganization("Bench", f"bench-{suffix}", f"bench-{suffix}.example", Plan.ENTERPRISE),
        None,
    )
    conn = await ConnectionRepository(db).create(
        NewConnection(org.id, Platform.SLACK, "U1", "T1", "Bench Slack"), None
    )
    assert conn.status is ConnectionStatus.ACTIVE
    service = Components(db, key_manager=manager).credentials
    await service.store(str(org.id), str(conn.id), CredentialType.API_KEY, "first", None, "")
    started = time.perf_counter()
    owner = await asyncpg.connect(pg.owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", str(org.id))
        row = await owner.fetchrow(
            "SELECT version, root_key_id, wrapped_key FROM singura.data_keys"
        )
        assert row is not None
        data_key = await manager.data_key(
            org.id, row["version"], keys.WrappedDataKey(row["root_key_id"], row["wrapped_key"])
        )
        for first in range(2, count + 1, CHUNK):
            columns: list[list[object]] = [[] for _ in range(10)]
            for version in range(first, min(first + CHUNK, count + 1)):
                credential_id = uuid.uuid4()
                value = f"bench-{version}".encode()
                binding = keys.CredentialBinding(
                    org.id, conn.id, credential_id, "api_key", version, data_key.version
                )
                sealed = manager.seal(data_key, value, binding)
                for column, item in zip(
                    columns,
                    (
                        org.id,
                        credential_id,
                        conn.id,
                        "api_key",
                        version,
                        "superseded",
                        sealed.ciphertext,
                        sealed.nonce,
                        data_key.version,
                        manager.fingerprint(data_key, value),
                    ),
                    strict=True,
                ):
                    column.append(item)
            await owner.execute(
                "INSERT INTO singura.encrypted_credentials (organization_id, id, connection_id, "
                "credential_type, version, state, ciphertext, nonce, key_version, fingerprint) "
                "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int[], "
                "$6::text[], $7::bytea[], $8::bytea[], $9::int[], $10::text[])",
                *columns,
            )
    finally:
        await owner.close()
    return org.id, time.perf_counter() - started


async def bench(args: argparse.Namespace) -> None:
    rows = []
    with h.embedded_postgres() as pg:
        await bootstrap_embedded_roles(pg.superuser_dsn)
        await apply_migrations(pg.owner_dsn)
        version = await h.postgres_version(pg)
        bind_request(RequestContext("bench", "bench", Principal("bench", None)))
        for workers in args.workers:
            db = await Database.connect(pg.service_dsn, PoolSettings(min_size=1, max_size=4))
            manager = keys.KeyManager(
                keys.LocalKeyring.from_encryption_key(keys.generate_encryption_key())
            )
            try:
                org, load_s = await load(pg, db, manager, args.credentials)
                admin = Components(db, key_manager=manager).key_admin
                await admin.rotate_data_key(str(org))
                job = await admin.start_rewrap()
                pools = [
                    await Database.connect(pg.service_dsn, PoolSettings(min_size=1, max_size=2))
                    for _ in range(workers)
                ]
                cpu0, pg0 = h.cpu_seconds(), h.process_tree_cpu_seconds(pg.postmaster_pid())
                started = time.perf_counter()
                await asyncio.gather(
                    *(
                        RewrapWorker(
                            KeyAdminRepository(p), manager, batch_size=args.batch_size
                        ).work_once()
                        for p in pools
                    )
                )
                elapsed = time.perf_counter() - started
                cpu = h.cpu_seconds() - cpu0
                pg_cpu = h.process_tree_cpu_seconds(pg.postmaster_pid()) - pg0
                for p in pools:
                    await p.close()
                final = await admin.job(str(job.id))
                assert final.state == "completed", final
                assert final.done == args.credentials, (final.done, args.credentials)
                rows.append(
                    (
                        f"{args.credentials:,}",
                        workers,
                        args.batch_size,
                        f"{load_s:.1f}",
                        f"{elapsed:.1f}",
                        f"{args.credentials / elapsed:,.0f}",
                        f"{final.done:,}",
                        f"{cpu:.1f}",
                        f"{pg_cpu:.1f}",
                    )
                )
            finally:
                await db.close()
    print(h.machine_summary(version))
    print(
        "load: sealed credential versions, 1,000 per INSERT; workers: one pool each (as processes)"
    )
    print()
    print(
        h.table(
            [
                "credentials",
                "workers",
                "batch",
                "load s",
                "rewrap s",
                "credentials/s",
                "job done",
                "worker CPU s",
                "PG CPU s",
            ],
            rows,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", type=int, default=100_000)
    parser.add_argument(
        "--workers",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 2],
        help="comma-separated worker counts, one run each (default 1,2)",
    )
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args()
    h.quiet_server_logs("/dev/null")
    h.run(bench(args))


if __name__ == "__main__":
    main()
