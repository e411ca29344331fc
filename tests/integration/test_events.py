"""EventService end to end: the outbox written by the change's own transaction, its
per-organization cursor in commit order, ListEvents, WatchEvents, tenant isolation."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as kpb
from singura_vault.proto.singura.vault.v1 import events_pb2 as pb
from singura_vault.service.access import AccessService
from tests.support.canaries import canary
from tests.support.credentials import ACCESS
from tests.support.events import (
    READ_GUARD_S,
    all_events,
    data,
    events_stub,
    read_event,
    reader_key,
    store,
)
from tests.support.status import expect_status
from tests.support.tenants import new_connection, new_org
from tests.support.vault import Vault, start_vault, stop_vault


@pytest.fixture
async def vault(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService
) -> AsyncIterator[Vault]:
    """A vault whose watches also poll every 50 ms (for writes made outside it)."""
    components = Components(
        db, key_manager=key_manager, access=access_service, event_poll_interval_s=0.05
    )
    running = await start_vault(components)
    yield running
    await stop_vault(running)


async def set_status(vault: Vault, org: str, conn: str, status: int, reason: str) -> None:
    await vault.connections.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            organization_id=org, connection_id=conn, status=status, reason=reason
        )
    )


async def service_transaction(service_dsn: str, org: str) -> asyncpg.Connection:
    """A raw connection as the service role, in an open transaction of ``org``."""
    conn = await asyncpg.connect(service_dsn)
    await conn.execute("BEGIN")
    await conn.execute("SELECT set_config('singura.organization_id', $1, true)", org)
    return conn


async def insert_connection(conn: asyncpg.Connection, org: str) -> None:
    await conn.execute(
        "INSERT INTO singura.platform_connections"
        " (organization_id, id, platform, platform_user_id, display_name)"
        " VALUES ($1, $2, 'slack', $3, 'raw')",
        uuid.UUID(org),
        uuid.uuid4(),
        f"U{uuid.uuid4().hex[:10]}",
    )


async def test_changes_emit_typed_events_with_dense_cursors(vault: Vault) -> None:
    """Creating a connection, storing a credential, changing status and scopes emit one
    event each, with cursors 1, 2, 3, 4 and the documented data."""
    org = await new_org(vault)
    conn = await new_connection(vault, org)
    await store(vault, org, conn, canary("event-store"))
    await set_status(vault, org, conn, cpb.CONNECTION_STATUS_ERROR, "token rejected")
    await vault.connections.UpdateConnection(
        cpb.UpdateConnectionRequest(
            connection=cpb.Connection(
                organization_id=org, id=conn, permissions_granted=["channels:read"]
            ),
            update_mask={"paths": ["permissions_granted"]},
        )
    )
    events = await all_events(events_stub(vault), org)
    assert [(e.cursor, e.type) for e in events] == [
        (1, "connection.created"),
        (2, "credential.stored"),
        (3, "connection.status_changed"),
        (4, "connection.scopes_changed"),
    ]
    assert all(e.organization_id == org and e.connection_id == conn for e in events)
    assert events[1].credential_id
    assert data(events[1])["version"] == 1
    assert data(events[1])["credential_type"] == "access_token"
    assert {k: data(events[2])[k] for k in ("from", "to", "reason")} == {
        "from": "active",
        "to": "error",
        "reason": "token rejected",
    }
    assert data(events[3])["from"] == ["channels:read", "users:read"]
    assert data(events[3])["to"] == ["channels:read"]
    assert events[0].create_time.seconds > 0


async def test_a_rolled_back_change_emits_nothing(vault: Vault, service_dsn: str) -> None:
    """The event is written inside the change's transaction: seen there, gone with its
    rollback (and its cursor reused, so cursors stay dense); a refused call emits nothing."""
    org = await new_org(vault)
    conn = await service_transaction(service_dsn, org)
    try:
        await insert_connection(conn, org)
        inside = await conn.fetch("SELECT cursor, type FROM singura.events")
        assert [(r["cursor"], r["type"]) for r in inside] == [(1, "connection.created")]
        await conn.execute("ROLLBACK")
    finally:
        await conn.close()
    stub = events_stub(vault)
    assert await all_events(stub, org) == []
    # A store that fails its constraint (no such connection) emits nothing either.
    await expect_status(
        vault.credentials.StoreCredential(
            kpb.StoreCredentialRequest(
                organization_id=org,
                connection_id=str(uuid.uuid4()),
                type=ACCESS,
                value=canary("event-failed-store"),
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await all_events(stub, org) == []
    committed = await new_connection(vault, org)
    events = await all_events(stub, org)
    assert [(e.cursor, e.type, e.connection_id) for e in events] == [
        (1, "connection.created", committed)
    ]


async def test_cursor_order_is_commit_order(vault: Vault, service_dsn: str) -> None:
    """While one transaction that emitted an event is open, a second one of the same
    organization waits at the counter, so a reader never sees cursor 2 before 1 commits
    (the outbox bug where a reader skips a late-committing lower cursor)."""
    org = await new_org(vault)
    first = await service_transaction(service_dsn, org)
    second = await service_transaction(service_dsn, org)
    try:
        await insert_connection(first, org)
        second_pid = second.get_server_pid()
        blocked = asyncio.create_task(insert_connection(second, org))
        # Wait (by polling PostgreSQL, not by time) until the second is blocked on a lock.
        watcher = await asyncpg.connect(service_dsn)
        try:
            for _ in range(3000):
                waiting = await watcher.fetchval(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", second_pid
                )
                if waiting == "Lock":
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the second transaction never waited for the first")
        finally:
            await watcher.close()
        assert not blocked.done()
        stub = events_stub(vault)
        assert await all_events(stub, org) == []
        await first.execute("COMMIT")
        await blocked
        assert [e.cursor for e in await all_events(stub, org)] == [1]
        await second.execute("COMMIT")
        assert [e.cursor for e in await all_events(stub, org)] == [1, 2]
    finally:
        await first.close()
        await second.close()


async def test_list_events_pages_and_filters_by_type(vault: Vault) -> None:
    """ListEvents pages oldest first with next_after/more, and filters by type."""
    org = await new_org(vault)
    for _ in range(3):
        conn = await new_connection(vault, org)
        await store(vault, org, conn, canary("event-page"))
    stub = events_stub(vault)
    seen: list[int] = []
    after = 0
    while True:
        page = await stub.ListEvents(
            pb.ListEventsRequest(organization_id=org, after=after, page_size=4)
        )
        assert len(page.events) <= 4
        seen += [e.cursor for e in page.events]
        after = page.next_after
        if not page.more:
            break
    assert seen == [1, 2, 3, 4, 5, 6]
    assert after == 6
    stored = await all_events(stub, org, types=["credential.stored"])
    assert [e.cursor for e in stored] == [2, 4, 6]
    assert {e.type for e in stored} == {"credential.stored"}
    later = await all_events(stub, org, types=["credential.stored"], after=2)
    assert [e.cursor for e in later] == [4, 6]
    await expect_status(
        stub.ListEvents(pb.ListEventsRequest(organization_id=org, types=["connection.teleported"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "connection.teleported",
        "known types",
    )
    await expect_status(
        stub.ListEvents(pb.ListEventsRequest(organization_id=org, after=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "after",
    )
    # Every organization at once is an admin key's (tests/integration/test_events_admin.py).
    await expect_status(
        events_stub(vault, await reader_key(vault, org)).ListEvents(
            pb.ListEventsRequest(organization_id="")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "admin",
    )


async def test_watch_replays_then_follows_and_resumes_without_gap_or_duplicate(
    vault: Vault, service_dsn: str
) -> None:
    """WatchEvents replays from the cursor, then delivers live events; a reconnect from
    the last delivered cursor, after writes made while disconnected (some by another
    connection than the vault's), continues with the next cursor: no gap, no duplicate."""
    org = await new_org(vault)
    key = await reader_key(vault, org)
    stub = events_stub(vault, key)
    conn = await new_connection(vault, org)
    await store(vault, org, conn, canary("event-watch"))

    call = stub.WatchEvents(pb.WatchEventsRequest(organization_id=org))
    replayed = [await read_event(call), await read_event(call)]
    assert [(e.cursor, e.type) for e in replayed] == [
        (1, "connection.created"),
        (2, "credential.stored"),
    ]
    await set_status(vault, org, conn, cpb.CONNECTION_STATUS_REVOKED, "user removed the app")
    live = await read_event(call)
    assert (live.cursor, live.type) == (3, "connection.status_changed")
    assert data(live)["to"] == "revoked"
    call.cancel()

    # While nobody watches: writes through the vault and one straight into PostgreSQL.
    await store(vault, org, conn, canary("event-watch-2"))
    raw = await service_transaction(service_dsn, org)
    try:
        await insert_connection(raw, org)
        await raw.execute("COMMIT")
    finally:
        await raw.close()
    await new_connection(vault, org)

    resumed = stub.WatchEvents(pb.WatchEventsRequest(organization_id=org, after=live.cursor))
    got = [await read_event(resumed) for _ in range(3)]
    assert [e.cursor for e in got] == [4, 5, 6]
    # Live again after the replay, including a write the vault did not make itself
    # (found by the poll, not by this process's commit wake-up).
    raw = await service_transaction(service_dsn, org)
    try:
        await insert_connection(raw, org)
        await raw.execute("COMMIT")
    finally:
        await raw.close()
    assert (await read_event(resumed)).cursor == 7
    resumed.cancel()

    filtered = stub.WatchEvents(
        pb.WatchEventsRequest(organization_id=org, types=["connection.status_changed"])
    )
    assert (await read_event(filtered)).cursor == 3
    filtered.cancel()


async def test_another_organizations_key_sees_nothing(vault: Vault, service_dsn: str) -> None:
    """Org B's key is refused org A's events (list and watch); as the service role,
    row-level security hides A's events from B's transactions and refuses forged ones."""
    org_a = await new_org(vault)
    org_b = await new_org(vault)
    await new_connection(vault, org_a)
    stub_b = events_stub(vault, await reader_key(vault, org_b))
    await expect_status(
        stub_b.ListEvents(pb.ListEventsRequest(organization_id=org_a)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    watch = stub_b.WatchEvents(pb.WatchEventsRequest(organization_id=org_a))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(watch.read(), READ_GUARD_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await all_events(stub_b, org_b) == []

    conn = await service_transaction(service_dsn, org_b)
    try:
        assert await conn.fetchval("SELECT count(*) FROM singura.events") == 0
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM singura.events WHERE organization_id = $1",
                uuid.UUID(org_a),
            )
            == 0
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO singura.events (organization_id, cursor, type)"
                " VALUES ($1, 99, 'connection.created')",
                uuid.UUID(org_b),
            )
    finally:
        await conn.close()
    conn = await service_transaction(service_dsn, org_b)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "SELECT singura.event_append($1, 'connection.created', NULL, NULL, '{}')",
                uuid.UUID(org_b),
            )
    finally:
        await conn.close()


async def test_no_secret_reaches_event_data(vault: Vault, owner_dsn: str) -> None:
    """The stored values (canaries) appear in no event, as read through the API or
    straight from the table as the schema owner."""
    org = await new_org(vault)
    conn = await new_connection(vault, org)
    secrets = [canary("event-leak-1"), canary("event-leak-2")]
    for value in secrets:
        await store(vault, org, conn, value)
    events = await all_events(events_stub(vault), org)
    assert [e.type for e in events].count("credential.stored") == 2
    owner = await asyncpg.connect(owner_dsn)
    try:
        async with owner.transaction():
            await owner.execute("SELECT set_config('singura.organization_id', $1, true)", org)
            rows = await owner.fetch("SELECT data::text AS d FROM singura.events ORDER BY cursor")
    finally:
        await owner.close()
    assert len(rows) == len(events) == 3
    texts = [str(e) for e in events] + [r["d"] for r in rows]
    for value in secrets:
        assert not any(value in text for text in texts)
    # The data of a stored credential is exactly the documented keys.
    assert set(json.loads(rows[-1]["d"])) == {
        "credential_type",
        "version",
        "state",
        "expire_time",
        "store_time",
    }


async def test_a_reveal_wakes_the_audit_sequencer_but_not_the_event_machinery(
    vault: Vault,
) -> None:
    """A reveal commits only audit events, which no event trigger fires on: the pool
    tells its write listeners (the audit sequencer) but not its change listeners (the
    event sequencer, the webhook worker, the watches), which would each run a statement
    for nothing on every reveal. A store tells both."""
    org = await new_org(vault)
    conn = await new_connection(vault, org)
    writes: list[int] = []
    changes: list[int] = []
    vault.db.on_write_committed(lambda: writes.append(1))
    vault.db.on_change_committed(lambda: changes.append(1))

    await store(vault, org, conn, canary("wakes"))
    assert writes
    assert changes
    writes.clear()
    changes.clear()
    await vault.credentials.RevealCredential(
        kpb.RevealCredentialRequest(
            organization_id=org, connection_id=conn, type=kpb.CREDENTIAL_TYPE_ACCESS_TOKEN
        )
    )
    assert writes  # the reveal's audit event was committed
    assert changes == []
