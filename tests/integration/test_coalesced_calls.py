"""Coalesced statements over a real vault and PostgreSQL (migration 022): calls of
several organizations in one batch each get exactly their own outcome and audit event,
and the batch functions refuse, under row-level security, an item whose scope is not
its organization's."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import grpc
import pytest

from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.repositories.queries import query
from tests.support.api_keys import make_key
from tests.support.audit import chain_pending_audit
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, API_KEY, store
from tests.support.gated_database import GatedDatabase, spin_until
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Vault


def _reveal(org: str, conn: str, type_: int = ACCESS) -> crpb.RevealCredentialRequest:
    return crpb.RevealCredentialRequest(organization_id=org, connection_id=conn, type=type_)


async def test_one_batch_of_reveals_across_organizations_gives_each_call_its_own_outcome(
    gated: tuple[Vault, GatedDatabase], owner_dsn: str
) -> None:
    """Reveals of two organizations coalesced into one batch each get their own value or refusal, as
    the caller's key allows."""
    vault, db = gated
    org_a, conn_a = await tenant(vault)
    org_b, conn_b = await tenant(vault)
    value_a, value_b = canary("coalesce-a"), canary("coalesce-b")
    await store(vault, org_a, conn_a, value_a)
    await store(vault, org_b, conn_b, value_b)
    key_b = await make_key(vault, org_b, (apb.API_KEY_ROLE_REVEALER,))
    as_b = vault.as_key(key_b)
    db.batches.clear()

    db.hold_next("credential_for_reveal_batch")
    first = asyncio.ensure_future(vault.credentials.RevealCredential(_reveal(org_a, conn_a)))
    await db.entered.wait()
    calls = [
        vault.credentials.RevealCredential(_reveal(org_a, conn_a)),
        as_b.credentials.RevealCredential(_reveal(org_b, conn_b)),
        # Missing in its own organization: fails alone.
        vault.credentials.RevealCredential(_reveal(org_b, conn_b, API_KEY)),
        # Missing by a key of organization B, while B's credential is read in the batch.
        as_b.credentials.RevealCredential(_reveal(org_b, conn_a)),
    ]
    pending = [asyncio.ensure_future(call) for call in calls]
    reveals = db.components.credential_reveals
    await spin_until(lambda: len(reveals._reveal_reads._waiting) == 4)
    db.release.set()
    results = await asyncio.gather(first, *pending, return_exceptions=True)

    assert db.batches[:2] == [
        ("credential_for_reveal_batch", 1),
        ("credential_for_reveal_batch", 4),
    ]
    assert results[0].value == value_a  # type: ignore[union-attr]
    assert results[1].value == value_a  # type: ignore[union-attr]
    assert results[2].value == value_b  # type: ignore[union-attr]
    for refused in results[3:]:
        assert isinstance(refused, grpc.aio.AioRpcError)
        assert refused.code() == grpc.StatusCode.NOT_FOUND
    assert sum(n for name, n in db.batches if name == "audit_append_batch") == 3

    # One credential.revealed event per revealed value, in its own organization, by its
    # own caller; nothing for the two calls that found nothing.
    owner = await asyncpg.connect(owner_dsn)
    try:
        await chain_pending_audit(owner)
        rows = await owner.fetch(
            "SELECT organization_id, actor FROM singura.audit_logs "
            "WHERE action = 'credential.revealed' AND organization_id = ANY($1::uuid[])",
            [uuid.UUID(org_a), uuid.UUID(org_b)],
        )
    finally:
        await owner.close()
    by_org: dict[str, list[str]] = {}
    for row in rows:
        by_org.setdefault(str(row["organization_id"]), []).append(row["actor"])
    assert len(by_org[org_a]) == 2
    assert len(set(by_org[org_a])) == 1
    assert len(by_org[org_b]) == 1
    assert by_org[org_b] != by_org[org_a][:1]


async def test_concurrent_stores_in_one_batch_keep_versions_consecutive(
    gated: tuple[Vault, GatedDatabase],
) -> None:
    """Stores of one credential planned in one batch all planned the same version: one
    lands, the others lose the race inside their write batch and plan again on their
    own; versions stay 1..n with exactly one current. A store of another organization
    in the same batches lands."""
    vault, db = gated
    org_a, conn_a = await tenant(vault)
    org_b, conn_b = await tenant(vault)
    await store(vault, org_a, conn_a, canary("coalesce-v1"))
    db.batches.clear()

    db.hold_next("credential_store_plan_batch")
    first = asyncio.ensure_future(store(vault, org_a, conn_a, canary("coalesce-v-first")))
    await db.entered.wait()
    values = [canary(f"coalesce-v{n}") for n in range(4)]
    pending = [asyncio.ensure_future(store(vault, org_a, conn_a, v)) for v in values]
    other = asyncio.ensure_future(store(vault, org_b, conn_b, canary("coalesce-other")))
    stores = db.components.credential_store
    await spin_until(lambda: len(stores._store_plans._waiting) == 5)
    db.release.set()
    stored = await asyncio.gather(first, *pending, other)

    assert ("credential_store_plan_batch", 5) in db.batches
    versions = sorted(c.version for c in stored[:-1])
    assert versions == [2, 3, 4, 5, 6]
    assert stored[-1].version == 1
    listed = await vault.credentials.ListCredentialVersions(
        crpb.ListCredentialVersionsRequest(organization_id=org_a, connection_id=conn_a, type=ACCESS)
    )
    assert [c.version for c in listed.credentials] == [6, 5, 4, 3, 2, 1]
    active = [c for c in listed.credentials if c.state == crpb.CREDENTIAL_STATE_ACTIVE]
    assert len(active) == 1
    assert active[0].version == 6
    revealed = await vault.credentials.RevealCredential(_reveal(org_a, conn_a))
    assert revealed.credential.version == 6


async def test_batch_functions_refuse_an_item_outside_its_scope(
    vault: Vault, service_dsn: str
) -> None:
    """The isolation argument of migration 022, checked on the functions themselves as
    the service role: an item's rows are read and written under its own scope only."""
    org_a, conn_a = await tenant(vault)
    org_b, conn_b = await tenant(vault)
    await store(vault, org_a, conn_a, canary("scope-a"))
    await store(vault, org_b, conn_b, canary("scope-b"))
    a, b = uuid.UUID(org_a), uuid.UUID(org_b)
    tenant_setting = "singura.organization_id"
    conn = await asyncpg.connect(service_dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        # Item 1 in A's scope reads A's credential; item 2 claims B's credential under
        # A's scope; item 3 reads B's under B's scope.
        rows = await conn.fetch(
            query("credential_for_reveal_batch"),
            [tenant_setting] * 3,
            [org_a, org_a, org_b],
            ["t", "t", "t"],
            ["", "", ""],
            [a, b, b],
            [uuid.UUID(conn_a), uuid.UUID(conn_b), uuid.UUID(conn_b)],
            ["access_token"] * 3,
            [0, 0, 0],
        )
        assert sorted((r["ord"], r["organization_id"]) for r in rows) == [(1, a), (3, b)]
        # An audit event for B written under A's scope: refused by the policy, and the
        # whole statement with it (nothing half-written).
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(
                query("audit_append_batch"),
                [tenant_setting] * 2,
                [org_a, org_a],
                ["t", "t"],
                ["", ""],
                [a, b],
                ["credential.revealed"] * 2,
                ["credential"] * 2,
                ["x", "y"],
                ["success"] * 2,
                [{}, {}],
            )
        # Admin scope reaches no tenant row either.
        rows = await conn.fetch(
            query("credential_for_reveal_batch"),
            ["singura.scope"],
            ["admin"],
            ["t"],
            [""],
            [a],
            [uuid.UUID(conn_a)],
            ["access_token"],
            [0],
        )
        assert rows == []
        # A made-up scope setting is refused outright.
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await conn.fetch(
                query("credential_get_batch"),
                ["singura.something_else"],
                [org_a],
                ["t"],
                [""],
                [a],
                [uuid.uuid4()],
            )
    finally:
        await conn.close()


async def test_a_reveal_alone_goes_at_once(gated: tuple[Vault, GatedDatabase]) -> None:
    """An idle vault adds no wait: a single call is a batch of one, sent as it arrives."""
    vault, db = gated
    org, conn = await tenant(vault)
    value = canary("coalesce-alone")
    await store(vault, org, conn, value)
    db.batches.clear()
    revealed = await vault.credentials.RevealCredential(_reveal(org, conn))
    assert revealed.value == value
    assert db.batches == [("credential_for_reveal_batch", 1), ("audit_append_batch", 1)]
    await expect_status(
        vault.credentials.RevealCredential(_reveal(org, conn, API_KEY)), grpc.StatusCode.NOT_FOUND
    )


async def test_a_batched_store_lands_only_on_top_of_its_predecessor(
    vault: Vault, service_dsn: str
) -> None:
    """Stores planned together take consecutive versions; in the write statement a
    version whose predecessor has not landed is refused as a lost race (the vault plans
    it again), and the items after it in the batch still land."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("gap-v1"))
    o, c = uuid.UUID(org), uuid.UUID(conn)
    scope = ["singura.organization_id", org, "t", ""]

    def item(version: int) -> list[object]:
        return [o, uuid.uuid4(), c, "access_token", version, b"\x00" * 32, b"\x00" * 12, 1, "f"]

    items = [item(3), item(2)]
    conn_ = await asyncpg.connect(service_dsn)
    try:
        rows = await conn_.fetch(
            query("credential_store_batch"),
            *([value] * len(items) for value in scope),
            *(list(column) for column in zip(*items, strict=True)),
            [None] * len(items),
            [None] * len(items),
        )
        versions = await conn_.fetch(
            query("credential_versions_scoped"), *scope, o, c, "access_token", None, 10
        )
    finally:
        await conn_.close()
    outcomes = sorted((r["ord"], r["failed"], r["version"]) for r in rows)
    assert outcomes == [(1, "encrypted_credentials_version_key", None), (2, None, 2)]
    assert [(r["version"], r["state"]) for r in versions] == [(2, "active"), (1, "superseded")]
