"""Benchmark: what a streaming standby buys metadata reads and costs writes.

One embedded PostgreSQL primary and its hot standby (``pg_basebackup -R``, both in
temporary directories, stopped and deleted on exit, Ctrl-C included), and in this
process two vaults on the primary built as ``running_vault`` builds one: *plain*, and
*routed*, the same vault with the standby attached as its replica
(``Database.attach_replica``, as DATABASE_REPLICA_URL does, with
``--max-lag`` = SINGURA_REPLICA_MAX_LAG). Rate limiting off; the admin key.

Data: one organization with a connection per three write workers (at least five).

Reads: GetConnection (cycling over the connections) and ListConnections (a page of
five), each on *plain* then *routed*; the standby streams asynchronously. The share
of reads the replica served is the vault's ``singura_replica_reads_total`` counter
(by ``target``), read in this process at the start and end of the window.

Writes: StoreCredential on *plain* (no replica attached: no consistency-token round
trip), each worker writing a new version of its own (connection, type), with the
standby stopped, streaming asynchronously, then synchronously
(``synchronous_standby_names`` naming it; ``synchronous_commit`` at its default on).

Load: a client process (``--client``) keeps ``--concurrency`` calls in flight,
warms up for ``--warmup`` s and counts the calls that complete OK in ``--seconds``
s (RPC/s, client-side p50/p99). Each run measures every configuration in turn, in
reverse order every other run (A B, B A, ...), and each write right after a
CHECKPOINT; cells are the median over ``--runs`` with the min-max range. CPU columns
are CPU seconds over the window divided by its length: the vault process (both
vaults), the primary's and the standby's postmaster and backends (those that exited
in the window too), the client, and the rest of the machine.

    python bench/replication.py
    python bench/replication.py --runs 1 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import _harness as h
import asyncpg
import grpc

from singura_vault.config import PoolSettings, Settings
from singura_vault.db.pool import Database
from singura_vault.metrics import REGISTRY
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import connections_pb2_grpc as cgrpc
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb

READS = {"get": "GetConnection", "list": "ListConnections"}
WRITES: dict[h.StandbyMode, str] = {
    "stopped": "no standby",
    "async": "asynchronous standby",
    "sync": "synchronous standby",
}
TYPES = (
    crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
    crpb.CREDENTIAL_TYPE_REFRESH_TOKEN,
    crpb.CREDENTIAL_TYPE_API_KEY,
)
PAGE = 5
CALL_TIMEOUT_S = 30.0
CORES = ("vault", "primary", "standby", "client", "rest")
DASH = "\u2013"  # an en dash: in ranges, and alone in a cell with nothing to say


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="GetConnection and ListConnections with and without a hot standby "
        "serving them, and StoreCredential with no, an asynchronous and a synchronous "
        "standby (starts its own PostgreSQL primary, standby and vaults).",
    )
    options: list[tuple[str, type[int | float], float, str]] = [
        ("--concurrency", int, 64, "calls in flight"),
        ("--seconds", float, 10.0, "measured seconds per configuration"),
        ("--warmup", float, 2.0, "unmeasured seconds before each"),
        ("--runs", int, 3, "runs over all configurations, A B A B"),
        ("--max-lag", float, Settings.replica_max_lag_s, "SINGURA_REPLICA_MAX_LAG, seconds"),
    ]
    for flag, kind, default, text in options:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default:g})")
    parser.add_argument(
        "--server-log", default=os.devnull, help="where the vaults' log goes (default: discarded)"
    )
    return parser


# -- client process ----------------------------------------------------------------------


def _call(config: dict[str, Any], channel: grpc.aio.Channel) -> h.Call:
    """One call of ``config["op"]`` (get, list or store) by worker ``w``, its ``n``-th."""
    org: str = config["organization_id"]
    ids: list[str] = config["connection_ids"]
    connections = cgrpc.ConnectionServiceStub(channel)

    def get(w: int, n: int) -> Any:
        return cpb.GetConnectionRequest(organization_id=org, connection_id=ids[(w + n) % len(ids)])

    def page(w: int, n: int) -> Any:
        return cpb.ListConnectionsRequest(organization_id=org, page_size=PAGE)

    def store(w: int, n: int) -> Any:
        # Worker w owns (connection w // 3, type w % 3): no two stores in flight share one.
        return crpb.StoreCredentialRequest(
            organization_id=org,
            connection_id=ids[w // len(TYPES)],
            type=TYPES[w % len(TYPES)],
            value=secrets.token_urlsafe(32),
        )

    calls: dict[str, tuple[Any, Callable[[int, int], Any]]] = {
        "get": (connections.GetConnection, get),
        "list": (connections.ListConnections, page),
        "store": (crgrpc.CredentialServiceStub(channel).StoreCredential, store),
    }
    method, build = calls[config["op"]]
    metadata = h.auth(config["key"])

    async def call(worker: int, n: int) -> tuple[int, str]:
        await method(build(worker, n), metadata=metadata, timeout=CALL_TIMEOUT_S)
        return 1, "OK"

    return call


async def _client(config: dict[str, Any]) -> None:
    async with grpc.aio.insecure_channel(config["address"]) as channel:
        await channel.channel_ready()
        window = await h.drive(
            _call(config, channel), config["concurrency"], config["warmup"], config["seconds"]
        )
    h.emit(
        {
            "event": "result",
            "ok": len(window.latencies),
            "errors": dict(window.errors),
            "p50_ms": h.percentile(window.latencies, 0.5) * 1000,
            "p99_ms": h.percentile(window.latencies, 0.99) * 1000,
            "cpu_s": window.cpu_s,
        }
    )


# -- driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: Counter[str]
    cores: dict[str, float]
    replica_share: float | None
    """Of the reads that could go to the replica, the share it served (routed only)."""


def _readings(pg: h.Postgres, standby: h.Standby) -> dict[str, float]:
    def reads(target: str) -> float:
        value = REGISTRY.get_sample_value("singura_replica_reads_total", {"target": target})
        return value or 0.0

    return {
        "vault": h.cpu_seconds(),
        "primary": h.postmaster_cpu_seconds(pg.postmaster_pid()),
        "standby": h.postmaster_cpu_seconds(standby.postmaster_pid()),
        "machine": h.machine_busy_seconds(),
        "replica reads": reads("replica"),
        "primary reads": reads("primary"),
    }


async def _measure(
    config: dict[str, Any], pg: h.Postgres, standby: h.Standby, seconds: float
) -> Sample:
    async with h.ClientProcess.running(__file__, config) as client:
        await client.expect("window_start")
        before = _readings(pg, standby)
        await client.expect("window_end")
        after = _readings(pg, standby)
        result = await client.expect("result")
    used = {name: after[name] - before[name] for name in after}
    cores = {name: used[name] / seconds for name in ("vault", "primary", "standby")}
    cores["client"] = result["cpu_s"] / seconds
    cores["rest"] = max(0.0, used["machine"] / seconds - sum(cores.values()))
    routed = used["replica reads"] + used["primary reads"]
    return Sample(
        rps=result["ok"] / seconds,
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=Counter(result["errors"]),
        cores=cores,
        replica_share=used["replica reads"] / routed if routed else None,
    )


async def _setup(vault: h.Vault, concurrency: int) -> tuple[str, list[str]]:
    """The organization (enterprise: the free plan allows 3 connections) and its
    connections, one per three write workers and at least a page."""
    admin = h.auth(vault.admin_key)
    suffix = secrets.token_hex(5)
    async with grpc.aio.insecure_channel(vault.address) as channel:
        org = await h.create_organization(channel, admin, suffix, opb.PLAN_ENTERPRISE)
        ids = [
            (await h.create_connection(channel, admin, org.id, f"U{suffix}{i:03d}")).id
            for i in range(max(PAGE, -(-concurrency // len(TYPES))))
        ]
    return org.id, ids


async def _until_current(db: Database, max_lag_s: float) -> None:
    """Until the vault finds its replica current (the standby may just have restarted)."""
    async with asyncio.timeout(60):
        while True:
            staleness = db.replica_staleness_s
            if staleness is not None and staleness <= max_lag_s:
                return
            await asyncio.sleep(0.05)


async def _checkpoint(pg: h.Postgres) -> None:
    """Every write measurement starts right after a checkpoint, so that none has a timed
    one inside it and all pay the same full-page images after it."""
    conn = await asyncpg.connect(pg.superuser_dsn)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def _main(args: argparse.Namespace, pg: h.Postgres, standby: h.Standby) -> None:
    pg_version = await h.postgres_version(pg)
    pool = PoolSettings()
    reads: dict[tuple[str, bool], list[Sample]] = {
        (op, routed): [] for op in READS for routed in (False, True)
    }
    writes: dict[h.StandbyMode, list[Sample]] = {mode: [] for mode in WRITES}
    async with h.running_vault(pg, pool) as plain, h.running_vault(pg, pool) as routed:
        replica = await Database.connect(standby.service_dsn, replace(pool, min_size=0))
        routed.db.attach_replica(replica, args.max_lag)
        organization_id, connection_ids = await _setup(plain, args.concurrency)
        base = {
            "organization_id": organization_id,
            "connection_ids": connection_ids,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "seconds": args.seconds,
        }

        async def measure(vault: h.Vault, op: str, label: str) -> Sample:
            print(f"{label} ...", file=sys.stderr, flush=True)
            config = {**base, "address": vault.address, "key": vault.admin_key, "op": op}
            return await _measure(config, pg, standby, args.seconds)

        for run in range(1, args.runs + 1):
            # Odd runs in one order, even runs in the other (A B, B A): data that grows
            # or a busier machine does not always fall on the same configuration.
            order = 1 if run % 2 else -1
            await standby.use("async")
            for op, rpc in READS.items():
                for routing in (False, True)[::order]:
                    vault, where = (routed, "replica") if routing else (plain, "primary")
                    if routing:
                        await _until_current(routed.db, args.max_lag)
                    sample = await measure(vault, op, f"run {run}: {rpc}, {where}")
                    reads[(op, routing)].append(sample)
            for mode in list(WRITES)[::order]:
                await standby.use(mode)
                await _checkpoint(pg)
                label = f"run {run}: StoreCredential, {WRITES[mode]}"
                writes[mode].append(await measure(plain, "store", label))
    _report(args, pg_version, pool, len(connection_ids), reads, writes)


# -- report ------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    """The median over the runs, and with several runs their range."""
    median = h.cell(statistics.median(values))
    if len(values) < 2:
        return median
    return f"{median} ({h.cell(min(values))}{DASH}{h.cell(max(values))})"


def _cells(samples: list[Sample], baseline: list[Sample] | None) -> list[object]:
    """RPC/s, the ratio to ``baseline``'s median, p50, p99, CPU medians and errors."""
    rate = statistics.median(s.rps for s in samples)
    ratio = DASH if baseline is None else f"{rate / statistics.median(s.rps for s in baseline):.2f}"
    errors: Counter[str] = Counter()
    for sample in samples:
        errors.update(sample.errors)
    return [
        _spread([s.rps for s in samples]),
        ratio,
        _spread([s.p50_ms for s in samples]),
        _spread([s.p99_ms for s in samples]),
        *(statistics.median(s.cores[name] for s in samples) for name in CORES),
        ", ".join(f"{code} {n:,}" for code, n in sorted(errors.items())) or "0",
    ]


CPU_HEADERS = ["vault cores", "primary PG", "standby PG", "client", "rest of machine", "errors"]
READ_HEADERS = ["RPC", "vault", "RPC/s", "vs primary only", "p50 ms", "p99 ms", "replica share"]
WRITE_HEADERS = ["primary with", "RPC/s", "vs no standby", "p50 ms", "p99 ms"]


def _report(
    args: argparse.Namespace,
    pg_version: str,
    pool: PoolSettings,
    connections: int,
    reads: dict[tuple[str, bool], list[Sample]],
    writes: dict[h.StandbyMode, list[Sample]],
) -> None:
    read_rows = []
    for op, rpc in READS.items():
        plain, routed = reads[(op, False)], reads[(op, True)]
        shares = [s.replica_share for s in routed if s.replica_share is not None]
        share = f"{statistics.median(shares):.1%}" if shares else "n/a"
        for where, cells, served in (
            ("primary only", _cells(plain, None), DASH),
            ("replica attached", _cells(routed, plain), share),
        ):
            cells.insert(4, served)
            read_rows.append([rpc, where, *cells])
    write_rows = [
        [label, *_cells(writes[mode], None if mode == "stopped" else writes["stopped"])]
        for mode, label in WRITES.items()
    ]
    print()
    print(h.machine_summary(pg_version))
    print(
        f"load: {args.concurrency} calls in flight from 1 client process, {args.warmup:g} s "
        f"warm-up + {args.seconds:g} s measured per configuration, {args.runs} run(s) "
        "over all configurations (reverse order every other run; a CHECKPOINT before each "
        f"write); admin key, rate limit off, pool max {pool.max_size}"
    )
    print(
        f"data: 1 organization, {connections} connections (ListConnections page {PAGE}); "
        "standby: streaming hot standby of the embedded primary (pg_basebackup -R), "
        f"replica staleness bound {args.max_lag:g} s"
    )
    print()
    print("Reads: the vault on the primary only, then the same vault with the standby attached")
    print(h.table(READ_HEADERS + CPU_HEADERS, read_rows))
    print()
    print("Writes: StoreCredential (a new version per call; the vault has no replica attached)")
    print(h.table(WRITE_HEADERS + CPU_HEADERS, write_rows))
    print()
    print(
        f"Cells: median over the runs (min{DASH}max). CPU columns: cores = CPU s / window s, "
        "medians; vault = this process (both vaults), PG = postmaster and backends"
    )


def _check(args: argparse.Namespace) -> None:
    if args.concurrency < 1 or args.runs < 1:
        raise SystemExit("--concurrency and --runs must be at least 1")
    if args.seconds <= 0 or args.warmup < 0 or args.max_lag <= 0:
        raise SystemExit("--seconds and --max-lag must be positive, --warmup not negative")


def main() -> int:
    if sys.argv[1:2] == ["--client"]:
        return h.client_main(_client)
    args = _parser().parse_args()
    _check(args)
    h.quiet_server_logs(args.server_log)
    try:
        with h.embedded_postgres() as pg, h.hot_standby(pg) as standby:
            h.run(_main(args, pg, standby))
    except KeyboardInterrupt:
        print(
            "interrupted; the primary and the standby stopped, their directories removed",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
