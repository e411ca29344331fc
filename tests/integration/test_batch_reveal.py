"""BatchRevealCredentials: up to 100 credentials in one call, a result per item, one
audit event per credential found."""

from __future__ import annotations

import uuid

import asyncpg
import grpc

from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from tests.support.api_keys import make_key
from tests.support.audit import chain_pending_audit
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, API_KEY, store
from tests.support.messages import connection_message
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault

REFRESH = crpb.CREDENTIAL_TYPE_REFRESH_TOKEN


def item(conn: str, type_: int, version: int = 0) -> crpb.BatchRevealItem:
    return crpb.BatchRevealItem(connection_id=conn, type=type_, version=version)


async def test_each_item_gets_its_own_result_and_audit_event(vault: Vault, owner_dsn: str) -> None:
    """Two good items, a revoked one, a tampered one and a missing one: the good values
    come back, each failure carries its own code, and the four credentials found are
    audited as credential.revealed (two successes, two failures)."""
    org, conn = await tenant(vault)
    other = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org))
        )
    ).connection.id
    first, second = canary("batch-1"), canary("batch-2")
    await store(vault, org, conn, first)
    await store(vault, org, conn, canary("batch-current"))
    await store(vault, org, other, second, API_KEY)
    revoked = await store(vault, org, other, canary("batch-revoked"), REFRESH)
    await vault.credentials.RevokeCredential(
        crpb.RevokeCredentialRequest(organization_id=org, credential_id=revoked.id)
    )
    tampered = await store(vault, org, conn, canary("batch-tampered"), API_KEY)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        await owner.execute(
            "UPDATE singura.encrypted_credentials "
            "SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1) WHERE id = $1",
            uuid.UUID(tampered.id),
        )
    finally:
        await owner.close()

    response = await vault.credentials.BatchRevealCredentials(
        crpb.BatchRevealCredentialsRequest(
            organization_id=org,
            items=[
                item(conn, ACCESS, 1),
                item(other, API_KEY),
                item(other, REFRESH),
                item(conn, API_KEY),
                item(other, ACCESS),
            ],
        )
    )
    codes = [r.code for r in response.results]
    assert codes == [
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        grpc.StatusCode.DATA_LOSS.value[0],
        grpc.StatusCode.NOT_FOUND.value[0],
    ]
    assert [r.value for r in response.results[:2]] == [first, second]
    assert response.results[0].credential.version == 1
    assert all(r.value == "" for r in response.results[2:])
    assert response.results[2].credential.id == revoked.id
    assert "revoked" in response.results[2].message
    assert "integrity" in response.results[3].message
    assert not response.results[4].HasField("credential")

    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        await chain_pending_audit(owner)
        outcomes = await owner.fetch(
            "SELECT outcome, count(*) AS n FROM singura.audit_logs "
            "WHERE organization_id = $1 AND action = 'credential.revealed' GROUP BY outcome",
            uuid.UUID(org),
        )
    finally:
        await owner.close()
    assert {r["outcome"]: r["n"] for r in outcomes} == {"success": 2, "failure": 2}


async def test_a_batch_is_checked_as_a_whole_first(vault: Vault) -> None:
    """No items, more than 100, a malformed connection id, a missing type: the call is
    INVALID_ARGUMENT naming the item; a key without the revealer role is refused."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("batch-checked"))

    async def batch(
        items: list[crpb.BatchRevealItem], stubs: Stubs = vault
    ) -> crpb.BatchRevealCredentialsResponse:
        return await stubs.credentials.BatchRevealCredentials(
            crpb.BatchRevealCredentialsRequest(organization_id=org, items=items)
        )

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_status(batch([]), invalid, "items: must hold 1 to 100")
    await expect_status(batch([item(conn, ACCESS)] * 101), invalid, "not 101")
    await expect_status(
        batch([item(conn, ACCESS), item(conn, ACCESS), item("nope", ACCESS)]),
        invalid,
        "items[2].connection_id",
    )
    await expect_status(
        batch([item(conn, crpb.CREDENTIAL_TYPE_UNSPECIFIED)]), invalid, "items[0].type"
    )
    full = await batch([item(conn, ACCESS)] * 100)
    assert len(full.results) == 100
    reader = vault.as_key(await make_key(vault, org, (apb.API_KEY_ROLE_READER,)))
    await expect_status(batch([item(conn, ACCESS)], reader), grpc.StatusCode.PERMISSION_DENIED)
