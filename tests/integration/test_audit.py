"""The audit trail: recorded by triggers, append-only, hash-chained, exportable, prunable."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest

from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import audit_pb2 as pb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.repositories.audit import AuditRepository
from tests.support.audit import (
    AUDIT_SEQUENCER_LOCK,
    all_events,
    chain_of,
    chain_pending_audit,
    stubs_audit,
    verify,
)
from tests.support.canaries import canary
from tests.support.postgres import PostgresServer
from tests.support.status import expect_status
from tests.support.tenants import new_connection, new_org
from tests.support.vault import Stubs, Vault


async def test_triggers_record_every_change_with_actor_and_request_id(vault: Vault) -> None:
    """Creating, storing, superseding, revoking and status changes each leave one event
    carrying the calling key's id and the call's request id, and never a secret."""
    org = await new_org(vault)
    conn = await new_connection(vault, org)
    secret = canary("audit")
    base = crpb.StoreCredentialRequest(
        organization_id=org, connection_id=conn, type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN
    )
    base.value = secret
    await vault.credentials.StoreCredential(base, metadata=(("x-request-id", "store-1"),))
    base.value = canary("audit-2")
    second = await vault.credentials.StoreCredential(base)
    await vault.credentials.RevokeCredential(
        crpb.RevokeCredentialRequest(organization_id=org, credential_id=second.credential.id)
    )
    await vault.connections.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            organization_id=org,
            connection_id=conn,
            status=cpb.CONNECTION_STATUS_ERROR,
            reason="token rejected",
        )
    )
    events = list(reversed(await all_events(vault, org)))
    actions = [e.action for e in events]
    assert actions == [
        "organization.created",
        "connection.created",
        "data_key.created",
        "credential.stored",
        "credential.superseded",
        "credential.stored",
        "credential.revoked",
        "connection.status_changed",
    ]
    admin_id = vault.admin_key[4:20]
    assert {e.actor for e in events} == {admin_id}
    stored = events[3]
    assert stored.request_id == "store-1"
    assert dict(stored.details)["version"] == 1
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert all(secret not in str(e) for e in events)
    status = events[-1]
    assert dict(status.details)["reason"] == "token rejected"
    assert dict(status.details)["old_status"] == "active"
    only_revocations = await all_events(vault, org, action="credential.revoked")
    assert [e.resource_id for e in only_revocations] == [second.credential.id]
    result = await verify(vault, org)
    assert (result.ok, result.event_count) == (True, len(events))
    assert result.head_hash == events[-1].hash


async def test_api_key_events_and_denials_go_to_the_right_chains(vault: Vault) -> None:
    """Admin-key events land in the system chain; an org key's creation in its org's."""
    org = await new_org(vault)
    created = await vault.access.CreateApiKey(
        apb.CreateApiKeyRequest(organization_id=org, roles=[apb.API_KEY_ROLE_READER])
    )
    org_events = await all_events(vault, org, action="api_key.created")
    assert [e.resource_id for e in org_events] == [created.api_key.key_id]
    system = await all_events(vault, "", action="api_key.created")
    assert vault.admin_key[4:20] in [e.resource_id for e in system]
    reader = vault.as_key(created.secret)
    await expect_status(
        stubs_audit(reader).ListAuditEvents(pb.ListAuditEventsRequest()),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    readable = await all_events(reader, org)
    assert readable


async def test_audit_log_refuses_update_delete_truncate_even_for_the_owner(
    vault: Vault, owner_dsn: str
) -> None:
    """Even the schema owner cannot change the trail, chained or still pending: UPDATE
    matches no row, DELETE and TRUNCATE hit the append-only triggers."""
    owner = await asyncpg.connect(owner_dsn)
    sequencer_lock = await asyncpg.connect(owner_dsn)
    try:
        await new_org(vault)
        await chain_pending_audit(owner)
        # Hold the sequencers off, so that the next events stay pending.
        await sequencer_lock.execute("SELECT pg_advisory_lock($1)", AUDIT_SEQUENCER_LOCK)
        await new_org(vault)
        for table in ("audit_logs", "audit_pending"):
            # No policy admits UPDATE at all: even the owner's update touches no row.
            assert await owner.execute(f"UPDATE singura.{table} SET actor = 'x'") == "UPDATE 0"
            for statement in (f"DELETE FROM singura.{table}", f"TRUNCATE singura.{table}"):
                with pytest.raises(asyncpg.PostgresError, match="append-only"):
                    await owner.execute(statement)
        chained = await owner.fetchval("SELECT count(*) FROM singura.audit_logs")
        pending = await owner.fetchval("SELECT count(*) FROM singura.audit_pending")
    finally:
        await sequencer_lock.close()
        await owner.close()
    assert chained > 0
    assert pending > 0


async def tamper(postgres: PostgresServer, database: str, sql: str, *args: object) -> None:
    """Edit the audit log as a superuser with triggers off, as an attacker with full
    database rights could."""
    conn = await asyncpg.connect(postgres.dsn("postgres", database))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(sql, *args)
    finally:
        await conn.close()


@pytest.mark.parametrize("attack", ["edit", "delete", "reorder", "delete_newest"])
async def test_verification_names_the_first_tampered_event(
    vault: Vault, postgres: PostgresServer, database_name: str, attack: str
) -> None:
    """An edited, deleted or reordered event (or a cut-off tail) fails verification,
    naming the first event that no longer fits."""
    org, events = await chain_of(vault, 6)
    assert (await verify(vault, org)).ok
    target = events[2]
    if attack == "edit":
        await tamper(
            postgres,
            database_name,
            "UPDATE singura.audit_logs SET actor = 'someone-else' WHERE id = $1",
            target.id,
        )
        expected_bad = target.id
    elif attack == "delete":
        await tamper(
            postgres, database_name, "DELETE FROM singura.audit_logs WHERE id = $1", target.id
        )
        expected_bad = events[3].id
    elif attack == "reorder":
        # Swap the positions of events 3 and 4 (through a free slot: positions are unique).
        move = "UPDATE singura.audit_logs SET chain_seq = $2 WHERE id = $1"
        await tamper(postgres, database_name, move, target.id, -1)
        await tamper(postgres, database_name, move, events[3].id, target.sequence)
        await tamper(postgres, database_name, move, target.id, events[3].sequence)
        expected_bad = events[3].id  # now in position 3, with the wrong predecessor
    else:
        await tamper(
            postgres, database_name, "DELETE FROM singura.audit_logs WHERE id = $1", events[-1].id
        )
        expected_bad = 0
    result = await verify(vault, org)
    assert not result.ok
    assert result.first_bad_event_id == expected_bad, result.problem
    assert result.problem


async def test_chain_stays_linear_with_concurrent_writers_in_two_processes(
    vault: Vault, second_process: str
) -> None:
    """8 concurrent writers, half through another vault process, leave one unbroken chain."""
    org = await new_org(vault)
    conns = [await new_connection(vault, org) for _ in range(8)]
    other_channel = grpc.aio.insecure_channel(second_process)
    other = Stubs.on(other_channel)
    auth = (("authorization", f"Bearer {vault.admin_key}"),)

    async def writer(stubs: Stubs, conn: str) -> None:
        for i in range(6):
            request = crpb.StoreCredentialRequest(
                organization_id=org,
                connection_id=conn,
                type=crpb.CREDENTIAL_TYPE_API_KEY,
                value=canary(f"w{i}"),
            )
            await stubs.credentials.StoreCredential(request, metadata=auth)

    try:
        await asyncio.gather(*(writer(other if i % 2 else vault, c) for i, c in enumerate(conns)))
    finally:
        await other_channel.close()
    events = await all_events(vault, org)
    sequences = sorted(e.sequence for e in events)
    assert sequences == list(range(1, len(events) + 1))
    result = await verify(vault, org)
    assert result.ok, result.problem
    # 1 org + 8 connections + 1 data key + 48 stores + 40 supersedes
    assert result.event_count == 1 + 8 + 1 + 48 + 40


async def test_export_streams_everything_oldest_first_in_batches(
    vault: Vault, owner_dsn: str
) -> None:
    """2,500 events come back as an ordered stream of bounded batches."""
    org = await new_org(vault)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute(
            "INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type) "
            "SELECT $1, 'load', 'test.event', 'test' FROM generate_series(1, 2500)",
            uuid.UUID(org),
        )
    finally:
        await owner.close()
    sizes: list[int] = []
    sequences: list[int] = []
    async for message in stubs_audit(vault).ExportAuditEvents(
        pb.ExportAuditEventsRequest(organization_id=org)
    ):
        sizes.append(len(message.events))
        sequences.extend(e.sequence for e in message.events)
    assert sequences == list(range(1, 2502))
    assert max(sizes) <= 1000
    assert len(sizes) == 3
    assert (await verify(vault, org)).ok


async def test_prune_leaves_a_verifiable_chain(vault: Vault, db: Database) -> None:
    """After pruning, each chain verifies from its checkpoint and the prune is itself audited."""
    org = await new_org(vault)
    await new_connection(vault, org)
    pruned = await AuditRepository(db).prune(datetime.now(UTC), "test")
    assert pruned[uuid.UUID(org)] == 2
    await new_connection(vault, org)
    result = await verify(vault, org)
    assert (result.ok, result.event_count, result.pruned_count) == (True, 1, 2)
    system = await verify(vault, "")
    assert system.ok, system.problem
    prunes = await all_events(vault, "", action="audit.pruned")
    assert len(prunes) == 1


async def test_deleting_an_organization_erases_its_trail(vault: Vault, service_dsn: str) -> None:
    """DeleteOrganization erases the organization's audit events and leaves one
    non-personal system record; erasing a live organization is refused."""
    org = await new_org(vault)
    await new_connection(vault, org)
    await vault.organizations.DeleteOrganization(opb.DeleteOrganizationRequest(organization_id=org))
    erased = await all_events(vault, "", action="organization.erased")
    assert [e.resource_id for e in erased] == [org]
    assert dict(erased[0].details)["audit_events_erased"] >= 3
    conn = await asyncpg.connect(service_dsn)
    try:
        leftover = await conn.fetchval(
            "SELECT count(*) FROM singura.audit_logs WHERE organization_id = $1", uuid.UUID(org)
        )
        live = await new_org(vault)
        with pytest.raises(asyncpg.PostgresError, match="still exists"):
            await conn.execute("SELECT singura.audit_erase_organization($1, 'x')", uuid.UUID(live))
    finally:
        await conn.close()
    assert leftover == 0
    assert (await verify(vault, "")).ok
