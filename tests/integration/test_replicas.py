"""Reads from a replica (DATABASE_REPLICA_URL, docs/high-availability.md): metadata
reads may be answered by a hot standby that is current within SINGURA_REPLICA_MAX_LAG;
a caller's consistency token skips a replica behind its write; writes and reveals
always go to the primary; row-level security holds on the replica as on the primary.

The standby's replay is paused (pg_wal_replay_pause) to make it fall behind on cue."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.config.environment import load_settings
from singura_vault.db.pool import Database
from singura_vault.db.setup import SERVICE_ROLE
from singura_vault.errors import ConfigError
from singura_vault.process import attach_replica, check_production_transport
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.canaries import canary
from tests.support.credentials import reveal, store
from tests.support.messages import org_message
from tests.support.replication import Replicated, replicated_postgres, superuser_dsn
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Vault, start_vault, stop_vault

POOL = PoolSettings(min_size=1, max_size=4, connect_timeout_ms=2000, query_timeout_ms=5000)
TOKEN = "x-consistency-token"


@pytest.fixture
async def pair() -> AsyncIterator[Replicated]:
    async with replicated_postgres(synchronous=False) as replicated:
        yield replicated


@asynccontextmanager
async def replica_vault(
    pair: Replicated, key_manager: keys.KeyManager, max_lag_s: float
) -> AsyncIterator[tuple[Vault, Database]]:
    db = await Database.connect(pair.url(SERVICE_ROLE, pair.primary), POOL)
    db.attach_replica(await Database.connect(pair.url(SERVICE_ROLE, pair.standby), POOL), max_lag_s)
    vault = await start_vault(
        Components(db, key_manager=key_manager, access=build_access(db, os.urandom(32)))
    )
    try:
        yield vault, db
    finally:
        await stop_vault(vault)
        await db.close()


async def replay(pair: Replicated, *, paused: bool) -> None:
    conn = await asyncpg.connect(superuser_dsn(pair.standby.cluster()))
    try:
        await conn.execute(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")
    finally:
        await conn.close()


async def until(predicate: Callable[[], bool]) -> None:
    """Until ``predicate`` holds: the vault's freshness sample is polled (it moves on
    a timer, with nothing to wait on), within 30 s."""
    async with asyncio.timeout(30):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


async def until_current(db: Database, within_s: float) -> None:
    """Until the vault knows the replica to be current within ``within_s``."""

    def current() -> bool:
        staleness = db.replica_staleness_s
        return staleness is not None and staleness <= within_s

    await until(current)


async def rename(vault: Vault, org: str, conn: str, name: str) -> str:
    """UpdateConnection's display name; returns the consistency token it sent back."""
    call = vault.connections.UpdateConnection(
        cpb.UpdateConnectionRequest(
            connection=cpb.Connection(id=conn, organization_id=org, display_name=name),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    )
    await call
    trailers = dict(await call.trailing_metadata() or ())
    token = trailers.get(TOKEN)
    assert isinstance(token, str)
    return token


async def name_of(vault: Vault, org: str, conn: str, token: str | None = None) -> str:
    metadata = ((TOKEN, token),) if token is not None else ()
    reply = await vault.connections.GetConnection(
        cpb.GetConnectionRequest(organization_id=org, connection_id=conn), metadata=metadata
    )
    return reply.connection.display_name


async def test_reads_come_from_a_current_replica_and_a_token_skips_one_behind(
    pair: Replicated, key_manager: keys.KeyManager
) -> None:
    """Reads are served by a replica within the lag bound, and a consistency token newer than the
    replica's replay sends the read to the primary."""
    async with replica_vault(pair, key_manager, max_lag_s=30.0) as (vault, db):
        org, conn = await tenant(vault)
        value = canary("on-primary")
        await store(vault, org, conn, canary("first"))
        await rename(vault, org, conn, "before")
        await pair.wait_for_replay()
        await until_current(db, within_s=1.0)
        await replay(pair, paused=True)
        try:
            token = await rename(vault, org, conn, "after")
            await store(vault, org, conn, value)
            # Within SINGURA_REPLICA_MAX_LAG the replica answers, with what it has.
            assert await name_of(vault, org, conn) == "before"
            # The writer's token names a position the replica has not replayed.
            assert await name_of(vault, org, conn, token) == "after"
            # Reveals (audited) read the primary, whatever the replica lags.
            assert await reveal(vault, org, conn) == value
            await expect_status(
                name_of(vault, org, conn, "yesterday"),
                grpc.StatusCode.INVALID_ARGUMENT,
                TOKEN,
            )
        finally:
            await replay(pair, paused=False)


async def test_a_replica_behind_the_bound_is_not_read(
    pair: Replicated, key_manager: keys.KeyManager
) -> None:
    """A replica whose replay is paused beyond the lag bound is not read from: reads see the
    primary's fresh writes."""
    async with replica_vault(pair, key_manager, max_lag_s=0.2) as (vault, db):
        org, conn = await tenant(vault)
        await pair.wait_for_replay()
        await until_current(db, within_s=0.2)
        await replay(pair, paused=True)
        try:
            await rename(vault, org, conn, "fresh")
            # Until the paused replica falls out of the bound.
            await until(lambda: (db.replica_staleness_s or 0.0) > 0.2)
            assert await name_of(vault, org, conn) == "fresh"
        finally:
            await replay(pair, paused=False)


async def test_row_level_security_holds_on_the_replica(
    pair: Replicated, key_manager: keys.KeyManager
) -> None:
    """An organization key reading through the replica sees only its tenant; the
    service role on the standby sees no tenant row outside a scope."""
    async with replica_vault(pair, key_manager, max_lag_s=30.0) as (vault, db):
        org_a, conn_a = await tenant(vault)
        org_b = (
            await vault.organizations.CreateOrganization(
                opb.CreateOrganizationRequest(organization=org_message())
            )
        ).organization.id
        reader = (
            await vault.access.CreateApiKey(
                apb.CreateApiKeyRequest(
                    organization_id=org_b, name="reader", roles=[apb.API_KEY_ROLE_READER]
                )
            )
        ).secret
        await pair.wait_for_replay()
        await until_current(db, within_s=1.0)
        await replay(pair, paused=True)  # so that nothing below can be a primary read
        try:
            as_b = vault.as_key(reader)
            await expect_status(
                as_b.connections.GetConnection(
                    cpb.GetConnectionRequest(organization_id=org_b, connection_id=conn_a)
                ),
                grpc.StatusCode.NOT_FOUND,
            )
            listed = await as_b.connections.ListConnections(
                cpb.ListConnectionsRequest(organization_id=org_b)
            )
            assert list(listed.connections) == []
            assert await name_of(vault, org_a, conn_a) != ""  # the row is on the replica
        finally:
            await replay(pair, paused=False)
    standby = await asyncpg.connect(pair.url(SERVICE_ROLE, pair.standby))
    try:
        assert await standby.fetchval("SELECT count(*) FROM singura.platform_connections") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await standby.execute(
                "SET row_security = off; SELECT * FROM singura.platform_connections"
            )
    finally:
        await standby.close()


def test_replica_settings() -> None:
    """DATABASE_REPLICA_URL and SINGURA_REPLICA_MAX_LAG are loaded into the settings."""
    primary = "postgresql://vault@db1/singura"
    settings = load_settings(
        {
            "DATABASE_URL": primary,
            "DATABASE_REPLICA_URL": "postgresql://vault@db2/singura",
            "SINGURA_REPLICA_MAX_LAG": "500ms",
        }
    )
    assert settings.database_replica_url == "postgresql://vault@db2/singura"
    assert settings.replica_max_lag_s == 0.5
    assert load_settings({"DATABASE_URL": primary}).replica_max_lag_s == 1.0
    with pytest.raises(ConfigError, match="DATABASE_REPLICA_URL is set but DATABASE_URL is not"):
        load_settings({"DATABASE_REPLICA_URL": "postgresql://vault@db2/singura"})


async def test_a_replica_login_that_bypasses_row_level_security_is_refused(
    pair: Replicated, db: Database
) -> None:
    """As DATABASE_URL's: the standby's superuser would read every tenant."""
    settings = load_settings({"DATABASE_URL": "postgresql://vault@db1/singura"})
    superuser = pair.url(pair.standby.cluster().superuser, pair.standby)
    with pytest.raises(ConfigError, match="DATABASE_REPLICA_URL connects as role"):
        await attach_replica(db, superuser, settings)


def test_production_needs_tls_to_the_replica_too() -> None:
    """In production a replica URL without verified TLS is refused by name, and one with
    sslmode=verify-full is accepted."""
    env = {
        "SINGURA_ENV": "production",
        "DATABASE_URL": "postgresql://vault@db1/singura?sslmode=verify-full",
        "DATABASE_REPLICA_URL": "postgresql://vault@db2/singura",
    }
    with pytest.raises(ConfigError, match="DATABASE_REPLICA_URL"):
        check_production_transport(load_settings(env), tls_enabled=True)
    secure = {**env, "DATABASE_REPLICA_URL": env["DATABASE_REPLICA_URL"] + "?sslmode=verify-full"}
    check_production_transport(load_settings(secure), tls_enabled=True)
