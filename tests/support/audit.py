"""Reading and checking the audit chain: chaining pending events now, listing a
tenant's events, verifying its chain, and growing a chain of a given length."""

from __future__ import annotations

from typing import Any

from singura_vault.proto.singura.vault.v1 import audit_pb2 as pb
from singura_vault.proto.singura.vault.v1 import audit_pb2_grpc as pb_grpc
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from tests.support.tenants import new_connection, new_org
from tests.support.vault import Stubs, Vault

# The advisory lock of the audit sequencers (migrations 012 and 023): each sequencer
# takes it shared, so a test that holds it exclusively keeps new events pending.
AUDIT_SEQUENCER_LOCK = 1397114627


async def chain_pending_audit(conn: Any) -> int:
    """Chain every committed pending audit event now (as the vault's sequencer does a
    moment after each write), so a test may read audit_logs directly; returns how many.

    The vault's own sequencer may be chaining some of them right now, and a sequencer
    skips events another one holds (migration 023): holding the sequencers' lock
    exclusively first waits for it to commit and keeps it out until this is done."""
    chained = 0
    await conn.execute("SELECT pg_advisory_lock($1)", AUDIT_SEQUENCER_LOCK)
    try:
        while (n := await conn.fetchval("SELECT singura.audit_sequence(10000)")) > 0:
            chained += n
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", AUDIT_SEQUENCER_LOCK)
    return chained


async def all_events(stubs: Stubs, org: str, **filters: object) -> list[pb.AuditEvent]:
    events: list[pb.AuditEvent] = []
    token = ""
    while True:
        page = await stubs_audit(stubs).ListAuditEvents(
            pb.ListAuditEventsRequest(
                organization_id=org,
                filter=pb.AuditFilter(**filters),  # type: ignore[arg-type]  # filters are the test's keyword arguments
                page_size=7,
                page_token=token,
            )
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


def stubs_audit(stubs: Stubs) -> pb_grpc.AuditServiceStub:
    return pb_grpc.AuditServiceStub(stubs.channel)


async def verify(stubs: Stubs, org: str) -> pb.VerifyAuditChainResponse:
    return await stubs_audit(stubs).VerifyAuditChain(
        pb.VerifyAuditChainRequest(organization_id=org)
    )


async def chain_of(vault: Vault, events: int) -> tuple[str, list[pb.AuditEvent]]:
    org = await new_org(vault)
    conn = await new_connection(vault, org)
    for i in range(events - 2):
        await vault.connections.UpdateConnection(
            cpb.UpdateConnectionRequest(
                connection=cpb.Connection(organization_id=org, id=conn, display_name=f"n{i}"),
                update_mask=__import__(
                    "google.protobuf.field_mask_pb2"
                ).protobuf.field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
    return org, list(reversed(await all_events(vault, org)))
