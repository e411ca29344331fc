"""The audit sequencer (migration 012): requests record events unchained, so that one
organization's calls never wait on each other's chain head; the sequencer chains them.

What must hold: audit-or-fail, a chain that verifies (a sequencer killed mid-batch
included), VerifyAuditChain reporting what is not chained yet, and every event chained
exactly once whichever process sequences it.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc

from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import audit_pb2 as pb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.repositories.audit import AuditRepository
from singura_vault.service.audit_sequencer import AuditSequencer
from tests.support.audit import (
    AUDIT_SEQUENCER_LOCK,
    all_events,
    chain_pending_audit,
    stubs_audit,
    verify,
)
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, reveal, store
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault

RECORD_EVENT = (
    "INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type) "
    "VALUES ($1, 'test', 'test.event', 'test')"
)


async def test_an_open_transaction_with_an_event_does_not_hold_up_its_tenant(
    vault: Vault, service_dsn: str
) -> None:
    """A transaction that has recorded an event of an organization and not committed
    (a slow reveal) no longer holds that organization's chain: another reveal of it
    completes meanwhile, and both events end up chained."""
    org, conn = await tenant(vault)
    secret = canary("sequencer-open-transaction")
    await store(vault, org, conn, secret)
    slow = await asyncpg.connect(service_dsn)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute("SELECT set_config('singura.organization_id', $1, true)", org)
        await slow.execute(RECORD_EVENT, uuid.UUID(org))
        # Before migration 012 this waited on the head row lock held by `slow`.
        assert await asyncio.wait_for(reveal(vault, org, conn), timeout=30) == secret
        await transaction.commit()
    finally:
        await slow.close()
    result = await verify(vault, org)
    assert result.ok, result.problem
    actions = [e.action for e in await all_events(vault, org)]
    assert actions.count("credential.revealed") == 1
    assert actions.count("test.event") == 1


async def test_verify_reports_events_not_yet_chained(vault: Vault, owner_dsn: str) -> None:
    """With every sequencer held off, a reveal still succeeds (its event is committed)
    and VerifyAuditChain says how many events wait and for how long; once sequencing
    resumes they are chained and checked."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("sequencer-pending"))
    before = await verify(vault, org)
    assert (before.ok, before.pending_event_count) == (True, 0)
    assert not before.HasField("oldest_pending_age")
    holder = await asyncpg.connect(owner_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", AUDIT_SEQUENCER_LOCK)
        await reveal(vault, org, conn)
        await reveal(vault, org, conn)
        held = await verify(vault, org)
    finally:
        await holder.close()  # releases the lock
    assert held.ok, held.problem
    assert held.event_count == before.event_count
    assert held.pending_event_count == 2
    assert held.HasField("oldest_pending_age")
    assert held.oldest_pending_age.ToTimedelta().total_seconds() >= 0
    after = await verify(vault, org)
    assert after.ok, after.problem
    assert (after.event_count, after.pending_event_count) == (before.event_count + 2, 0)


async def test_a_sequencer_killed_mid_batch_leaves_a_chain_that_verifies(
    vault: Vault, owner_dsn: str
) -> None:
    """A sequencer whose batch is chained but not committed when its backend dies rolls
    back entirely: the chain verifies, and the next sequencer chains those events once."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("sequencer-killed"))
    owner = await asyncpg.connect(owner_dsn)
    doomed = await asyncpg.connect(owner_dsn)
    try:
        await chain_pending_audit(owner)
        chained_before = (await verify(vault, org)).event_count
        batch = doomed.transaction()
        await batch.start()
        # Take the sequencers' lock first, so that the events below wait for `doomed`.
        await doomed.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_SEQUENCER_LOCK)
        for _ in range(3):
            await reveal(vault, org, conn)
        assert await doomed.fetchval("SELECT singura.audit_sequence(1000)") >= 3
        await owner.execute("SELECT pg_terminate_backend($1)", doomed.get_server_pid())
        result = await verify(vault, org)
        assert result.ok, result.problem
        assert result.event_count + result.pending_event_count == chained_before + 3
        await chain_pending_audit(owner)
        ids = await owner.fetch(
            "SELECT id FROM singura.audit_logs WHERE organization_id = $1", uuid.UUID(org)
        )
    finally:
        doomed.terminate()
        await owner.close()
    final = await verify(vault, org)
    assert final.ok, final.problem
    assert (final.event_count, final.pending_event_count) == (chained_before + 3, 0)
    assert len(ids) == len({r["id"] for r in ids}) == chained_before + 3


async def test_reveals_through_two_processes_are_each_chained_once(
    vault: Vault, second_process: str
) -> None:
    """Concurrent reveals of one organization through two vault processes (two
    sequencers): one event per reveal, a gapless chain that verifies, and export
    returns the chain in the order verification walked it."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("sequencer-two-processes"))
    channel = grpc.aio.insecure_channel(second_process)
    other = Stubs.on(channel)
    auth = (("authorization", f"Bearer {vault.admin_key}"),)

    async def reveals(stubs: Stubs, metadata: tuple[tuple[str, str], ...]) -> None:
        for _ in range(10):
            await stubs.credentials.RevealCredential(
                crpb.RevealCredentialRequest(organization_id=org, connection_id=conn, type=ACCESS),
                metadata=metadata,
            )

    try:
        await asyncio.gather(
            *(reveals(other, auth) for _ in range(4)), *(reveals(vault, ()) for _ in range(4))
        )
    finally:
        await channel.close()
    result = await verify(vault, org)
    assert result.ok, result.problem
    events = await all_events(vault, org)
    assert [e.action for e in events].count("credential.revealed") == 80
    exported = [
        e.sequence
        async for message in stubs_audit(vault).ExportAuditEvents(
            pb.ExportAuditEventsRequest(organization_id=org)
        )
        for e in message.events
    ]
    assert exported == list(range(1, result.event_count + 1))


async def test_a_sequencer_cancelled_as_a_write_wakes_it_stops(db: Database) -> None:
    """VaultServer.stop cancels the sequencer and waits for it. A commit that wakes it
    in the same moment must not swallow the cancellation (asyncio.wait_for on Python
    3.11 did: shutdown then waited forever)."""
    sequencer = AuditSequencer(AuditRepository(db), fallback_interval_s=3600)
    task = asyncio.create_task(sequencer.run_forever())
    await asyncio.sleep(0)  # one turn of the loop: the task is now in its wait
    sequencer.wake()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=30)
    assert task in done
    assert task.cancelled()
