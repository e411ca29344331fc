"""Benchmark: webhook delivery latency on loopback, and the events/s the outbox sustains
beside a store load, with deliveries keeping up (or not).

Setup: a vault (embedded PostgreSQL, composition as `serve` builds it, its webhook
delivery worker on) and a receiver on loopback (aiohttp, in this process: it shares
the vault's event loop, so the figures include that contention) that answers 200 at
once. One organization with one endpoint (every type) and one Slack connection.

1. Latency: ``--latency-events`` StoreCredential calls, one at a time; each store's
   credential.stored event is delivered; latency = the receiver's arrival time minus
   the moment the store call returned (so commit -> wake -> claim -> open secret ->
   sign -> POST). p50/p99/max.
2. Throughput: ``--concurrency`` stores in flight for ``--duration`` seconds; events
   committed per second (the outbox), deliveries received per second, and the backlog
   left when the load stops (then the time to drain it).

    python bench/webhooks.py
    python bench/webhooks.py --concurrency 32 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import _harness as h
import grpc
from aiohttp import web

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings, WebhookSettings
from singura_vault.db.pool import Database
from singura_vault.db.setup import apply_migrations, bootstrap_embedded_roles
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc
from singura_vault.proto.singura.vault.v1 import webhooks_pb2 as wpb
from singura_vault.proto.singura.vault.v1 import webhooks_pb2_grpc as wgrpc
from singura_vault.server import VaultServer


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.count = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.changed = asyncio.Condition()

    async def until(self, done: Callable[[], bool]) -> None:
        async with self.changed:
            await self.changed.wait_for(done)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.count += 1
        credential = body["data"].get("credential_id")
        if credential:
            self.arrivals.setdefault(credential, time.perf_counter())
        async with self.changed:
            self.changed.notify_all()
        return web.Response(text="ok")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _main(args: argparse.Namespace, pg: h.Postgres) -> None:
    await bootstrap_embedded_roles(pg.superuser_dsn)
    await apply_migrations(pg.owner_dsn)
    db = await Database.connect(pg.service_dsn, PoolSettings(min_size=4, max_size=args.pool))
    receiver = Receiver()
    await receiver.start()
    access = build_access(db, os.urandom(32))
    admin_key = h.new_key_text()
    await access.bootstrap_admin_key(Path("/nonexistent"), admin_key)
    key_manager = keys.KeyManager(
        keys.LocalKeyring.from_encryption_key(keys.generate_encryption_key())
    )
    components = Components(
        db, key_manager=key_manager, access=access, webhooks=WebhookSettings(interval_s=0.5)
    )
    server = VaultServer(components)
    port = await server.start("127.0.0.1:0")
    admin = h.auth(admin_key)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            org = await h.create_organization(channel, admin, os.urandom(4).hex())
            connection = await h.create_connection(channel, admin, org.id, "U1")
            await wgrpc.WebhookServiceStub(channel).CreateWebhookEndpoint(
                wpb.CreateWebhookEndpointRequest(organization_id=org.id, url=receiver.url),
                metadata=admin,
            )
            store = crgrpc.CredentialServiceStub(channel).StoreCredential

            async def one() -> tuple[str, float]:
                response = await store(
                    crpb.StoreCredentialRequest(
                        organization_id=org.id,
                        connection_id=connection.id,
                        type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                        value="xoxb-" + os.urandom(16).hex(),
                    ),
                    metadata=admin,
                )
                return response.credential.id, time.perf_counter()

            # 1. latency, one store at a time
            sent: dict[str, float] = {}
            for _ in range(args.latency_events):
                credential, at = await one()
                sent[credential] = at
                await receiver.until(lambda c=credential: c in receiver.arrivals)
            latencies = sorted(receiver.arrivals[c] - sent[c] for c in sent)

            # 2. throughput beside a store load
            before_events = receiver.count
            stop_at = time.perf_counter() + args.duration
            stored = 0

            async def loader() -> None:
                nonlocal stored
                while time.perf_counter() < stop_at:
                    await one()
                    stored += 1

            started = time.perf_counter()
            await asyncio.gather(*(loader() for _ in range(args.concurrency)))
            elapsed = time.perf_counter() - started
            delivered_during = receiver.count - before_events
            drain_started = time.perf_counter()
            await receiver.until(lambda: receiver.count - before_events >= stored)
            drain = time.perf_counter() - drain_started
    finally:
        await server.stop(0)
        await receiver.stop()
        await db.close()

    print(h.machine_summary(await h.postgres_version(pg)))
    print()
    print(
        h.table(
            ["delivery latency (store returned -> received)", "p50 ms", "p99 ms", "max ms"],
            [
                [
                    f"{len(latencies)} events, one at a time",
                    f"{h.percentile(latencies, 0.5) * 1000:.2f}",
                    f"{h.percentile(latencies, 0.99) * 1000:.2f}",
                    f"{latencies[-1] * 1000:.2f}",
                ]
            ],
        )
    )
    print()
    print(
        h.table(
            ["store load", "events/s (outbox)", "deliveries/s during", "backlog at end", "drain s"],
            [
                [
                    f"{args.concurrency} in flight, {elapsed:.1f} s",
                    f"{stored / elapsed:.0f}",
                    f"{delivered_during / elapsed:.0f}",
                    stored - delivered_during,
                    f"{drain:.2f}",
                ]
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--latency-events", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--server-log", default=os.devnull)
    args = parser.parse_args()
    h.quiet_server_logs(args.server_log)
    with h.embedded_postgres() as pg:
        h.run(_main(args, pg))


if __name__ == "__main__":
    main()
