"""Audit reads under row-level security: each chain read walks audit_logs_chain_idx.

The plans are taken as the service role inside the vault's own scoped transactions
(``Database.tenant`` / ``Database.admin``), over a table where other organizations'
events far outnumber the one read. Speed figures are in bench/scale.py, not here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest

from singura_vault.db.pool import Database
from singura_vault.domain.audit import AuditFilter
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import audit_pb2 as pb
from singura_vault.proto.singura.vault.v1 import audit_pb2_grpc as pb_grpc
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.repositories.audit import AuditRepository
from singura_vault.repositories.queries import query
from tests.support.audit import chain_pending_audit
from tests.support.messages import org_message
from tests.support.postgres import PostgresServer
from tests.support.status import expect_status
from tests.support.vault import Stubs, Vault

OTHER_ORGANIZATIONS = 15
OTHER_EVENTS_EACH = 1_000
BIG_EVENTS = 5_000
SMALL_EVENTS = 30
SYSTEM_EVENTS = 200
BIGINT_MAX = 2**63 - 1
NO_FILTER = (None,) * 7

INSERT_EVENTS = """
INSERT INTO singura.audit_logs
    (organization_id, actor, action, resource_type, resource_id, request_id, details)
SELECT $1::uuid, 'loadactor0000001', 'credential.revealed', 'credential',
       gen_random_uuid()::text, gen_random_uuid()::text,
       jsonb_build_object('credential_type', 'access_token', 'version', 1)
  FROM generate_series(1, $2)
"""


@dataclass(frozen=True)
class Trail:
    """The loaded table: a small and a big organization among many others."""

    small: uuid.UUID
    big: uuid.UUID
    heads: dict[uuid.UUID, int]  # chain length per chain key (nil UUID: system chain)

    def length(self, org: uuid.UUID | None) -> int:
        return self.heads[org or uuid.UUID(int=0)]


async def _load(owner: asyncpg.Connection, org: uuid.UUID | None, count: int) -> None:
    """``count`` events recorded as the service records them (chained by the fixture)."""
    async with owner.transaction():
        await owner.execute(
            "SELECT set_config('singura.organization_id', $1, true)", str(org or "")
        )
        await owner.execute(INSERT_EVENTS, org, count)


async def _new_org(vault: Vault) -> uuid.UUID:
    response = await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_ENTERPRISE))
    )
    return uuid.UUID(response.organization.id)


@pytest.fixture
async def trail(vault: Vault, owner_dsn: str) -> Trail:
    """20,000 events of other organizations, a 5,001-event and a 31-event organization,
    and a system chain of 200+ events; statistics analyzed as autovacuum would."""
    small = await _new_org(vault)
    big = await _new_org(vault)
    owner = await asyncpg.connect(owner_dsn)
    try:
        for _ in range(OTHER_ORGANIZATIONS):
            await _load(owner, uuid.uuid4(), OTHER_EVENTS_EACH)
        await _load(owner, big, BIG_EVENTS)
        await _load(owner, small, SMALL_EVENTS)
        await _load(owner, None, SYSTEM_EVENTS)
        await chain_pending_audit(owner)
        await owner.execute("ANALYZE singura.audit_logs")
        heads = {
            r["chain_key"]: r["last_seq"]
            for r in await owner.fetch("SELECT chain_key, last_seq FROM singura.audit_chain_heads")
        }
    finally:
        await owner.close()
    return Trail(small, big, heads)


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return f"'{value}'"


async def _plan(
    db: Database, org: uuid.UUID | None, name: str, *args: object, generic: bool = False
) -> list[dict[str, Any]]:
    """Every node of the executed plan of a named query, in the vault's scope for ``org``
    (tenant, or admin for the system chain): the custom plan asyncpg's first executions
    get, or (``generic``) the generic plan a cached prepared statement may switch to."""
    scope = db.admin() if org is None else db.tenant(org)
    async with scope as conn:
        if generic:
            await conn.execute(f"PREPARE chain_read AS {query(name)}")
            try:
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                literals = ", ".join(_literal(a) for a in args)
                explained = await conn.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE chain_read({literals})"
                )
            finally:
                await conn.execute("DEALLOCATE chain_read")
        else:
            explained = await conn.fetchval(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query(name)}", *args
            )
    # The pool decodes json itself; a plain connection would hand back the text.
    plan = json.loads(explained) if isinstance(explained, str) else explained
    return list(_nodes(plan[0]["Plan"]))


def _assert_walks_the_chain_index(nodes: list[dict[str, Any]], org: uuid.UUID | None) -> None:
    """Each audit_logs access is audit_logs_chain_idx with the chain (and the keyset) as
    its index condition; executed plans read no row the policy then throws away, so a
    Sort, if any, sorts only the chain's own rows."""
    chain_cond = "organization_id IS NULL" if org is None else "organization_id = "
    scans = [n for n in nodes if n.get("Relation Name") == "audit_logs"]
    assert scans, nodes
    assert {n["Node Type"] for n in scans} <= {"Index Scan", "Bitmap Heap Scan"}, scans
    index_nodes = [n for n in nodes if "Index Name" in n]
    assert index_nodes, nodes
    for node in index_nodes:
        assert node["Index Name"] == "audit_logs_chain_idx", node
        assert chain_cond in node["Index Cond"], node
        assert "chain_seq" in node["Index Cond"], node
    for node in scans:
        assert node.get("Rows Removed by Filter", 0) == 0, node
        assert node.get("Rows Removed by Index Recheck", 0) == 0, node


def _chain_reads(trail: Trail) -> list[tuple[uuid.UUID | None, str, tuple[object, ...]]]:
    """Each chain read with first-batch arguments, for an organization and the system."""
    reads: list[tuple[uuid.UUID | None, str, tuple[object, ...]]] = []
    for org in (trail.small, trail.big):
        reads += [
            (org, "audit_list", (org, *NO_FILTER, BIGINT_MAX, 51)),
            (org, "audit_list", (org, *NO_FILTER, 40, 51)),
            (org, "audit_export", (org, *NO_FILTER, 0, 1000)),
            (org, "audit_export", (org, *NO_FILTER, 2000, 1000)),
            (org, "audit_chain_batch", (org, 0, 5000)),
        ]
    reads += [
        (None, "audit_list_system", (*NO_FILTER, BIGINT_MAX, 51)),
        (None, "audit_export_system", (*NO_FILTER, 0, 1000)),
        (None, "audit_chain_batch_system", (0, 5000)),
    ]
    return reads


async def test_every_audit_read_is_an_index_condition_under_row_level_security(
    trail: Trail, db: Database
) -> None:
    """List, export and verify batches of an organization and of the system chain walk
    audit_logs_chain_idx on organization_id as the service role (custom and generic
    plans), a long chain's first page and batch need no Sort (custom plans, as asyncpg
    executes them), and the chain state reads
    only the chain's own head and checkpoint rows."""
    for org, name, args in _chain_reads(trail):
        custom = await _plan(db, org, name, *args)
        assert not [n for n in custom if n["Node Type"] == "Seq Scan"], (name, custom)
        _assert_walks_the_chain_index(custom, org)
        generic = await _plan(db, org, name, *args, generic=True)
        _assert_walks_the_chain_index(generic, org)
        if org is not None:
            assert any("organization_id = $1" in n.get("Index Cond", "") for n in generic)

    for name, args in (
        ("audit_list", (trail.big, *NO_FILTER, BIGINT_MAX, 51)),
        ("audit_export", (trail.big, *NO_FILTER, 0, 1000)),
    ):
        nodes = await _plan(db, trail.big, name, *args)
        assert [n["Node Type"] for n in nodes if n["Node Type"] in ("Sort", "Seq Scan")] == []
        (scan,) = (n for n in nodes if n.get("Relation Name") == "audit_logs")
        assert scan["Node Type"] == "Index Scan"
        assert scan["Actual Rows"] == args[-1]

    for org in (trail.small, None):
        key = org or uuid.UUID(int=0)
        for name in ("audit_head", "audit_checkpoint"):
            nodes = await _plan(db, org, name, key)
            assert all(n.get("Relation Name") != "audit_logs" for n in nodes)
            scans = [n for n in nodes if "Relation Name" in n]
            assert scans
            assert all("chain_key" in n.get("Index Cond", n.get("Filter", "")) for n in scans)
        state = await AuditRepository(db).chain_state(org)
        assert state.head_sequence == trail.length(org)


def _audit(stubs: Stubs) -> pb_grpc.AuditServiceStub:
    return pb_grpc.AuditServiceStub(stubs.channel)


async def _pages(stubs: Stubs, org: str, page_size: int, **filters: object) -> list[pb.AuditEvent]:
    events: list[pb.AuditEvent] = []
    token = ""
    while True:
        page = await _audit(stubs).ListAuditEvents(
            pb.ListAuditEventsRequest(
                organization_id=org,
                filter=pb.AuditFilter(**filters),  # type: ignore[arg-type]  # filters are the test's keyword arguments
                page_size=page_size,
                page_token=token,
            )
        )
        assert len(page.events) <= page_size
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


async def _export(stubs: Stubs, org: str) -> list[list[pb.AuditEvent]]:
    return [
        list(message.events)
        async for message in _audit(stubs).ExportAuditEvents(
            pb.ExportAuditEventsRequest(organization_id=org)
        )
    ]


async def test_pages_exports_and_verification_are_unchanged(trail: Trail, vault: Vault) -> None:
    """Paging is newest first without gaps, exports are oldest first in bounded batches,
    each holding only the chain asked for, and every chain verifies."""
    for org in (trail.small, trail.big, None):
        name = str(org or "")
        length = trail.length(org)
        if length < 1000:
            listed = await _pages(vault, name, 7)
            assert [e.sequence for e in listed] == list(range(length, 0, -1))
            assert {e.organization_id for e in listed} == {name}
        batches = await _export(vault, name)
        assert max(len(b) for b in batches) <= 1000
        exported = [e for batch in batches for e in batch]
        assert [e.sequence for e in exported] == list(range(1, length + 1))
        assert {e.organization_id for e in exported} == {name}
        result = await _audit(vault).VerifyAuditChain(
            pb.VerifyAuditChainRequest(organization_id=name)
        )
        assert (result.ok, result.event_count) == (True, length), result.problem
    newest = await _audit(vault).ListAuditEvents(
        pb.ListAuditEventsRequest(organization_id=str(trail.big), page_size=1000)
    )
    assert [e.sequence for e in newest.events] == list(range(trail.length(trail.big), 4001, -1))
    revealed = await _pages(vault, str(trail.small), 9, action="credential.revealed")
    assert [e.sequence for e in revealed] == list(range(SMALL_EVENTS + 1, 1, -1))


async def test_an_organization_still_reads_only_its_own_events(
    trail: Trail, vault: Vault, db: Database, owner_dsn: str
) -> None:
    """Naming another organization's chain, or the system chain, in a tenant's
    transaction returns nothing; admin scope reads no tenant's events; an organization
    key is refused another organization's trail; row-level security stays forced."""
    repository = AuditRepository(db)
    async with db.tenant(trail.small) as conn:
        assert await conn.fetch(query("audit_list"), trail.big, *NO_FILTER, BIGINT_MAX, 100) == []
        assert await conn.fetch(query("audit_export"), trail.big, *NO_FILTER, 0, 100) == []
        assert await conn.fetch(query("audit_chain_batch"), trail.big, 0, 100) == []
        assert await conn.fetch(query("audit_list_system"), *NO_FILTER, BIGINT_MAX, 100) == []
        assert await conn.fetch(query("audit_export_system"), *NO_FILTER, 0, 100) == []
        assert await conn.fetch(query("audit_chain_batch_system"), 0, 100) == []
        mine = await conn.fetch(query("audit_list"), trail.small, *NO_FILTER, BIGINT_MAX, 100)
        assert len(mine) == trail.length(trail.small)
    async with db.admin() as conn:
        assert await conn.fetch(query("audit_list"), trail.small, *NO_FILTER, BIGINT_MAX, 9) == []
        assert await conn.fetch(query("audit_chain_batch"), trail.big, 0, 9) == []
    system = await repository.newest_first(None, AuditFilter(), None, 10_000)
    assert len(system) == trail.length(None)
    assert {e.organization_id for e in system} == {None}

    created = await vault.access.CreateApiKey(
        apb.CreateApiKeyRequest(organization_id=str(trail.small), roles=[apb.API_KEY_ROLE_READER])
    )
    reader = vault.as_key(created.secret)
    for call in (
        _audit(reader).ListAuditEvents(pb.ListAuditEventsRequest(organization_id=str(trail.big))),
        _audit(reader).VerifyAuditChain(pb.VerifyAuditChainRequest(organization_id=str(trail.big))),
    ):
        await expect_status(call, grpc.StatusCode.PERMISSION_DENIED)
    own = await _pages(reader, str(trail.small), 100)
    assert {e.organization_id for e in own} == {str(trail.small)}

    owner = await asyncpg.connect(owner_dsn)
    try:
        flags = await owner.fetchrow(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE oid = 'singura.audit_logs'::regclass"
        )
    finally:
        await owner.close()
    assert tuple(flags) == (True, True)


async def test_positions_stay_unique_in_every_chain_the_system_chain_included(
    vault: Vault, postgres: PostgresServer, database_name: str
) -> None:
    """The chain index refuses a second event at a taken position, also where
    organization_id is NULL (NULLS NOT DISTINCT), even with the chain trigger off."""
    org = await _new_org(vault)
    conn = await asyncpg.connect(postgres.superuser_dsn, database=database_name)
    try:
        await chain_pending_audit(conn)  # so that position 1 of both chains is taken
        for chain in (org, None):
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                with pytest.raises(asyncpg.UniqueViolationError, match="audit_logs_chain_idx"):
                    await conn.execute(
                        "INSERT INTO singura.audit_logs (organization_id, chain_seq, actor, "
                        "action, resource_type, prev_hash, hash) "
                        "VALUES ($1, 1, 'x', 'test.event', 'test', '\\x00', '\\x00')",
                        chain,
                    )
    finally:
        await conn.close()
