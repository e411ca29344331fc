"""Every organization's events for an admin key: a global position given after commit by
the sequencer, resumable with no gap and no duplicate under concurrent writes of several
organizations; an organization's watch resumed under concurrent writes; a watch in one
vault process woken at once by a write of another (LISTEN/NOTIFY); the emitted-events
metric."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.metrics import REGISTRY
from singura_vault.proto.singura.vault.v1 import events_pb2 as pb
from singura_vault.service.access import AccessService
from tests.support.canaries import canary
from tests.support.events import (
    READ_GUARD_S,
    all_events,
    events_stub,
    read_event,
    reader_key,
    store,
)
from tests.support.status import expect_status
from tests.support.tenants import new_connection, new_org
from tests.support.vault import Vault, start_vault, stop_vault

# Watches of the second process never poll on their own within a test: an event that
# reaches them came by a wake-up.
NEVER_S = 3600.0


@pytest.fixture
async def vault(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService
) -> AsyncIterator[Vault]:
    running = await start_vault(Components(db, key_manager=key_manager, access=access_service))
    yield running
    await stop_vault(running)


async def write_burst(vault: Vault, orgs: list[str], per_org: int) -> int:
    """Concurrent writers, one per organization, each a connection then ``per_org``
    stores; returns how many events they emitted."""

    async def writer(org: str) -> None:
        conn = await new_connection(vault, org)
        for i in range(per_org):
            await store(vault, org, conn, canary(f"burst-{i}"))

    await asyncio.gather(*(writer(org) for org in orgs))
    return len(orgs) * (1 + per_org)


async def test_an_admin_key_lists_every_organization_in_position_order(vault: Vault) -> None:
    """Empty organization_id with an admin key: every organization's events, positions
    1, 2, 3, ... with each organization's cursors in order; pages resume by position.
    An organization key is refused, naming the admin requirement."""
    orgs = [await new_org(vault) for _ in range(3)]
    total = await write_burst(vault, orgs, 3)
    await vault.server.components.event_sequencer.run_once()
    stub = events_stub(vault)
    events = await all_events(stub, "")
    assert [e.position for e in events] == list(range(1, total + 1))
    for org in orgs:
        mine = [e.cursor for e in events if e.organization_id == org]
        assert mine == list(range(1, 5))
    # Org streams carry the same positions.
    org_view = await all_events(stub, orgs[0])
    assert {e.cursor: e.position for e in org_view} == {
        e.cursor: e.position for e in events if e.organization_id == orgs[0]
    }
    page = await stub.ListEvents(pb.ListEventsRequest(after=5, page_size=4))
    assert [e.position for e in page.events] == [6, 7, 8, 9]
    assert (page.next_after, page.more) == (9, True)
    await expect_status(
        events_stub(vault, await reader_key(vault, orgs[0])).ListEvents(pb.ListEventsRequest()),
        grpc.StatusCode.PERMISSION_DENIED,
        "admin",
    )
    watch = events_stub(vault, await reader_key(vault, orgs[0])).WatchEvents(
        pb.WatchEventsRequest()
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(watch.read(), READ_GUARD_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_admin_watch_resumes_by_position_under_concurrent_writes(vault: Vault) -> None:
    """An admin watch that disconnects mid-burst and resumes from the last position it
    received gets every event of every organization exactly once, positions dense."""
    orgs = [await new_org(vault) for _ in range(4)]
    stub = events_stub(vault)
    burst = asyncio.create_task(write_burst(vault, orgs, 15))
    seen: list[pb.Event] = []
    call = stub.WatchEvents(pb.WatchEventsRequest())
    for _ in range(10):
        seen.append(await read_event(call))
    call.cancel()
    total = await burst
    resumed = stub.WatchEvents(pb.WatchEventsRequest(after=seen[-1].position))
    while len(seen) < total:
        seen.append(await read_event(resumed))
    resumed.cancel()
    assert [e.position for e in seen] == list(range(1, total + 1))
    keys_seen = [(e.organization_id, e.cursor) for e in seen]
    assert len(set(keys_seen)) == total
    for org in orgs:
        assert sorted(c for o, c in keys_seen if o == org) == list(range(1, 17))


async def test_org_watch_resumes_by_cursor_under_concurrent_writes(vault: Vault) -> None:
    """An organization's watch, cut mid-burst of concurrent writers in that organization
    and resumed from its last cursor, sees every cursor once, in order."""
    org = await new_org(vault)
    stub = events_stub(vault, await reader_key(vault, org))

    async def writer() -> None:
        conn = await new_connection(vault, org)
        for i in range(10):
            await store(vault, org, conn, canary(f"org-burst-{i}"))

    burst = asyncio.gather(*(writer() for _ in range(4)))
    call = stub.WatchEvents(pb.WatchEventsRequest(organization_id=org))
    seen = [await read_event(call) for _ in range(7)]
    call.cancel()
    await burst
    resumed = stub.WatchEvents(pb.WatchEventsRequest(organization_id=org, after=seen[-1].cursor))
    while len(seen) < 44:
        seen.append(await read_event(resumed))
    resumed.cancel()
    assert [e.cursor for e in seen] == list(range(1, 45))


async def test_a_watch_in_another_process_is_woken_by_a_write_at_once(
    vault: Vault, service_dsn: str, key_manager: keys.KeyManager, auth_secret: bytes
) -> None:
    """Two vault servers on one database; the second's watches never poll on their own
    (an hour) and its sequencer never runs on its own: a write through the first reaches
    the second's organization watch and admin watch, by the first's sequencer's NOTIFY."""
    pool = await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=4))
    other = await start_vault(
        Components(
            pool,
            key_manager=key_manager,
            access=build_access(pool, auth_secret),
            event_poll_interval_s=NEVER_S,
            event_sequencer_fallback_s=NEVER_S,
        )
    )
    try:
        org = await new_org(vault)
        conn = await new_connection(vault, org)
        stub = events_stub(other)
        org_watch = stub.WatchEvents(pb.WatchEventsRequest(organization_id=org))
        admin_watch = stub.WatchEvents(pb.WatchEventsRequest())
        # Both replay what exists, so both are past their first read and waiting.
        assert (await read_event(org_watch)).cursor == 1
        assert (await read_event(admin_watch)).position == 1
        await store(vault, org, conn, canary("cross-process"))
        live = await read_event(org_watch)
        assert (live.cursor, live.type) == (2, "credential.stored")
        assert (await read_event(admin_watch)).position == 2
        org_watch.cancel()
        admin_watch.cancel()
    finally:
        await stop_vault(other)
        await pool.close()


def _emitted(type_: str) -> float:
    return REGISTRY.get_sample_value("singura_events_emitted_total", {"type": type_}) or 0.0


async def test_emitted_events_are_counted_by_type_once(vault: Vault, service_dsn: str) -> None:
    """The emitted-events metric counts each event once, when a sequencer numbers it,
    whichever of two sequencers runs; nothing is left unsequenced afterwards."""
    before_created = _emitted("connection.created")
    before_stored = _emitted("credential.stored")
    org = await new_org(vault)
    conn = await new_connection(vault, org)
    for i in range(3):
        await store(vault, org, conn, canary(f"metric-{i}"))
    pool = await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=2))
    try:
        second = Components(pool).event_sequencer
        await asyncio.gather(second.run_once(), vault.server.components.event_sequencer.run_once())
    finally:
        await pool.close()
    assert _emitted("connection.created") - before_created == 1
    assert _emitted("credential.stored") - before_stored == 3
    assert REGISTRY.get_sample_value("singura_events_unsequenced_oldest_seconds") == 0.0


async def test_the_service_role_cannot_reach_every_organization_by_itself(
    vault: Vault, service_dsn: str
) -> None:
    """Outside admin scope the all-organizations read is refused by the database; the
    service role cannot number events, change a position, or read or write reminder
    state, whatever settings it sets."""
    org = await new_org(vault)
    await new_connection(vault, org)
    await vault.server.components.event_sequencer.run_once()
    conn = await asyncpg.connect(service_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(
                "SELECT * FROM singura.events_after_position_scoped("
                "'singura.organization_id', $1, 'test', '', 0, '{}', 10)",
                org,
            )
        settings = (
            "SELECT set_config('singura.events_all', 'on', false),"
            " set_config('singura.scope', 'admin', false)"
        )
        await conn.execute(settings)
        assert await conn.fetchval("SELECT count(*) FROM singura.events") == 0
        for forbidden in (
            "UPDATE singura.events SET position = position + 100",
            "SELECT * FROM singura.credential_expiry_notices",
            "SELECT * FROM singura.event_position_head",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(forbidden)
        await conn.execute("RESET ALL")
        async with conn.transaction():
            await conn.execute("SELECT set_config('singura.organization_id', $1, true)", org)
            (row,) = await conn.fetch("SELECT position FROM singura.events")
            assert row["position"] == 1
    finally:
        await conn.close()
