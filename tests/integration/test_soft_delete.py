"""Soft-deleted connections (#29 item 3), end to end over gRPC and PostgreSQL.

DeleteConnection keeps a connection recoverable for the recovery window: hidden from
listings unless asked, its credentials refused (CONNECTION_DELETED), outside the plan's
limit; UndeleteConnection restores it with its credentials; force deletes at once; the
purge job removes it (rows and ciphertexts) once the window ends by a clock the test
controls; every step is audited and emits an event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.config import PoolSettings
from singura_vault.config.environment import load_settings
from singura_vault.db.pool import Database
from singura_vault.errors import ConfigError
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import events_pb2 as epb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.repositories.connections import ConnectionRepository
from singura_vault.service.access import AccessService
from singura_vault.service.connection_purge import ConnectionPurger
from tests.support.audit import chain_pending_audit
from tests.support.auth import bearer
from tests.support.credentials import ACCESS, reveal, store
from tests.support.error_details import details
from tests.support.events import all_events, data, events_stub
from tests.support.messages import connection_message, org_message
from tests.support.oauth import get_token, link, refresh_worker
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault, start_vault, stop_vault
from tests.support.vault_process import serve_process

WINDOW = timedelta(days=7)
# A guard against a hung stream, not a synchronisation (see test_events.py).
READ_GUARD_S = 30.0


class Clock:
    """The purge job's clock, moved by the test (no sleeping through a window)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def components(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService, clock: Clock
) -> Components:
    """The vault's graph with the purge job on the test's clock, running every 50 ms
    in the server (as in `serve`), and watches polling every 50 ms (a purge is another
    transaction than the watcher's process commits)."""
    return Components(
        db,
        key_manager=key_manager,
        access=access_service,
        clock=clock,
        purge_interval_s=0.05,
        event_poll_interval_s=0.05,
    )


@pytest.fixture
async def vault(components: Components) -> AsyncIterator[Vault]:
    running = await start_vault(components)
    yield running
    await stop_vault(running)


async def delete(vault: Stubs, org: str, conn: str, **options: Any) -> cpb.DeleteConnectionResponse:
    return await vault.connections.DeleteConnection(
        cpb.DeleteConnectionRequest(organization_id=org, connection_id=conn, **options)
    )


async def undelete(vault: Stubs, org: str, conn: str) -> cpb.Connection:
    response = await vault.connections.UndeleteConnection(
        cpb.UndeleteConnectionRequest(organization_id=org, connection_id=conn)
    )
    return response.connection


async def get(vault: Stubs, org: str, conn: str) -> cpb.Connection:
    response = await vault.connections.GetConnection(
        cpb.GetConnectionRequest(organization_id=org, connection_id=conn)
    )
    return response.connection


async def listed(vault: Stubs, org: str, *, show_deleted: bool = False) -> list[str]:
    response = await vault.connections.ListConnections(
        cpb.ListConnectionsRequest(organization_id=org, show_deleted=show_deleted)
    )
    return [c.id for c in response.connections]


async def expiring(vault: Stubs, org: str) -> list[crpb.Credential]:
    response = await vault.credentials.ListExpiringCredentials(
        crpb.ListExpiringCredentialsRequest(
            organization_id=org, within=duration_pb2.Duration(seconds=86400)
        )
    )
    return list(response.credentials)


async def expect_reason(call: Any, code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    assert error.code() == code, error.details()
    assert details(error)["ErrorInfo"].reason == reason
    return error.details() or ""


async def owner_rows(owner_dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    owner = await asyncpg.connect(owner_dsn)
    try:
        await chain_pending_audit(owner)
        return list(await owner.fetch(sql, *args))
    finally:
        await owner.close()


async def audit(owner_dsn: str, org: str) -> list[asyncpg.Record]:
    return await owner_rows(
        owner_dsn,
        "SELECT action, outcome, actor, details FROM singura.audit_logs"
        " WHERE organization_id = $1 ORDER BY chain_seq",
        uuid.UUID(org),
    )


async def test_a_deleted_connection_is_hidden_refused_and_restored_with_its_credentials(
    vault: Vault, owner_dsn: str
) -> None:
    """Deleted: gone from the listing (shown with show_deleted), readable with its
    delete and purge times, its credentials neither revealed nor stored nor the
    connection changed; undeleted: listed again and its credential reveals as before."""
    org, conn = await tenant(vault)
    soon = timestamp_pb2.Timestamp()
    soon.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    await vault.credentials.StoreCredential(
        crpb.StoreCredentialRequest(
            organization_id=org,
            connection_id=conn,
            type=ACCESS,
            value="tok-before-delete",
            expire_time=soon,
        )
    )
    assert len(await expiring(vault, org)) == 1
    before = datetime.now(UTC)
    response = await delete(vault, org, conn)
    after = datetime.now(UTC)

    until = response.recoverable_until.ToDatetime(UTC)
    assert before + WINDOW - timedelta(seconds=5) <= until <= after + WINDOW + timedelta(seconds=5)
    assert not response.tokens_revoked_at_provider
    assert not response.HasField("provider_revocation")
    assert await listed(vault, org) == []
    assert await listed(vault, org, show_deleted=True) == [conn]
    shown = await get(vault, org, conn)
    assert shown.HasField("delete_time")
    assert shown.purge_time.ToDatetime(UTC) == until
    assert shown.status == cpb.CONNECTION_STATUS_ACTIVE  # kept for the undelete

    message = await expect_reason(
        vault.credentials.RevealCredential(
            crpb.RevealCredentialRequest(organization_id=org, connection_id=conn, type=ACCESS)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONNECTION_DELETED",
    )
    assert "UndeleteConnection" in message
    assert "tok-before-delete" not in message
    batch = await vault.credentials.BatchRevealCredentials(
        crpb.BatchRevealCredentialsRequest(
            organization_id=org, items=[crpb.BatchRevealItem(connection_id=conn, type=ACCESS)]
        )
    )
    assert batch.results[0].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert batch.results[0].value == ""
    assert await expiring(vault, org) == []  # nothing to renew while deleted
    await expect_reason(
        vault.credentials.StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=org, connection_id=conn, type=ACCESS, value="tok-while-deleted"
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONNECTION_DELETED",
    )
    await expect_reason(
        vault.connections.UpdateConnectionStatus(
            cpb.UpdateConnectionStatusRequest(
                organization_id=org,
                connection_id=conn,
                status=cpb.CONNECTION_STATUS_INACTIVE,
                reason="paused",
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONNECTION_DELETED",
    )
    await expect_reason(
        delete(vault, org, conn), grpc.StatusCode.FAILED_PRECONDITION, "CONNECTION_DELETED"
    )

    restored = await undelete(vault, org, conn)
    assert not restored.HasField("delete_time")
    assert not restored.HasField("purge_time")
    assert restored.status == cpb.CONNECTION_STATUS_ACTIVE
    assert await listed(vault, org) == [conn]
    assert await reveal(vault, org, conn) == "tok-before-delete"
    assert len(await expiring(vault, org)) == 1
    await store(vault, org, conn, "tok-after-undelete")
    assert await reveal(vault, org, conn) == "tok-after-undelete"
    await expect_reason(
        undelete(vault, org, conn), grpc.StatusCode.FAILED_PRECONDITION, "CONNECTION_NOT_DELETED"
    )

    trail = await audit(owner_dsn, org)
    actions = [r["action"] for r in trail]
    deleted_at = actions.index("connection.deleted")
    assert actions.index("connection.undeleted") > deleted_at
    refused = [
        r
        for r in trail[deleted_at:]
        if r["action"] == "credential.revealed" and r["outcome"] == "failure"
    ]
    assert len(refused) == 2  # the reveal and the batch item, each audited
    # The refused store wrote nothing: versions 1 (before) and 2 (after) only.
    versions = await vault.credentials.ListCredentialVersions(
        crpb.ListCredentialVersionsRequest(organization_id=org, connection_id=conn, type=ACCESS)
    )
    assert [c.version for c in versions.credentials] == [2, 1]


async def test_delete_and_undelete_emit_events(vault: Vault) -> None:
    """connection.deleted carries the purge time and whether the grant was revoked;
    connection.undeleted follows it; nothing is purged."""
    org, conn = await tenant(vault)
    response = await delete(vault, org, conn)
    await undelete(vault, org, conn)
    events = await all_events(events_stub(vault), org, types=["connection.deleted"])
    events += await all_events(events_stub(vault), org, types=["connection.undeleted"])
    assert [e.type for e in events] == ["connection.deleted", "connection.undeleted"]
    assert all(e.connection_id == conn for e in events)
    deleted, undeleted = (data(e) for e in events)
    assert deleted["force"] is False
    assert deleted["tokens_revoked_at_provider"] is False
    purge = datetime.fromisoformat(deleted["purge_time"])
    assert purge == response.recoverable_until.ToDatetime(UTC)
    assert undeleted["status"] == "active"
    assert await all_events(events_stub(vault), org, types=["connection.purged"]) == []


async def test_force_delete_removes_the_connection_and_its_credentials_at_once(
    vault: Vault, owner_dsn: str
) -> None:
    """With force: no recovery window, the rows are gone in the call, the connection
    cannot be undeleted, and connection.deleted (force) then connection.purged are
    emitted. Force also purges a connection that is already deleted."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, "tok-forced")
    response = await delete(vault, org, conn, force=True)
    assert not response.HasField("recoverable_until")
    await expect_status(get(vault, org, conn), grpc.StatusCode.NOT_FOUND)
    await expect_status(undelete(vault, org, conn), grpc.StatusCode.NOT_FOUND)
    assert await listed(vault, org, show_deleted=True) == []
    rows = await owner_rows(
        owner_dsn,
        "SELECT count(*) AS n FROM singura.encrypted_credentials WHERE connection_id = $1",
        uuid.UUID(conn),
    )
    assert rows[0]["n"] == 0
    events = await all_events(
        events_stub(vault), org, types=["connection.deleted", "connection.purged"]
    )
    assert [(e.type, data(e)["force"]) for e in events] == [
        ("connection.deleted", True),
        ("connection.purged", True),
    ]

    second = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org))
        )
    ).connection.id
    await delete(vault, org, second)
    await delete(vault, org, second, force=True)
    await expect_status(get(vault, org, second), grpc.StatusCode.NOT_FOUND)
    purged = await all_events(events_stub(vault), org, types=["connection.purged"])
    assert [e.connection_id for e in purged] == [conn, second]
    assert data(purged[1])["force"] is False


async def test_the_purge_job_removes_connections_once_the_window_ends(
    vault: Vault, components: Components, clock: Clock, owner_dsn: str
) -> None:
    """Before the window ends nothing is purged; once the job's clock passes the purge
    time, the server's purge job deletes the connection and its credential rows,
    audited (connection.purged, actor system) with its event; it cannot be undeleted."""
    org, conn = await tenant(vault)
    other_org, kept = await tenant(vault)
    await store(vault, org, conn, "tok-to-purge")
    purge_time = (await delete(vault, org, conn)).recoverable_until.ToDatetime(UTC)
    await delete(vault, other_org, kept)
    # As if deleted a day later (the tests' clock; no sleeps): not due with the other.
    owner = await asyncpg.connect(owner_dsn)
    try:
        async with owner.transaction():
            await owner.execute("SELECT set_config('singura.organization_id', $1, true)", other_org)
            moved = await owner.execute(
                "UPDATE singura.platform_connections"
                " SET deleted_at = deleted_at + interval '1 day',"
                " purge_at = purge_at + interval '1 day' WHERE id = $1",
                uuid.UUID(kept),
            )
    finally:
        await owner.close()
    assert moved == "UPDATE 1"

    clock.now = purge_time - timedelta(seconds=1)
    assert await components.connection_purger.run_once() == 0
    assert (await get(vault, org, conn)).HasField("delete_time")

    # The server's own purge task (every 50 ms) acts once the clock has moved; the
    # test follows the event it emits rather than waiting.
    stream = events_stub(vault).WatchEvents(
        epb.WatchEventsRequest(organization_id=org, types=["connection.purged"])
    )
    clock.now = purge_time + timedelta(seconds=1)
    async with asyncio.timeout(READ_GUARD_S):
        event = (await stream.read()).event
    stream.cancel()
    assert event.type == "connection.purged"
    assert event.connection_id == conn
    assert data(event)["force"] is False

    await expect_status(get(vault, org, conn), grpc.StatusCode.NOT_FOUND)
    await expect_status(undelete(vault, org, conn), grpc.StatusCode.NOT_FOUND)
    gone = await owner_rows(
        owner_dsn,
        "SELECT (SELECT count(*) FROM singura.platform_connections WHERE id = $1) AS c,"
        " (SELECT count(*) FROM singura.encrypted_credentials WHERE connection_id = $1) AS k",
        uuid.UUID(conn),
    )
    assert (gone[0]["c"], gone[0]["k"]) == (0, 0)
    purged = [r for r in await audit(owner_dsn, org) if r["action"] == "connection.purged"]
    assert [(r["actor"], r["outcome"]) for r in purged] == [("system", "success")]
    # The other organization's connection, deleted a day later, is within its window.
    assert (await get(vault, other_org, kept)).HasField("delete_time")
    await undelete(vault, other_org, kept)


async def test_plan_limits_count_only_live_connections(vault: Vault) -> None:
    """A deleted connection frees its place in a FREE plan (3 ACTIVE); undeleting an
    ACTIVE one over the limit is RESOURCE_EXHAUSTED until there is room again."""
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_FREE))
        )
    ).organization.id

    async def create() -> str:
        response = await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org))
        )
        return response.connection.id

    first, second, _third = [await create() for _ in range(3)]
    await delete(vault, org, first)
    await create()  # the deleted one does not count
    await expect_reason(
        undelete(vault, org, first), grpc.StatusCode.RESOURCE_EXHAUSTED, "PLAN_CONNECTION_LIMIT"
    )
    assert (await get(vault, org, first)).HasField("delete_time")  # still deleted
    await vault.connections.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            organization_id=org,
            connection_id=second,
            status=cpb.CONNECTION_STATUS_INACTIVE,
            reason="make room",
        )
    )
    assert (await undelete(vault, org, first)).status == cpb.CONNECTION_STATUS_ACTIVE


async def test_roles_and_other_organizations(vault: Vault) -> None:
    """Deleting and undeleting need the writer role; a reader sees deleted connections
    with show_deleted; another organization's key can neither see nor undelete one."""
    org, conn = await tenant(vault)
    other_org, _ = await tenant(vault)

    async def key(organization: str, role: int) -> Stubs:
        created = await vault.access.CreateApiKey(
            apb.CreateApiKeyRequest(organization_id=organization, roles=[role], name="t")
        )
        return vault.as_key(created.secret)

    reader = await key(org, apb.API_KEY_ROLE_READER)
    writer = await key(org, apb.API_KEY_ROLE_WRITER)
    outsider = await key(other_org, apb.API_KEY_ROLE_WRITER)
    await expect_status(delete(reader, org, conn), grpc.StatusCode.PERMISSION_DENIED)
    await delete(writer, org, conn)
    assert await listed(reader, org, show_deleted=True) == [conn]
    await expect_status(undelete(reader, org, conn), grpc.StatusCode.PERMISSION_DENIED)
    await expect_status(
        undelete(outsider, org, conn), grpc.StatusCode.PERMISSION_DENIED, "another organization"
    )
    await expect_status(undelete(outsider, other_org, conn), grpc.StatusCode.NOT_FOUND)
    await expect_status(get(outsider, other_org, conn), grpc.StatusCode.NOT_FOUND)
    assert (await get(vault, org, conn)).HasField("delete_time")  # untouched by them
    await undelete(writer, org, conn)


async def test_a_deleted_connection_is_not_refreshed_nor_served_an_access_token(
    vault: Vault, provider: FakeOAuthProvider, components: Components
) -> None:
    """A deleted connection whose access token has expired is left alone by the
    background refresh and GetAccessToken is refused; once undeleted, both work."""
    linked = await link(vault, provider)  # its access token has expired: refresh is due
    await delete(vault, linked.org, linked.conn)
    await expect_reason(
        get_token(vault, linked), grpc.StatusCode.FAILED_PRECONDITION, "CONNECTION_DELETED"
    )
    worker, http = refresh_worker(vault.db, components.sealing)
    try:
        assert await worker.run_once() == 0
        assert provider.token_calls == 0
        await undelete(vault, linked.org, linked.conn)
        assert await worker.run_once() == 1
        assert provider.token_calls == 1
    finally:
        await http.aclose()
    assert (await get_token(vault, linked)).access_token


async def test_a_grant_revoked_at_delete_is_reported(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """revoke_at_provider with a soft delete: the response and the deleted connection say
    that recovered tokens are revoked at the platform; undelete clears the mark."""
    linked = await link(vault, provider)
    response = await delete(vault, linked.org, linked.conn, revoke_at_provider=True)
    assert response.provider_revocation.outcome == cpb.PROVIDER_REVOCATION_OUTCOME_REVOKED
    assert response.tokens_revoked_at_provider
    assert response.HasField("recoverable_until")
    assert not provider.is_refresh_token_valid(linked.refresh_token)
    assert (await get(vault, linked.org, linked.conn)).tokens_revoked_at_provider
    events = await all_events(events_stub(vault), linked.org, types=["connection.deleted"])
    assert data(events[0])["tokens_revoked_at_provider"] is True
    restored = await undelete(vault, linked.org, linked.conn)
    assert not restored.tokens_revoked_at_provider


async def test_soft_delete_across_two_serve_processes(
    vault: Vault, service_dsn: str, auth_secret: bytes, root_key: str
) -> None:
    """A `serve` process with SINGURA_CONNECTION_RECOVERY_WINDOW=2d deletes with that
    window; this process then refuses the credential (the state is in PostgreSQL) and
    undeletes it, and the other process reveals it again."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, "tok-shared")
    async with serve_process(
        vault, service_dsn, auth_secret, root_key, SINGURA_CONNECTION_RECOVERY_WINDOW="2d"
    ) as address:
        channel = grpc.aio.insecure_channel(address, interceptors=bearer(vault.admin_key))
        try:
            other = Stubs.on(channel)
            before = datetime.now(UTC)
            until = (await delete(other, org, conn)).recoverable_until.ToDatetime(UTC)
            assert before + timedelta(days=2) - timedelta(seconds=5) <= until
            assert until <= datetime.now(UTC) + timedelta(days=2) + timedelta(seconds=5)
            await expect_reason(
                vault.credentials.RevealCredential(
                    crpb.RevealCredentialRequest(
                        organization_id=org, connection_id=conn, type=ACCESS
                    )
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
                "CONNECTION_DELETED",
            )
            await undelete(vault, org, conn)
            assert await reveal(other, org, conn) == "tok-shared"
        finally:
            await channel.close()


def test_the_recovery_window_is_configured_as_a_duration() -> None:
    """SINGURA_CONNECTION_RECOVERY_WINDOW: 7 days by default, a duration, at least 60 s."""
    assert load_settings({}).connection_recovery_window_s == 7 * 86400
    assert load_settings(
        {"SINGURA_CONNECTION_RECOVERY_WINDOW": "30d"}
    ).connection_recovery_window_s == (30 * 86400)
    with pytest.raises(ConfigError, match="SINGURA_CONNECTION_RECOVERY_WINDOW"):
        load_settings({"SINGURA_CONNECTION_RECOVERY_WINDOW": "10s"})


async def test_two_processes_purging_at_once_purge_each_connection_once(
    vault: Vault, service_dsn: str, clock: Clock
) -> None:
    """Two purge jobs on separate pools (as two vault processes) with a clock past every
    window: each deleted connection is purged exactly once, and live ones are kept."""
    org, live = await tenant(vault)
    deleted = []
    for _ in range(6):
        created = await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org))
        )
        await delete(vault, org, created.connection.id)
        deleted.append(created.connection.id)
    later = clock.now + WINDOW + timedelta(days=1)
    other_db = await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=4))
    try:
        first = ConnectionPurger(ConnectionRepository(vault.db), clock=lambda: later)
        second = ConnectionPurger(ConnectionRepository(other_db), clock=lambda: later)
        counts = await asyncio.gather(first.run_once(), second.run_once())
    finally:
        await other_db.close()
    # The server's own job (on the test's clock, still "now") purges nothing.
    assert sum(counts) == len(deleted)
    purged = await all_events(events_stub(vault), org, types=["connection.purged"])
    assert sorted(e.connection_id for e in purged) == sorted(deleted)
    assert await listed(vault, org, show_deleted=True) == [live]
