"""The vault behind PgBouncer in transaction pooling mode (docs/operations.md#behind-pgbouncer).

A real PgBouncer (Debian's 1.18) sits between the vault and the tests' PostgreSQL with a
server pool of DEFAULT_POOL_SIZE connections, smaller than the `serve` processes' client
pools together (PROCESSES x POOL_MAX): every statement outside a transaction may land
on another server connection than the one before. The core paths must still hold:
tenant isolation under row-level security, reveals with their audit events and the
sequencer's chain, key-cache invalidation (LISTEN over DATABASE_LISTEN_URL, direct),
and one OAuth refresh across processes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
import grpc
import pytest

from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.db.setup import SERVICE_ROLE
from singura_vault.errors import VaultError
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.audit import all_events, verify
from tests.support.auth import bearer, new_key_text
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, reveal, store
from tests.support.messages import org_message
from tests.support.oauth import get_token, link
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.pgbouncer import PgBouncer, pooled_role_defaults, running_pgbouncer
from tests.support.polling import first_refusal
from tests.support.postgres import PostgresServer
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Stubs
from tests.support.vault_process import serve_process_handle

DEFAULT_POOL_SIZE = 3
POOL_MAX = 4
PROCESSES = 3
assert PROCESSES * POOL_MAX > DEFAULT_POOL_SIZE  # the point of these tests
POOLED = "pgbouncer-transaction"


@pytest.fixture
def pgbouncer(postgres: PostgresServer) -> Iterator[PgBouncer]:
    with running_pgbouncer(
        postgres.superuser_dsn, [SERVICE_ROLE], default_pool_size=DEFAULT_POOL_SIZE
    ) as bouncer:
        yield bouncer


@pytest.fixture
async def pooled_dsn(postgres: PostgresServer, database_name: str, pgbouncer: PgBouncer) -> str:
    """The service role through PgBouncer, its session settings made role defaults as
    docs/operations.md says."""
    await pooled_role_defaults(postgres.superuser_dsn, SERVICE_ROLE, database_name, PoolSettings())
    return pgbouncer.dsn(SERVICE_ROLE, database_name)


@asynccontextmanager
async def vaults_behind_pgbouncer(
    count: int,
    pooled_dsn: str,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
    logs: list[list[str]] | None = None,
) -> AsyncIterator[tuple[str, list[Stubs]]]:
    """``count`` `serve` processes through PgBouncer (LISTEN direct); yields the admin
    key and stubs on each, authenticated with it."""
    admin_key = new_key_text()
    env = {
        "DATABASE_POOLER": POOLED,
        "DATABASE_LISTEN_URL": service_dsn,
        "DB_POOL_MAX": str(POOL_MAX),
        "DB_POOL_MIN": "1",
    }
    async with AsyncExitStack() as stack:
        stubs = []
        for _ in range(count):
            log: list[str] = []
            if logs is not None:
                logs.append(log)
            address, _ = await stack.enter_async_context(
                serve_process_handle(admin_key, pooled_dsn, auth_secret, root_key, log=log, **env)
            )
            channel = grpc.aio.insecure_channel(address, interceptors=bearer(admin_key))
            stack.push_async_callback(channel.close)
            stubs.append(Stubs.on(channel))
        yield admin_key, stubs


async def backends(superuser_dsn: str, database: str) -> tuple[int, int]:
    """(LISTEN connections, other connections) of the service role on ``database``."""
    conn = await asyncpg.connect(superuser_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE application_name = 'singura-vault-listener') AS l,"
            "       count(*) FILTER (WHERE application_name <> 'singura-vault-listener') AS o"
            "  FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
            database,
            SERVICE_ROLE,
        )
    finally:
        await conn.close()
    assert row is not None
    return row["l"], row["o"]


# -- the driver through a transaction pooler --------------------------------------------


async def test_the_pool_goes_through_pgbouncer_only_when_the_pooler_is_declared(
    pooled_dsn: str,
) -> None:
    """Without DATABASE_POOLER the pool sends session settings PgBouncer refuses at
    login; declared, it connects and its connections carry the role defaults."""
    with pytest.raises(VaultError):
        await Database.connect(pooled_dsn, PoolSettings(min_size=1, max_size=2))
    db = await Database.connect(pooled_dsn, PoolSettings(min_size=1, max_size=2, pooler=POOLED))
    try:
        row = await db.fetchrow_unscoped(
            "SELECT current_schemas(false) AS schemas, current_setting('statement_timeout') AS st"
        )
        assert row is not None
        assert (row["schemas"], row["st"]) == (["singura"], "1min")
    finally:
        await db.close()


async def test_a_cached_statement_is_looked_for_on_another_server_connection(
    pooled_dsn: str,
) -> None:
    """Why the statement cache is off behind the pooler: a named statement prepared on
    one server connection is missing on the next one PgBouncer hands out. Unnamed ones
    (cache off) are parsed again in the packet that runs them, on whichever server."""
    for cache_size, fails in ((100, True), (0, False)):
        first = await asyncpg.connect(pooled_dsn, statement_cache_size=cache_size)
        other = await asyncpg.connect(pooled_dsn, statement_cache_size=cache_size)
        try:
            assert await first.fetchval("SELECT $1::int", 1) == 1
            # The other client takes the only idle server connection, the one that
            # holds the first client's statement, so the first one gets a new server.
            async with other.transaction():
                await other.fetchval("SELECT 1")
                if fails:
                    with pytest.raises(asyncpg.InvalidSQLStatementNameError):
                        await first.fetchval("SELECT $1::int", 2)
                else:
                    assert await first.fetchval("SELECT $1::int", 2) == 2
        finally:
            await first.close()
            await other.close()


async def test_unnamed_statements_survive_transaction_pooling_under_contention(
    pooled_dsn: str,
) -> None:
    """Many clients on a few server connections, single statements outside any
    transaction with parameters of several shapes: each gets its own answer (asyncpg's
    Parse/Describe/Flush keeps the server linked until its Bind/Execute/Sync)."""
    db = await Database.connect(pooled_dsn, PoolSettings(min_size=12, max_size=12, pooler=POOLED))

    async def client(n: int) -> None:
        for i in range(40):
            if i % 2:
                assert await db.fetch_unscoped("SELECT $1::int * 1000 + $2::int", n, i) == [
                    (n * 1000 + i,)
                ]
            else:
                rows = await db.fetch_unscoped("SELECT $1::text || ':' || $2::uuid", str(n), u)
                assert rows == [(f"{n}:{u}",)]

    u = uuid.uuid4()
    try:
        await asyncio.gather(*(client(n) for n in range(12)))
    finally:
        await db.close()


# -- several serve processes behind one PgBouncer ---------------------------------------


async def test_tenants_stay_apart_through_shared_server_connections(
    postgres: PostgresServer,
    database_name: str,
    pooled_dsn: str,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> None:
    """Two organizations' keys, interleaved over three processes and three server
    connections: each reveal returns its own tenant's value, a key never reaches the
    other tenant, and PostgreSQL sees PgBouncer's pool plus one LISTEN per process."""
    async with vaults_behind_pgbouncer(
        PROCESSES, pooled_dsn, service_dsn, auth_secret, root_key
    ) as (_, stubs):
        admin = stubs[0]
        tenants = []
        for name in ("a", "b"):
            org, conn = await tenant(admin)
            value = canary(f"pgbouncer-tenant-{name}")
            await store(admin, org, conn, value)
            key = (
                await admin.access.CreateApiKey(
                    apb.CreateApiKeyRequest(
                        organization_id=org,
                        roles=[apb.API_KEY_ROLE_READER, apb.API_KEY_ROLE_REVEALER],
                        name="pgbouncer",
                    )
                )
            ).secret
            tenants.append((org, conn, value, (("authorization", f"Bearer {key}"),)))
        (org_a, conn_a, value_a, key_a), (org_b, conn_b, _, key_b) = tenants

        async def reveals(process: Stubs, org: str, conn: str, value: str, key: object) -> None:
            for _ in range(12):
                response = await process.credentials.RevealCredential(
                    crpb.RevealCredentialRequest(
                        organization_id=org, connection_id=conn, type=ACCESS
                    ),
                    metadata=key,
                )
                assert response.value == value

        await asyncio.gather(
            *(
                reveals(process, org, conn, value, key)
                for process in stubs
                for org, conn, value, key in tenants
                for _ in range(2)
            )
        )
        for process in stubs:
            # A's key names B's connection, or lists B's organization: nothing of B's.
            await expect_status(
                process.credentials.RevealCredential(
                    crpb.RevealCredentialRequest(
                        organization_id=org_b, connection_id=conn_b, type=ACCESS
                    ),
                    metadata=key_a,
                ),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            listed = await process.connections.ListConnections(
                cpb.ListConnectionsRequest(organization_id=org_a), metadata=key_a
            )
            assert [c.id for c in listed.connections] == [conn_a]
            await expect_status(
                process.organizations.GetOrganization(
                    opb.GetOrganizationRequest(organization_id=org_a), metadata=key_b
                ),
                grpc.StatusCode.PERMISSION_DENIED,
            )
        assert value_a != tenants[1][2]
        listeners, others = await backends(postgres.superuser_dsn, database_name)
        assert listeners == PROCESSES
        assert others <= DEFAULT_POOL_SIZE


async def test_reveals_are_audited_and_chained_through_pgbouncer(
    pooled_dsn: str, service_dsn: str, auth_secret: bytes, root_key: str
) -> None:
    """Concurrent reveals of one organization through three processes (three
    sequencers) behind PgBouncer: one event per reveal and a chain that verifies."""
    async with vaults_behind_pgbouncer(
        PROCESSES, pooled_dsn, service_dsn, auth_secret, root_key
    ) as (_, stubs):
        org, conn = await tenant(stubs[0])
        value = canary("pgbouncer-audit")
        await store(stubs[1], org, conn, value)

        async def reveals(process: Stubs) -> None:
            for _ in range(8):
                assert await reveal(process, org, conn) == value

        await asyncio.gather(*(reveals(process) for process in stubs for _ in range(3)))
        # The sequencers chain what is pending a moment after each commit (polled).
        for _ in range(3000):
            result = await verify(stubs[2], org)
            assert result.ok, result.problem
            if not result.pending_event_count:
                break
            await asyncio.sleep(0.01)
        assert result.pending_event_count == 0
        events = await all_events(stubs[0], org)
        assert [e.action for e in events].count("credential.revealed") == 8 * 3 * PROCESSES
        assert sorted(e.sequence for e in events) == list(range(1, result.event_count + 1))


async def test_a_revocation_reaches_another_process_over_the_direct_listen_url(
    pooled_dsn: str, service_dsn: str, auth_secret: bytes, root_key: str
) -> None:
    """A key revoked through one process is refused by another that had it cached for
    300 s: the change notification arrived over DATABASE_LISTEN_URL, not the pooler."""
    logs: list[list[str]] = []
    async with vaults_behind_pgbouncer(2, pooled_dsn, service_dsn, auth_secret, root_key, logs) as (
        _,
        (first, second),
    ):
        org = (
            await first.organizations.CreateOrganization(
                opb.CreateOrganizationRequest(organization=org_message())
            )
        ).organization.id
        key = (
            await first.access.CreateApiKey(
                apb.CreateApiKeyRequest(
                    organization_id=org, roles=[apb.API_KEY_ROLE_READER], name="pgbouncer"
                )
            )
        ).secret
        metadata = (("authorization", f"Bearer {key}"),)
        request = opb.GetOrganizationRequest(organization_id=org)
        assert (
            await second.organizations.GetOrganization(request, metadata=metadata)
        ).organization.id == org
        await first.access.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=key[4:20]))
        refused = await first_refusal(
            lambda: second.organizations.GetOrganization(request, metadata=metadata)
        )
        assert refused == grpc.StatusCode.UNAUTHENTICATED
    # The caches stayed live until the processes were told to stop: the refusal came
    # from the notification, not from a lost LISTEN that made the process check every
    # key in the database (what a LISTEN through the pooler leads to, after seconds of
    # serving a revoked key).
    for log in logs:
        serving = log[: next(i for i, line in enumerate(log) if '"vault_stopping"' in line)]
        assert any('"api_key_cache_live"' in line for line in serving)
        budget = next(line for line in serving if '"db_connection_budget"' in line)
        assert '"pooler": "pgbouncer-transaction"' in budget
        assert not [line for line in serving if "db_listen_lost" in line or "bypassed" in line]


async def test_fifty_callers_on_two_processes_behind_pgbouncer_make_one_provider_call(
    provider: FakeOAuthProvider,
    pooled_dsn: str,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> None:
    """The refresh's row lock is the single flight across processes: held in one
    transaction (one server connection) while the provider answers, it makes the other
    process's callers wait and then use the new token."""
    async with vaults_behind_pgbouncer(2, pooled_dsn, service_dsn, auth_secret, root_key) as (
        _,
        (first, second),
    ):
        linked = await link(first, provider)  # type: ignore[arg-type]  # uses its stubs only
        hold = provider.hold_next()
        calls = [
            asyncio.create_task(get_token(first if i % 2 else second, linked)) for i in range(50)
        ]
        assert await hold.wait_reached_async()
        hold.release()
        responses = await asyncio.gather(*calls)
    assert provider.token_calls == 1
    assert len({r.access_token for r in responses}) == 1
    assert responses[0].access_token != linked.access_token
