"""Benchmark: stream a large audit trail with AuditService/ExportAuditEvents, and verify it.

For each size N (``--sizes``, default 10,000 and 100,000) a new organization gets
N audit events, inserted straight into ``singura.audit_logs`` as the schema owner
and chained by the audit sequencer, as every event is. Then a client
*in a separate process* streams them with ExportAuditEvents over a real gRPC
channel, and calls VerifyAuditChain over the same chain.

Why a separate client process: the point is the *server's* memory while it
streams. With the client in the same process, the peak RSS would also hold the
client's decoded messages and its gRPC buffers, and both would share one core
and one GIL. Each process measures itself: the kernel's high-water mark (VmHWM)
is reset just before the call (``/proc/self/clear_refs``) and read after it, so
"peak growth" is the most the process grew during that call alone.

Expectation: the server's growth stays flat whatever N is (the export reads and
sends 1000-event batches, one short transaction each); events/s stays roughly
constant.

    python bench/audit_export.py                      # sizes 10000,100000
    python bench/audit_export.py --sizes 1000,10000,100000,300000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import Any

import _harness as h
import asyncpg
import grpc

from singura_vault.config import PoolSettings
from singura_vault.proto.singura.vault.v1 import audit_pb2, audit_pb2_grpc

# Events shaped like the ones RevealCredential writes (a few hundred bytes each).
INSERT_EVENTS = """
INSERT INTO singura.audit_logs
    (organization_id, actor, action, resource_type, resource_id, request_id, details)
SELECT $1::uuid, 'benchactor000001', 'credential.revealed', 'credential',
       gen_random_uuid()::text, gen_random_uuid()::text,
       jsonb_build_object('connection_id', gen_random_uuid(), 'credential_type', 'access_token',
                          'version', 1, 'key_version', 1)
  FROM generate_series(1, $2)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Throughput and memory of AuditService/ExportAuditEvents and "
        "VerifyAuditChain over N audit events (starts its own PostgreSQL and vault).",
    )
    parser.add_argument(
        "--sizes",
        default="10000,100000",
        help="comma-separated event counts, one organization each (default 10000,100000)",
    )
    parser.add_argument(
        "--insert-chunk",
        type=int,
        default=1000,
        help="events per INSERT transaction when loading (default 1000; 0 = all of an "
        "organization's events in one statement, which the chain trigger makes "
        "quadratic: ~30 s for 40,000 here)",
    )
    parser.add_argument(
        "--warmup-events",
        type=int,
        default=2000,
        help="events exported and verified once, unreported, before measuring, so "
        "one-time costs (imports, code paths, pool connections) do not count against "
        "the first size (default 2000; 0 = no warm-up)",
    )
    parser.add_argument(
        "--server-log",
        default=os.devnull,
        help="where the vault's JSON log lines go (default: discarded)",
    )
    return parser


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--sizes: not a list of integers: {text!r}") from None
    if not sizes or any(n < 1 for n in sizes):
        raise SystemExit("--sizes: give one or more positive integers")
    return sizes


# -- client process ----------------------------------------------------------------------


async def _client(config: dict[str, Any]) -> None:
    """Run one export or verify when told to go; report what this process measured."""
    async with grpc.aio.insecure_channel(config["address"]) as channel:
        await channel.channel_ready()
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        metadata = h.auth(config["key"])
        org = config["organization_id"]
        meter = h.PeakRss()
        h.emit({"event": "ready"})
        await h.receive_line()
        meter.start()
        cpu0 = h.cpu_seconds()
        started = time.perf_counter()
        result: dict[str, Any] = {"event": "result"}
        if config["op"] == "export":
            events = batches = wire_bytes = 0
            first_batch_s = 0.0
            next_sequence = 1
            call = stub.ExportAuditEvents(
                audit_pb2.ExportAuditEventsRequest(organization_id=org), metadata=metadata
            )
            async for message in call:
                if not batches:
                    first_batch_s = time.perf_counter() - started
                batches += 1
                count = len(message.events)
                if count and message.events[0].sequence != next_sequence:
                    raise RuntimeError(f"batch {batches} does not start at {next_sequence}")
                next_sequence += count
                events += count
                wire_bytes += message.ByteSize()
            result.update(
                events=events,
                batches=batches,
                bytes=wire_bytes,
                first_batch_s=first_batch_s,
            )
        else:
            answer = await stub.VerifyAuditChain(
                audit_pb2.VerifyAuditChainRequest(organization_id=org), metadata=metadata
            )
            if not answer.ok:
                raise RuntimeError(f"chain does not verify: {answer.problem}")
            result.update(events=answer.event_count)
        result.update(
            seconds=time.perf_counter() - started,
            cpu_s=h.cpu_seconds() - cpu0,
            peak_growth=await meter.stop(),
            rss_method=meter.method,
        )
        h.emit(result)


# -- driver ------------------------------------------------------------------------------


async def _load(owner_dsn: str, organization_id: str, count: int, chunk: int) -> tuple[float, int]:
    """Insert ``count`` chained events for one organization as the schema owner;
    returns the seconds it took and the chain's length (its creation is an event too)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(owner_dsn)
    try:
        left = count
        while left:
            n = left if chunk <= 0 else min(chunk, left)
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('singura.organization_id', $1, true)", organization_id
                )
                await conn.execute(INSERT_EVENTS, uuid.UUID(organization_id), n)
            left -= n
        await h.chain_pending_audit(conn)
        seconds = time.perf_counter() - started
        length = await conn.fetchval(
            "SELECT last_seq FROM singura.audit_chain_heads WHERE chain_key = $1",
            uuid.UUID(organization_id),
        )
    finally:
        await conn.close()
    return seconds, int(length)


async def _measure(pg: h.Postgres, vault: h.Vault, op: str, org: str) -> dict[str, Any]:
    """One export or verify by a client process, with this (server) process metered."""
    config = {"op": op, "address": vault.address, "key": vault.admin_key, "organization_id": org}
    async with h.ClientProcess.running(__file__, config) as client:
        await client.expect("ready")
        meter = h.PeakRss()
        meter.start()
        rss_before = meter.baseline
        cpu0, pg_cpu0 = h.cpu_seconds(), h.process_tree_cpu_seconds(pg.postmaster_pid())
        await client.send({"event": "go"})
        result = await client.expect("result")
        result["server_cpu_s"] = h.cpu_seconds() - cpu0
        result["pg_cpu_s"] = h.process_tree_cpu_seconds(pg.postmaster_pid()) - pg_cpu0
        result["server_peak_growth"] = await meter.stop()
        result["server_rss_before"] = rss_before
        result["server_rss_method"] = meter.method
    return result


async def _new_org(vault: h.Vault, channel: grpc.aio.Channel) -> str:
    organization = await h.create_organization(
        channel, h.auth(vault.admin_key), uuid.uuid4().hex[:10]
    )
    return str(organization.id)


async def _main(args: argparse.Namespace, pg: h.Postgres) -> None:
    sizes = _sizes(args.sizes)
    pg_version = await h.postgres_version(pg)
    export_rows: list[list[object]] = []
    verify_rows: list[list[object]] = []
    methods: set[str] = set()
    async with (
        h.running_vault(pg, PoolSettings()) as vault,
        grpc.aio.insecure_channel(vault.address) as channel,
    ):
        if args.warmup_events > 0:
            org = await _new_org(vault, channel)
            await _load(pg.owner_dsn, org, args.warmup_events, args.insert_chunk)
            await _measure(pg, vault, "export", org)
            await _measure(pg, vault, "verify", org)
        for n in sizes:
            org = await _new_org(vault, channel)
            print(f"loading {n:,} events ...", file=sys.stderr, flush=True)
            insert_s, length = await _load(pg.owner_dsn, org, n, args.insert_chunk)
            print(f"exporting {n:,} events ...", file=sys.stderr, flush=True)
            export = await _measure(pg, vault, "export", org)
            if export["events"] != length:
                raise RuntimeError(f"exported {export['events']} events, expected {length}")
            print(f"verifying {n:,} events ...", file=sys.stderr, flush=True)
            verify = await _measure(pg, vault, "verify", org)
            if verify["events"] != length:
                raise RuntimeError(f"verified {verify['events']} events, expected {length}")
            methods.update((export["rss_method"], export["server_rss_method"]))
            export_rows.append(
                [
                    length,
                    insert_s,
                    export["seconds"],
                    length / export["seconds"],
                    export["first_batch_s"] * 1000,
                    export["batches"],
                    export["bytes"] / h.MIB,
                    export["server_cpu_s"],
                    export["pg_cpu_s"],
                    export["server_rss_before"] / h.MIB,
                    export["server_peak_growth"] / h.MIB,
                    export["peak_growth"] / h.MIB,
                ]
            )
            verify_rows.append(
                [
                    length,
                    verify["seconds"],
                    length / verify["seconds"],
                    verify["server_cpu_s"],
                    verify["pg_cpu_s"],
                    verify["server_peak_growth"] / h.MIB,
                ]
            )
    print()
    print(h.machine_summary(pg_version))
    chunk = "one statement" if args.insert_chunk <= 0 else f"{args.insert_chunk:,} per transaction"
    print(
        f"load: INSERT ... generate_series as singura_owner, {chunk}; "
        f"warm-up: {args.warmup_events:,} events; peak RSS by {' and '.join(sorted(methods))}"
    )
    print()
    print("ExportAuditEvents (client in a separate process)")
    print(
        h.table(
            [
                "events",
                "load s",
                "export s",
                "events/s",
                "1st batch ms",
                "batches",
                "MiB sent",
                "server CPU s",
                "PG CPU s",
                "server RSS MiB",
                "server peak +MiB",
                "client peak +MiB",
            ],
            export_rows,
        )
    )
    print()
    print("VerifyAuditChain")
    print(
        h.table(
            ["events", "verify s", "events/s", "server CPU s", "PG CPU s", "server peak +MiB"],
            verify_rows,
        )
    )


def main() -> int:
    if sys.argv[1:2] == ["--client"]:
        return h.client_main(_client)
    args = _parser().parse_args()
    _sizes(args.sizes)  # fail before starting PostgreSQL
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
