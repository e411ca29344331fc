"""Benchmark: RevealCredential and StoreCredential direct vs through PgBouncer (transaction
pooling mode), at the same load, with the connections PostgreSQL holds in each case.

Setup: a throwaway embedded PostgreSQL, Debian's ``pgbouncer`` in front of it
(tests/support/pgbouncer.py starts it: transaction mode, ``default_pool_size`` =
``--server-pool``), the service role's session settings made its defaults (as
docs/operations.md#behind-pgbouncer says). For each mode the vault is served in this
process on 127.0.0.1:<random port> with a pool of ``--pool-size`` (DB_POOL_MAX):
``direct`` connects to PostgreSQL; ``pgbouncer`` connects through PgBouncer with
DATABASE_POOLER=pgbouncer-transaction (no statement cache) and LISTENs directly.

Load: one client process keeps ``--concurrency`` calls in flight over ``--organizations``
organizations (a key, a connection and a stored access token each; a store writes a
new version of one of them). During the measured window the backends of the service
role in ``pg_stat_activity`` are counted every 100 ms (the LISTEN connection included).

    python bench/pgbouncer.py
    python bench/pgbouncer.py --duration 10 --concurrency 64 --server-pool 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import _harness as h
import asyncpg
import grpc

# The PgBouncer runner is the tests' (one way to start it); the repository root holds it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.db.setup import (
    DATABASE_NAME,
    SERVICE_ROLE,
    apply_migrations,
    bootstrap_embedded_roles,
)
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import access_pb2_grpc as agrpc
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc
from singura_vault.server import VaultServer
from tests.support.pgbouncer import pooled_role_defaults, running_pgbouncer

RPCS = {"reveal": "RevealCredential", "store": "StoreCredential"}
CALL_TIMEOUT_S = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Reveal and store throughput direct vs through PgBouncer (transaction "
        "mode), and PostgreSQL's connection count for each (starts its own servers).",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (64)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds (1)")
    parser.add_argument("--organizations", type=int, default=8, help="organizations (8)")
    parser.add_argument("--pool-size", type=int, default=20, help="DB_POOL_MAX (20)")
    parser.add_argument(
        "--server-pool", type=int, default=5, help="PgBouncer's default_pool_size (5)"
    )
    parser.add_argument("--server-log", default=os.devnull, help="the vault's log lines")
    return parser


# -- client process ----------------------------------------------------------------------


async def _client(config: dict[str, Any]) -> None:
    async with grpc.aio.insecure_channel(config["address"]) as channel:
        await channel.channel_ready()
        credentials = crgrpc.CredentialServiceStub(channel)
        targets = config["targets"]

        async def call(index: int, n: int) -> tuple[int, str]:
            target = targets[(index + n) % len(targets)]
            metadata = h.auth(target["key"])
            if config["rpc"] == "reveal":
                await credentials.RevealCredential(
                    crpb.RevealCredentialRequest(
                        organization_id=target["organization_id"],
                        connection_id=target["connection_id"],
                        type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                )
            else:
                await credentials.StoreCredential(
                    crpb.StoreCredentialRequest(
                        organization_id=target["organization_id"],
                        connection_id=target["connection_id"],
                        type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                        value="xoxb-" + secrets.token_urlsafe(48),
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                )
            return 1, "OK"

        window = await h.drive(call, config["concurrency"], config["warmup"], config["duration"])
        latencies = window.latencies
        h.emit(
            {
                "event": "result",
                "ok": len(latencies),
                "errors": dict(window.errors),
                "p50_ms": h.percentile(latencies, 0.5) * 1000,
                "p99_ms": h.percentile(latencies, 0.99) * 1000,
            }
        )


# -- driver ------------------------------------------------------------------------------


@asynccontextmanager
async def _vault(dsn: str, pool: PoolSettings, listen_dsn: str) -> AsyncIterator[h.Vault]:
    """As _harness.running_vault, with the pool on ``dsn`` and LISTEN on ``listen_dsn``."""
    db = await Database.connect(dsn, pool, listen_dsn=listen_dsn)
    try:
        key_manager = keys.KeyManager(
            keys.LocalKeyring.from_encryption_key(keys.generate_encryption_key())
        )
        access = build_access(db, os.urandom(32))
        admin_key = h.new_key_text()
        await access.bootstrap_admin_key(Path("/nonexistent"), admin_key)
        server = VaultServer(Components(db, key_manager=key_manager, access=access))
        port = await server.start("127.0.0.1:0")
        try:
            yield h.Vault(f"127.0.0.1:{port}", admin_key, db, server)
        finally:
            await server.stop(0)
    finally:
        await db.close()


async def _setup(vault: h.Vault, organizations: int) -> list[dict[str, str]]:
    admin = h.auth(vault.admin_key)
    targets = []
    async with grpc.aio.insecure_channel(vault.address) as channel:
        credentials = crgrpc.CredentialServiceStub(channel)
        access = agrpc.AccessServiceStub(channel)
        for _ in range(organizations):
            suffix = uuid.uuid4().hex[:10]
            org = await h.create_organization(channel, admin, suffix)
            connection = await h.create_connection(
                channel, admin, org.id, f"U{suffix}", permissions=["channels:read"]
            )
            await credentials.StoreCredential(
                crpb.StoreCredentialRequest(
                    organization_id=org.id,
                    connection_id=connection.id,
                    type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                    value="xoxb-" + secrets.token_urlsafe(48),
                ),
                metadata=admin,
            )
            key = await access.CreateApiKey(
                apb.CreateApiKeyRequest(
                    organization_id=org.id,
                    roles=[
                        apb.API_KEY_ROLE_READER,
                        apb.API_KEY_ROLE_REVEALER,
                        apb.API_KEY_ROLE_WRITER,
                    ],
                    name="bench",
                ),
                metadata=admin,
            )
            targets.append(
                {"organization_id": org.id, "connection_id": connection.id, "key": key.secret}
            )
    return targets


async def _count_backends(superuser_dsn: str, stop: asyncio.Event) -> list[int]:
    """The service role's backends on PostgreSQL, every 100 ms until ``stop``."""
    conn = await asyncpg.connect(superuser_dsn)
    counts = []
    try:
        while not stop.is_set():
            counts.append(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", SERVICE_ROLE
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        await conn.close()
    return counts


async def _measure(
    pg: h.Postgres, vault: h.Vault, rpc: str, targets: list[dict[str, str]], args: Any
) -> dict[str, Any]:
    config = {
        "address": vault.address,
        "rpc": rpc,
        "targets": targets,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "duration": args.duration,
    }
    async with h.ClientProcess.running(__file__, config) as client:
        await client.expect("window_start")
        stop = asyncio.Event()
        counting = asyncio.create_task(_count_backends(pg.superuser_dsn, stop))
        await client.expect("window_end")
        stop.set()
        counts = await counting
        result = await client.expect("result")
    return {**result, "rps": result["ok"] / args.duration, "backends": counts}


async def _main(args: argparse.Namespace, pg: h.Postgres) -> None:
    pg_version = await h.postgres_version(pg)
    await bootstrap_embedded_roles(pg.superuser_dsn)
    await apply_migrations(pg.owner_dsn)
    direct_pool = PoolSettings(max_size=args.pool_size, min_size=2)
    pooled_pool = PoolSettings(max_size=args.pool_size, min_size=2, pooler="pgbouncer-transaction")
    await pooled_role_defaults(pg.superuser_dsn, SERVICE_ROLE, DATABASE_NAME, direct_pool)
    rows = []
    with running_pgbouncer(
        pg.superuser_dsn, [SERVICE_ROLE], default_pool_size=args.server_pool
    ) as bouncer:
        modes = [
            ("direct", pg.service_dsn, direct_pool),
            (
                f"PgBouncer (transaction, pool {args.server_pool})",
                bouncer.dsn(SERVICE_ROLE, DATABASE_NAME),
                pooled_pool,
            ),
        ]
        for rpc in RPCS:
            for mode, dsn, pool in modes:
                async with _vault(dsn, pool, pg.service_dsn) as vault:
                    targets = await _setup(vault, args.organizations)
                    print(f"{RPCS[rpc]}, {mode} ...", file=sys.stderr, flush=True)
                    result = await _measure(pg, vault, rpc, targets, args)
                errors: Counter[str] = Counter(result["errors"])
                counts = result["backends"] or [0]
                rows.append(
                    [
                        RPCS[rpc],
                        mode,
                        result["ok"],
                        result["rps"],
                        result["p50_ms"],
                        result["p99_ms"],
                        ", ".join(f"{c} {n}" for c, n in sorted(errors.items())) or "0",
                        max(counts),
                        sum(counts) / len(counts),
                    ]
                )
    print()
    print(h.machine_summary(pg_version))
    print(
        f"load: {args.concurrency} calls in flight from 1 client process over "
        f"{args.organizations} organizations, {args.warmup:g} s warm-up + {args.duration:g} s "
        f"measured; DB_POOL_MAX {args.pool_size}; PgBouncer {args.server_pool} server "
        "connections; rate limit off; PG backends = the service role's in pg_stat_activity "
        "(LISTEN included), sampled every 100 ms"
    )
    print()
    print(
        h.table(
            [
                "RPC",
                "path",
                "calls",
                "RPC/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "PG backends max",
                "PG backends mean",
            ],
            rows,
        )
    )


def main() -> int:
    if "--client" in sys.argv:
        return h.client_main(_client)
    args = _parser().parse_args()
    if min(args.concurrency, args.organizations, args.pool_size, args.server_pool) < 1:
        raise SystemExit("--concurrency, --organizations, --pool-size, --server-pool: >= 1")
    h.quiet_server_logs(args.server_log)
    with h.embedded_postgres() as pg:
        h.run(_main(args, pg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
