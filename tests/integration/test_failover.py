"""A primary failover under load (docs/high-availability.md): the vault follows a
multi-host DATABASE_URL to the promoted standby by itself, in-flight calls fail
UNAVAILABLE and succeed when retried with their request_id, health goes NOT_SERVING
and back, and with synchronous replication no acknowledged store is lost."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.db.setup import SERVICE_ROLE
from singura_vault.errors import Unavailable
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.server import VaultServer
from tests.support.auth import bearer
from tests.support.canaries import canary
from tests.support.credentials import reveal, store
from tests.support.replication import Replicated, replicated_postgres
from tests.support.status import expect_status
from tests.support.store_load import (
    ACCESS,
    Ledger,
    check_every_store_survived,
    tenant_with_connections,
    writer,
)
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault, start_vault, stop_vault

WRITERS = 4
BEFORE = 40  # acknowledged stores before the primary is killed ...
AFTER = 40  # ... and after the standby is promoted
LOAD_TIMEOUT_S = 120.0
POOL = PoolSettings(min_size=1, max_size=4, connect_timeout_ms=2000, query_timeout_ms=5000)


@pytest.fixture
async def pair() -> AsyncIterator[Replicated]:
    async with replicated_postgres(synchronous=True) as replicated:
        yield replicated


@pytest.fixture
async def failover_vault(pair: Replicated, key_manager: keys.KeyManager) -> AsyncIterator[Vault]:
    """A vault whose DATABASE_URL names the primary, then the standby."""
    url = pair.url(SERVICE_ROLE, pair.primary, pair.standby, target_session_attrs="read-write")
    db = await Database.connect(url, POOL)
    vault = await start_vault(
        Components(db, key_manager=key_manager, access=build_access(db, os.urandom(32)))
    )
    yield vault
    await stop_vault(vault)
    await db.close()


@dataclass
class HealthLog:
    seen: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def watch(self, vault: Vault) -> None:
        stub = health_pb2_grpc.HealthStub(vault.channel)
        async for reply in stub.Watch(health_pb2.HealthCheckRequest(service="")):
            if not self.seen or self.seen[-1] != reply.status:
                self.seen.append(reply.status)
                self.changed.set()

    async def until(self, status: int) -> None:
        while not self.seen or self.seen[-1] != status:
            self.changed.clear()
            await self.changed.wait()


async def test_failover_to_a_synchronous_standby_loses_no_acknowledged_store(
    pair: Replicated, failover_vault: Vault
) -> None:
    """After the primary is killed and a synchronous standby promoted, every store the vault
    acknowledged is still there and writes resume."""
    vault = failover_vault
    org, conns = await tenant_with_connections(vault, WRITERS)
    health = HealthLog()
    watching = asyncio.create_task(health.watch(vault))
    ledger, stop = Ledger(), asyncio.Event()
    writers = [asyncio.create_task(writer(vault, org, conn, ledger, stop)) for conn in conns]
    try:
        async with asyncio.timeout(LOAD_TIMEOUT_S):
            await ledger.until(BEFORE)
            pair.kill_primary()
            await ledger.refused.wait()  # the clients felt it
            killed_at = len(ledger.acknowledged)
            await pair.promote_standby()
            await ledger.until(killed_at + AFTER)
            stop.set()
            await asyncio.gather(*writers)
            await health.until(health_pb2.HealthCheckResponse.SERVING)
    finally:
        stop.set()
        for task in (*writers, watching):
            task.cancel()
        await asyncio.gather(*writers, watching, return_exceptions=True)

    # Refusals during the failover are UNAVAILABLE only: retryable, never INTERNAL.
    assert ledger.codes, "no call was refused: the failover was not exercised"
    assert set(ledger.codes) == {grpc.StatusCode.UNAVAILABLE}, set(ledger.codes)
    # Every acknowledged store is on the promoted standby, exactly once per request.
    await check_every_store_survived(vault, org, conns, ledger)
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert health.seen[0] == serving, health.seen
    assert not_serving in health.seen, health.seen


async def test_a_vault_that_reaches_only_a_standby_reads_and_refuses_writes(
    pair: Replicated, key_manager: keys.KeyManager
) -> None:
    """A read-only server (a standby, or a primary demoted under the vault) is
    UNAVAILABLE for writes, and for reveals, whose audit event cannot be written: no
    plaintext leaves. Reads answer. A read-write URL with no primary in it says so."""
    secret = os.urandom(32)
    primary_db = await Database.connect(pair.url(SERVICE_ROLE, pair.primary), POOL)
    primary_vault = await start_vault(
        Components(primary_db, key_manager=key_manager, access=build_access(primary_db, secret))
    )
    standby_db = await Database.connect(pair.url(SERVICE_ROLE, pair.standby), POOL)
    server = VaultServer(
        Components(standby_db, key_manager=key_manager, access=build_access(standby_db, secret))
    )
    channel: grpc.aio.Channel | None = None
    try:
        org, conn = await tenant(primary_vault)
        await store(primary_vault, org, conn, canary("replicated"))
        await pair.wait_for_replay()
        port = await server.start("127.0.0.1:0")
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=bearer(primary_vault.admin_key)
        )
        standby = Stubs.on(channel)
        got = await standby.organizations.GetOrganization(
            opb.GetOrganizationRequest(organization_id=org)
        )
        assert got.organization.id == org
        await expect_status(
            standby.credentials.StoreCredential(
                crpb.StoreCredentialRequest(
                    organization_id=org, connection_id=conn, type=ACCESS, value=canary("refused")
                )
            ),
            grpc.StatusCode.UNAVAILABLE,
            "became read-only",
        )
        refused = await expect_status(
            reveal(standby, org, conn), grpc.StatusCode.UNAVAILABLE, "became read-only"
        )
        assert "canary-" not in refused
    finally:
        if channel is not None:
            await channel.close()
        await server.stop(0)
        await standby_db.close()
        await stop_vault(primary_vault)
        await primary_db.close()
    no_primary = pair.url(SERVICE_ROLE, pair.standby, target_session_attrs="read-write")
    with pytest.raises(Unavailable, match="no host in DATABASE_URL accepts writes"):
        await Database.connect(no_primary, POOL)
