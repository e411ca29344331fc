"""Per-RPC latency and audit export/verify throughput as the audit table grows, and
while the sequencer chains a backlog.

Stage "sizes": two measured organizations (a connection, a stored access token, and N
own audit events each; default 1,000 and 100,000) are read while other tenants' audit
events (spread over 200 organizations, inserted as the schema owner like
bench/audit_export.py does) grow through ``--sizes``. For each size and organization, a
client process calls GetCredential, ListCredentials, ListConnections and ListAuditEvents
(page size 50) ``--calls`` times each with one call in flight (p50/p99), then exports
and verifies the organization's whole chain (events/s, time to the first export batch).

Stage "backlog": a probed organization's RPCs (RevealCredential, GetCredential,
ListCredentials, ListConnections, ListAuditEvents) are measured at rest (the baseline),
then ``--backlog-events`` audit events (default 1,100,000: one in eleven the probed
organization's, the rest over 200 others) are committed unchained in one transaction --
a burst, a restore, a sequencer that was down -- and the same calls go round, one in
flight, until the vault's sequencer has chained them all: p50/p99/max per RPC against
the baseline, calls over 1 s, the chaining rate, and the sequencer statements that took
200 ms or more (the vault's slow-statement counter: its db_slow_query log lines).

    python bench/scale.py                              # sizes 0,100000 + a 1.1M backlog
    python bench/scale.py --stages backlog --backlog-events 200000   # a quick backlog run
    python bench/scale.py --sizes 0,100000,1000000     # + 1M (loading takes ~1-2 min more)
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
import uuid
from typing import Any

import _harness as h
import asyncpg
import grpc

from singura_vault import metrics
from singura_vault.config import PoolSettings
from singura_vault.proto.singura.vault.v1 import audit_pb2, audit_pb2_grpc
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import connections_pb2_grpc as cgrpc
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc

OTHER_ORGANIZATIONS = 200
CHUNK = 1000
STAGES = ("sizes", "backlog")
# A probed call slower than this is what the backlog target forbids (issue 26).
SLOW_CALL_S = 1.0
# Each probed call's deadline: a call that waits longer is counted, not awaited forever.
CALL_DEADLINE_S = 30.0
# The statements of the audit sequencer and of a read's catch-up (sql/audit.sql).
SEQUENCER_QUERIES = ("audit_sequence_after", "audit_sequence_chain", "audit_sequence")

INSERT_EVENTS = """
INSERT INTO singura.audit_logs
    (organization_id, actor, action, resource_type, resource_id, request_id, details)
SELECT $1::uuid, 'benchactor000001', 'credential.revealed', 'credential',
       gen_random_uuid()::text, gen_random_uuid()::text,
       jsonb_build_object('connection_id', gen_random_uuid(), 'credential_type', 'access_token',
                          'version', 1, 'key_version', 1)
  FROM generate_series(1, $2)
"""


def _counts(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 0 for v in values) or values != sorted(values):
        raise SystemExit(f"expected ascending non-negative counts, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="RPC latency and audit export/verify speed as other tenants' audit "
        "data and the organization's own chain grow (starts its own PostgreSQL and vault)."
    )
    parser.add_argument(
        "--sizes",
        default="0,100000",
        help="ascending counts of other tenants' audit events (default 0,100000)",
    )
    parser.add_argument(
        "--own",
        default="1000,100000",
        help="own audit events of each measured organization (default 1000,100000)",
    )
    parser.add_argument("--calls", type=int, default=200, help="calls per RPC (default 200)")
    parser.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"stages to run, comma-separated, of {', '.join(STAGES)} (default all)",
    )
    parser.add_argument(
        "--backlog-events",
        type=int,
        default=1_100_000,
        help="unchained audit events of the backlog stage, one in eleven the probed "
        "organization's (default 1,100,000)",
    )
    parser.add_argument("--server-log", default="/dev/null", help="where the vault's log goes")
    return parser


# -- client process ----------------------------------------------------------------------


async def _client(config: dict[str, Any]) -> None:
    if config.get("mode") == "probe":
        await _probe_client(config)
        return
    metadata = h.auth(config["key"])
    org, connection, credential = config["org"], config["connection"], config["credential"]
    async with grpc.aio.insecure_channel(config["address"]) as channel:
        credentials = crgrpc.CredentialServiceStub(channel)
        connections = cgrpc.ConnectionServiceStub(channel)
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        rpcs = {
            "GetCredential": lambda: credentials.GetCredential(
                crpb.GetCredentialRequest(organization_id=org, credential_id=credential),
                metadata=metadata,
            ),
            "ListCredentials": lambda: credentials.ListCredentials(
                crpb.ListCredentialsRequest(organization_id=org, connection_id=connection),
                metadata=metadata,
            ),
            "ListConnections": lambda: connections.ListConnections(
                cpb.ListConnectionsRequest(organization_id=org), metadata=metadata
            ),
            "ListAuditEvents": lambda: audit.ListAuditEvents(
                audit_pb2.ListAuditEventsRequest(organization_id=org, page_size=50),
                metadata=metadata,
            ),
        }
        result: dict[str, Any] = {"event": "result"}
        for name, call in rpcs.items():
            for _ in range(5):  # warm-up: connections, prepared statements
                await call()
            latencies = []
            for _ in range(config["calls"]):
                started = time.perf_counter()
                await call()
                latencies.append(time.perf_counter() - started)
            latencies.sort()
            result[name] = [h.percentile(latencies, 0.5), h.percentile(latencies, 0.99)]
        started = time.perf_counter()
        first = 0.0
        exported = 0
        async for message in audit.ExportAuditEvents(
            audit_pb2.ExportAuditEventsRequest(organization_id=org), metadata=metadata
        ):
            if not exported:
                first = time.perf_counter() - started
            exported += len(message.events)
        result["export"] = [exported, time.perf_counter() - started, first]
        started = time.perf_counter()
        answer = await audit.VerifyAuditChain(
            audit_pb2.VerifyAuditChainRequest(organization_id=org), metadata=metadata
        )
        if not answer.ok:
            raise RuntimeError(f"chain does not verify: {answer.problem}")
        result["verify"] = [answer.event_count, time.perf_counter() - started]
        h.emit(result)


async def _probe_client(config: dict[str, Any]) -> None:
    """The backlog stage's probe: every RPC in turn, one call in flight, for
    ``rounds`` rounds, or (``rounds`` 0) until the driver sends a stop line."""
    metadata = h.auth(config["key"])
    org, connection, credential = config["org"], config["connection"], config["credential"]
    async with grpc.aio.insecure_channel(config["address"]) as channel:
        credentials = crgrpc.CredentialServiceStub(channel)
        connections = cgrpc.ConnectionServiceStub(channel)
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        rpcs = {
            "RevealCredential": lambda: credentials.RevealCredential(
                crpb.RevealCredentialRequest(
                    organization_id=org,
                    connection_id=connection,
                    type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                ),
                metadata=metadata,
                timeout=CALL_DEADLINE_S,
            ),
            "GetCredential": lambda: credentials.GetCredential(
                crpb.GetCredentialRequest(organization_id=org, credential_id=credential),
                metadata=metadata,
                timeout=CALL_DEADLINE_S,
            ),
            "ListCredentials": lambda: credentials.ListCredentials(
                crpb.ListCredentialsRequest(organization_id=org, connection_id=connection),
                metadata=metadata,
                timeout=CALL_DEADLINE_S,
            ),
            "ListConnections": lambda: connections.ListConnections(
                cpb.ListConnectionsRequest(organization_id=org),
                metadata=metadata,
                timeout=CALL_DEADLINE_S,
            ),
            "ListAuditEvents": lambda: audit.ListAuditEvents(
                audit_pb2.ListAuditEventsRequest(organization_id=org, page_size=50),
                metadata=metadata,
                timeout=CALL_DEADLINE_S,
            ),
        }
        for call in rpcs.values():
            for _ in range(5):  # warm-up: connections, prepared statements
                await call()
        stop = asyncio.Event()

        async def wait_for_stop() -> None:
            await h.receive_line()
            stop.set()

        watcher = None
        if not config["rounds"]:
            # Warmed up before the backlog is loaded: a warm-up call must not be the
            # one that meets it (before migration 023 a ListAuditEvents then chained
            # the whole backlog, unmeasured).
            h.emit({"event": "ready"})
            await h.receive_line()
            watcher = asyncio.create_task(wait_for_stop())
        h.emit({"event": "probing"})
        latencies: dict[str, list[float]] = {name: [] for name in rpcs}
        expired = dict.fromkeys(rpcs, 0)
        rounds = 0
        while not stop.is_set() and (not config["rounds"] or rounds < config["rounds"]):
            for name, call in rpcs.items():
                started = time.perf_counter()
                try:
                    await call()
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise
                    expired[name] += 1
                latencies[name].append(time.perf_counter() - started)
            rounds += 1
        if watcher is not None:
            await watcher
        result: dict[str, Any] = {"event": "result", "rounds": rounds}
        for name, values in latencies.items():
            values.sort()
            result[name] = {
                "p50": h.percentile(values, 0.5),
                "p99": h.percentile(values, 0.99),
                "max": values[-1],
                "slow": sum(1 for v in values if v > SLOW_CALL_S),
                "expired": expired[name],
                "calls": len(values),
            }
        h.emit(result)


# -- driver ------------------------------------------------------------------------------


async def _append(conn: asyncpg.Connection, org: uuid.UUID, count: int) -> None:
    """``count`` chained events for ``org``, 1,000 per transaction (as audit_export.py)."""
    left = count
    while left:
        n = min(CHUNK, left)
        async with conn.transaction():
            await conn.execute("SELECT set_config('singura.organization_id', $1, true)", str(org))
            await conn.execute(INSERT_EVENTS, org, n)
        left -= n
    await h.chain_pending_audit(conn)


async def _grow_others(conn: asyncpg.Connection, others: list[uuid.UUID], count: int) -> None:
    """Spread ``count`` more events over the other organizations, round robin."""
    per_org, extra = divmod(count, len(others))
    for i, org in enumerate(others):
        await _append(conn, org, per_org + (1 if i < extra else 0))


async def _measured_org(vault: h.Vault, channel: grpc.aio.Channel) -> dict[str, str]:
    admin = h.auth(vault.admin_key)
    suffix = uuid.uuid4().hex[:10]
    org = await h.create_organization(channel, admin, suffix)
    connection = await h.create_connection(channel, admin, org.id, f"U{suffix}")
    stored = await crgrpc.CredentialServiceStub(channel).StoreCredential(
        crpb.StoreCredentialRequest(
            organization_id=org.id,
            connection_id=connection.id,
            type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
            value="xoxb-" + secrets.token_urlsafe(48),
        ),
        metadata=admin,
    )
    return {"org": org.id, "connection": connection.id, "credential": stored.credential.id}


def _sequencer_slow_statements() -> int:
    """Statements of the audit sequencer (and of reads' catch-up) that took
    DB_SLOW_QUERY_MS (200 ms) or more so far: the vault's db_slow_query log lines."""
    total = 0.0
    for name in SEQUENCER_QUERIES:
        value = metrics.REGISTRY.get_sample_value("singura_db_slow_queries_total", {"query": name})
        total += value or 0.0
    return int(total)


async def _load_backlog(owner: asyncpg.Connection, probed: uuid.UUID, events: int) -> int:
    """Commit ``events`` unchained audit events in one transaction (so that the whole
    backlog appears at once): one in eleven ``probed``'s, the rest round robin over 200
    other organizations, in chunks that interleave the two; returns the probed share."""
    own = events // 11
    others = [uuid.uuid4() for _ in range(OTHER_ORGANIZATIONS)]
    chunks: list[tuple[uuid.UUID, int]] = []
    left, i = events - own, 0
    while left:
        n = min(CHUNK, left)
        chunks.append((others[i % len(others)], n))
        left, i = left - n, i + 1
    # The probed organization's chunks spread evenly through the others'.
    own_chunks = [min(CHUNK, own - k) for k in range(0, own, CHUNK)]
    every = max(1, len(chunks) // max(1, len(own_chunks)))
    for k, n in enumerate(own_chunks):
        chunks.insert(min(len(chunks), k * (every + 1)), (probed, n))
    async with owner.transaction():
        for org, n in chunks:
            await owner.execute(INSERT_EVENTS, org, n)
    return own


async def _probe(client_config: dict[str, Any], rounds: int) -> dict[str, Any]:
    async with h.ClientProcess.running(__file__, {**client_config, "rounds": rounds}) as client:
        await client.expect("probing")
        return await client.expect("result")


async def _backlog_stage(
    args: argparse.Namespace, vault: h.Vault, channel: grpc.aio.Channel, owner: asyncpg.Connection
) -> tuple[list[list[object]], list[str]]:
    target = await _measured_org(vault, channel)
    config = {"mode": "probe", "address": vault.address, "key": vault.admin_key, **target}
    print("backlog stage: baseline ...", file=sys.stderr, flush=True)
    baseline = await _probe(config, args.calls)
    async with h.ClientProcess.running(__file__, {**config, "rounds": 0}) as client:
        await client.expect("ready")
        loading = f"backlog stage: loading {args.backlog_events:,} events ..."
        print(loading, file=sys.stderr, flush=True)
        loaded_at = time.perf_counter()
        own = await _load_backlog(owner, uuid.UUID(target["org"]), args.backlog_events)
        load_s = time.perf_counter() - loaded_at
        slow_before = _sequencer_slow_statements()
        await client.send({"event": "go"})
        await client.expect("probing")
        started = time.perf_counter()
        vault.server.components.sequencer.wake()
        pending = await owner.fetchval("SELECT count(*) FROM singura.audit_pending")
        while pending:
            await asyncio.sleep(0.5)
            pending = await owner.fetchval("SELECT count(*) FROM singura.audit_pending")
        chain_s = max(time.perf_counter() - started, 1e-3)
        await client.send({"event": "stop"})
        during = await client.expect("result")
    slow = _sequencer_slow_statements() - slow_before
    rows: list[list[object]] = []
    for name, base in baseline.items():
        if not isinstance(base, dict):
            continue
        now = during[name]
        rows.append(
            [
                name,
                f"{base['p50'] * 1000:.2f} / {base['p99'] * 1000:.2f} / {base['max'] * 1000:.1f}",
                f"{now['p50'] * 1000:.2f} / {now['p99'] * 1000:.2f} / {now['max'] * 1000:.1f}",
                now["p50"] / base["p50"],
                now["calls"],
                now["slow"],
                now["expired"],
            ]
        )
    notes = [
        f"backlog: {args.backlog_events:,} unchained events ({own:,} the probed "
        f"organization's, the rest over {OTHER_ORGANIZATIONS} others), committed in one "
        f"transaction in {load_s:.1f} s; chained in {chain_s:.1f} s = "
        f"{args.backlog_events / chain_s:,.0f} events/s while probed",
        f"sequencer statements >= 200 ms while chaining: {slow} (db_slow_query; "
        f"{', '.join(SEQUENCER_QUERIES)})",
        f"probe: {baseline['rounds']} rounds at rest, {during['rounds']} while chaining; one "
        f"call in flight; latencies p50 / p99 / max ms; > {SLOW_CALL_S:.0f} s and "
        f"> {CALL_DEADLINE_S:.0f} s deadline counted",
    ]
    return rows, notes


async def _main(args: argparse.Namespace, pg: h.Postgres) -> None:
    sizes, owns = _counts(args.sizes), _counts(args.own)
    stages = _stages(args.stages)
    pg_version = await h.postgres_version(pg)
    rows: list[list[object]] = []
    backlog_rows: list[list[object]] = []
    backlog_notes: list[str] = []
    async with (
        h.running_vault(pg, PoolSettings()) as vault,
        grpc.aio.insecure_channel(vault.address) as channel,
    ):
        owner = await asyncpg.connect(pg.owner_dsn)
        try:
            if "backlog" in stages:
                # First, on a small table: the baseline is the vault at rest.
                backlog_rows, backlog_notes = await _backlog_stage(args, vault, channel, owner)
            if "sizes" not in stages:
                sizes, owns = [], []
            measured = []
            for own in owns:
                target = await _measured_org(vault, channel)
                print(f"loading {own:,} own events ...", file=sys.stderr, flush=True)
                await _append(owner, uuid.UUID(target["org"]), own)
                measured.append(target)
            others = [uuid.uuid4() for _ in range(OTHER_ORGANIZATIONS)]
            loaded = 0
            for size in sizes:
                print(f"loading other tenants to {size:,} events ...", file=sys.stderr, flush=True)
                await _grow_others(owner, others, size - loaded)
                loaded = size
                await owner.execute("ANALYZE singura.audit_logs")
                total = await owner.fetchval("SELECT count(*) FROM singura.audit_logs")
                for target in measured:
                    config = {"address": vault.address, "key": vault.admin_key, "calls": args.calls}
                    config.update(target)
                    async with h.ClientProcess.running(__file__, config) as client:
                        result = await client.expect("result")
                    events, export_s, first_s = result["export"]
                    verified, verify_s = result["verify"]
                    rows.append(
                        [
                            total,
                            total - events,
                            events,
                            *(
                                f"{result[n][0] * 1000:.2f} / {result[n][1] * 1000:.2f}"
                                for n in (
                                    "GetCredential",
                                    "ListCredentials",
                                    "ListConnections",
                                    "ListAuditEvents",
                                )
                            ),
                            events / export_s,
                            first_s * 1000,
                            verified / verify_s,
                        ]
                    )
        finally:
            await owner.close()
    print()
    print(h.machine_summary(pg_version))
    if backlog_rows:
        print()
        print("\n".join(backlog_notes))
        print()
        print(
            h.table(
                [
                    "RPC",
                    "at rest",
                    "while chaining",
                    "p50 ratio",
                    "calls",
                    f"> {SLOW_CALL_S:.0f} s",
                    "deadline exceeded",
                ],
                backlog_rows,
            )
        )
    if not rows:
        return
    print()
    print(
        f"load: other tenants' events over {OTHER_ORGANIZATIONS} organizations, "
        f"INSERT ... generate_series as singura_owner, {CHUNK:,} per transaction; "
        f"{args.calls} calls per RPC, one in flight, admin key; latencies p50 / p99 ms"
    )
    print()
    print(
        h.table(
            [
                "table rows",
                "other tenants' rows",
                "own events",
                "GetCredential",
                "ListCredentials",
                "ListConnections",
                "ListAuditEvents",
                "export events/s",
                "1st batch ms",
                "verify events/s",
            ],
            rows,
        )
    )


def _stages(text: str) -> tuple[str, ...]:
    stages = tuple(v.strip() for v in text.split(",") if v.strip())
    if not stages or any(v not in STAGES for v in stages):
        raise SystemExit(f"expected stages of {', '.join(STAGES)}, got {text!r}")
    return stages


def main() -> int:
    if sys.argv[1:2] == ["--client"]:
        return h.client_main(_client)
    args = _parser().parse_args()
    _counts(args.sizes), _counts(args.own), _stages(args.stages)  # fail before starting
    if args.backlog_events < 11:
        raise SystemExit("--backlog-events must be at least 11")
    h.quiet_server_logs(args.server_log)
    try:
        with h.embedded_postgres() as pg:
            h.run(_main(args, pg))
    except KeyboardInterrupt:
        print("interrupted; PostgreSQL stopped and its directory removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
