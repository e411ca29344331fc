"""Per-RPC latency and audit export/verify throughput as the audit table grows.

Two measured organizations (a connection, a stored access token, and N own audit events
each; default 1,000 and 100,000) are read while other tenants' audit events (spread
over 200 organizations, inserted as the schema owner like bench/audit_export.py does)
grow through ``--sizes``. For each size and organization, a client process calls
GetCredential, ListCredentials, ListConnections and ListAuditEvents (page size 50)
``--calls`` times each with one call in flight (p50/p99), then exports and verifies the
organization's whole chain (events/s, time to the first export batch).

    python bench/scale.py                              # other tenants: 0 and 100,000 events
    python bench/scale.py --sizes 0,100000,1000000     # + 1M (loading takes ~1-2 min more)
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
import uuid
from typing import Any

import _harness as h
import asyncpg
import grpc

from singura_vault.config import PoolSettings
from singura_vault.proto.singura.vault.v1 import audit_pb2, audit_pb2_grpc
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import connections_pb2_grpc as cgrpc
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc

OTHER_ORGANIZATIONS = 200
CHUNK = 1000

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
    parser.add_argument("--server-log", default="/dev/null", help="where the vault's log goes")
    return parser


# -- client process ----------------------------------------------------------------------


async def _client(config: dict[str, Any]) -> None:
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


async def _main(args: argparse.Namespace, pg: h.Postgres) -> None:
    sizes, owns = _counts(args.sizes), _counts(args.own)
    pg_version = await h.postgres_version(pg)
    rows: list[list[object]] = []
    async with (
        h.running_vault(pg, PoolSettings()) as vault,
        grpc.aio.insecure_channel(vault.address) as channel,
    ):
        owner = await asyncpg.connect(pg.owner_dsn)
        try:
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


def main() -> int:
    if sys.argv[1:2] == ["--client"]:
        return h.client_main(_client)
    args = _parser().parse_args()
    _counts(args.sizes), _counts(args.own)  # fail before starting PostgreSQL
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
