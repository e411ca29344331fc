"""Benchmark: RevealCredential and GetConnection throughput and latency at fixed concurrency.

Setup (with the admin key, over gRPC): one organization (``--organizations``
for more), a Slack connection and a stored access token in each, and per
organization an API key with the reader and revealer roles (CreateApiKey).
Rate limiting is off (``RateLimit(0, 1)``, as SINGURA_RATE_LIMIT_RPS=0).

Load: a client *process* (``--clients`` for more) runs a fixed number of worker
tasks on one grpc.aio channel, each calling the RPC in a loop with its
organization key, so ``--concurrency`` calls are always in flight. After
``--warmup`` seconds it measures for ``--duration`` seconds: calls that complete
in that window count for RPC/s, and their latencies (client-side, call start to
response) give p50/p90/p99/max. The client runs in its own process so it does
not share the server's GIL and event loop; on a small machine it still shares
the cores, which the CPU columns show (cores busy = CPU seconds / window).

Every RevealCredential writes an audit event in its own transaction, and
appends to one organization's chain are serialized by a row lock on the chain
head (migration 004): with one organization, reveals are one-at-a-time commits.
``--organizations 4`` spreads the same load over four chains.

    python bench/rpc_throughput.py
    python bench/rpc_throughput.py --concurrency 16 --duration 30 --rpcs reveal
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
from typing import Any

import _harness as h
import grpc

from singura_vault import metrics
from singura_vault.config import PoolSettings
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import access_pb2_grpc as agrpc
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import connections_pb2_grpc as cgrpc
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc

RPCS = {"reveal": "RevealCredential", "get": "GetConnection"}
CALL_TIMEOUT_S = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="RevealCredential and GetConnection throughput and latency at a fixed "
        "number of calls in flight (starts its own PostgreSQL and vault).",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (default 64)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per RPC (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)"
    )
    parser.add_argument(
        "--rpcs",
        default="reveal,get",
        help="comma-separated, in order: reveal (RevealCredential), get (GetConnection); "
        "default reveal,get",
    )
    parser.add_argument(
        "--organizations",
        type=int,
        default=1,
        help="organizations (each with its own key, connection, credential and audit "
        "chain) the workers are spread over (default 1)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        help="client processes sharing the concurrency (default 1)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=PoolSettings().max_size,
        help=f"vault's asyncpg pool max size (default {PoolSettings().max_size}, as DB_POOL_MAX)",
    )
    parser.add_argument(
        "--access-log",
        choices=("all", "errors", "off"),
        default="errors",
        help="the vault's SINGURA_ACCESS_LOG (default errors, as serve)",
    )
    parser.add_argument(
        "--server-log",
        default=os.devnull,
        help="where the vault's JSON log lines go (default: discarded)",
    )
    return parser


def _check(args: argparse.Namespace) -> list[str]:
    rpcs = [r.strip() for r in args.rpcs.split(",") if r.strip()]
    unknown = [r for r in rpcs if r not in RPCS]
    if not rpcs or unknown:
        raise SystemExit(f"--rpcs: choose from {', '.join(RPCS)}; got {args.rpcs!r}")
    if args.concurrency < 1 or args.organizations < 1 or args.pool_size < 1:
        raise SystemExit("--concurrency, --organizations and --pool-size must be at least 1")
    if not 1 <= args.clients <= args.concurrency:
        raise SystemExit("--clients must be between 1 and --concurrency")
    if args.duration <= 0 or args.warmup < 0:
        raise SystemExit("--duration must be positive and --warmup not negative")
    return rpcs


# -- client process ----------------------------------------------------------------------


async def _client(config: dict[str, Any]) -> None:
    """Keep ``concurrency`` calls in flight; report what completed in the window."""
    async with grpc.aio.insecure_channel(config["address"]) as channel:
        await channel.channel_ready()
        calls: list[tuple[Any, Any, Any]] = []
        for target in config["targets"]:
            metadata = h.auth(target["key"])
            if config["rpc"] == "reveal":
                calls.append(
                    (
                        crgrpc.CredentialServiceStub(channel).RevealCredential,
                        crpb.RevealCredentialRequest(
                            organization_id=target["organization_id"],
                            connection_id=target["connection_id"],
                            type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                        ),
                        metadata,
                    )
                )
            else:
                calls.append(
                    (
                        cgrpc.ConnectionServiceStub(channel).GetConnection,
                        cpb.GetConnectionRequest(
                            organization_id=target["organization_id"],
                            connection_id=target["connection_id"],
                        ),
                        metadata,
                    )
                )

        async def call(index: int, n: int) -> tuple[int, str]:
            method, request, metadata = calls[(config["worker_offset"] + index) % len(calls)]
            await method(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
            return 1, "OK"

        window = await h.drive(call, config["concurrency"], config["warmup"], config["duration"])
        latencies = window.latencies
        h.emit(
            {
                "event": "result",
                "ok": len(latencies),
                "errors": dict(window.errors),
                "latencies_ms": [h.percentile(latencies, q) * 1000 for q in (0.5, 0.9, 0.99, 1.0)],
                "mean_ms": sum(latencies) / len(latencies) * 1000 if latencies else float("nan"),
                "cpu_s": window.cpu_s,
            }
        )


# -- driver ------------------------------------------------------------------------------


async def _setup(vault: h.Vault, organizations: int) -> list[dict[str, str]]:
    """Organizations, connections, credentials and reader+revealer keys, via the admin key."""
    admin = h.auth(vault.admin_key)
    targets = []
    async with grpc.aio.insecure_channel(vault.address) as channel:
        credentials = crgrpc.CredentialServiceStub(channel)
        access = agrpc.AccessServiceStub(channel)
        for _ in range(organizations):
            suffix = uuid.uuid4().hex[:10]
            org = await h.create_organization(channel, admin, suffix)
            connection = await h.create_connection(
                channel, admin, org.id, f"U{suffix}", permissions=["channels:read", "users:read"]
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
                    roles=[apb.API_KEY_ROLE_READER, apb.API_KEY_ROLE_REVEALER],
                    name="bench reader+revealer",
                ),
                metadata=admin,
            )
            targets.append(
                {"organization_id": org.id, "connection_id": connection.id, "key": key.secret}
            )
    return targets


async def _measure(
    pg: h.Postgres, vault: h.Vault, rpc: str, targets: list[dict[str, str]], args: Any
) -> dict[str, Any]:
    """One RPC under load from the client processes; this (server) process's CPU and
    PostgreSQL's over the same window."""
    shares = [
        args.concurrency // args.clients + (1 if i < args.concurrency % args.clients else 0)
        for i in range(args.clients)
    ]
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        offset = 0
        for share in shares:
            config = {
                "address": vault.address,
                "rpc": rpc,
                "targets": targets,
                "concurrency": share,
                "worker_offset": offset,
                "warmup": args.warmup,
                "duration": args.duration,
            }
            offset += share
            clients.append(
                await stack.enter_async_context(h.ClientProcess.running(__file__, config))
            )
        # Client processes start within milliseconds of each other; the window is the
        # first client's (they have the same warm-up and duration).
        await asyncio.gather(*(c.expect("window_start") for c in clients))
        cpu0, pg0 = h.cpu_seconds(), h.process_tree_cpu_seconds(pg.postmaster_pid())
        await asyncio.gather(*(c.expect("window_end") for c in clients))
        cpu1, pg1 = h.cpu_seconds(), h.process_tree_cpu_seconds(pg.postmaster_pid())
        results = await asyncio.gather(*(c.expect("result") for c in clients))
    ok = sum(r["ok"] for r in results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    # Percentiles are per client process; with several, report the worst of each.
    quantiles = [max(r["latencies_ms"][i] for r in results) for i in range(4)]
    return {
        "ok": ok,
        "errors": errors,
        "rps": ok / args.duration,
        "quantiles_ms": quantiles,
        "mean_ms": max(r["mean_ms"] for r in results),
        "server_cores": (cpu1 - cpu0) / args.duration,
        "pg_cores": (pg1 - pg0) / args.duration,
        "client_cores": sum(r["cpu_s"] for r in results) / args.duration,
    }


async def _main(args: argparse.Namespace, rpcs: list[str], pg: h.Postgres) -> None:
    pg_version = await h.postgres_version(pg)
    pool = PoolSettings(max_size=args.pool_size, min_size=min(2, args.pool_size))
    rows = []
    batches: list[tuple[str, dict[str, tuple[float, float]], dict[str, tuple[float, float]]]] = []
    async with h.running_vault(pg, pool, access_log=args.access_log) as vault:
        targets = await _setup(vault, args.organizations)
        for rpc in rpcs:
            print(
                f"{RPCS[rpc]}: {args.warmup:g} s warm-up + {args.duration:g} s ...",
                file=sys.stderr,
                flush=True,
            )
            before = _batch_totals()
            result = await _measure(pg, vault, rpc, targets, args)
            batches.append((RPCS[rpc], _batch_totals(), before))
            errors = ", ".join(f"{code} {n}" for code, n in sorted(result["errors"].items()))
            rows.append(
                [
                    RPCS[rpc],
                    result["ok"],
                    result["rps"],
                    result["mean_ms"],
                    *result["quantiles_ms"],
                    errors or "0",
                    result["server_cores"],
                    result["pg_cores"],
                    result["client_cores"],
                ]
            )
    print()
    print(h.machine_summary(pg_version))
    print(
        f"load: {args.concurrency} calls in flight from {args.clients} client process(es), "
        f"{args.organizations} organization(s), {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured per RPC; pool max {args.pool_size}; rate limit off"
    )
    print()
    print(
        h.table(
            [
                "RPC",
                "calls",
                "RPC/s",
                "mean ms",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "errors",
                "server cores",
                "PG cores",
                "client cores",
            ],
            rows,
        )
    )
    print()
    print("coalesced statements (db/coalesce.py) in warm-up and measured window:")
    batch_rows = []
    for rpc_name, after, before in batches:
        for operation, (count, total) in sorted(after.items()):
            count -= before.get(operation, (0.0, 0.0))[0]
            total -= before.get(operation, (0.0, 0.0))[1]
            if count:
                batch_rows.append([rpc_name, operation, int(count), round(total / count, 1)])
    print(h.table(["RPC", "statement", "batches", "calls per batch"], batch_rows))


def _batch_totals() -> dict[str, tuple[float, float]]:
    """Per coalesced operation: (batches, calls) so far, from the in-process metric."""
    totals: dict[str, tuple[float, float]] = {}
    for family in metrics.REGISTRY.collect():
        if family.name != "singura_db_batch_size":
            continue
        for sample in family.samples:
            operation = sample.labels["operation"]
            count, total = totals.get(operation, (0.0, 0.0))
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
            totals[operation] = (count, total)
    return totals


def main() -> int:
    if sys.argv[1:2] == ["--client"]:
        return h.client_main(_client)
    args = _parser().parse_args()
    rpcs = _check(args)
    h.quiet_server_logs(args.server_log)
    try:
        with h.embedded_postgres() as pg:
            h.run(_main(args, rpcs, pg))
    except KeyboardInterrupt:
        print("interrupted; PostgreSQL stopped and its directory removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
