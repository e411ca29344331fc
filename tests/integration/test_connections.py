"""ConnectionService end to end: real gRPC channel, real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from google.protobuf import field_mask_pb2

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.audit import chain_pending_audit
from tests.support.canaries import canary
from tests.support.messages import connection_message, org_message
from tests.support.status import expect_status
from tests.support.vault import Vault


async def new_org(vault: Vault, plan: int = opb.PLAN_STARTER) -> opb.Organization:
    response = await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(organization=org_message(plan=plan))
    )
    return response.organization


async def new_connection(vault: Vault, org_id: str, **overrides: object) -> cpb.Connection:
    response = await vault.connections.CreateConnection(
        cpb.CreateConnectionRequest(connection=connection_message(org_id, **overrides))
    )
    return response.connection


async def test_create_get_and_list_a_connection(vault: Vault) -> None:
    """A created connection is ACTIVE, readable, and listed in its organization only."""
    org = await new_org(vault)
    other = await new_org(vault)
    message = connection_message(org.id, display_name="Acme Slack")
    message.metadata.update({"team": "Acme"})
    created = (
        await vault.connections.CreateConnection(cpb.CreateConnectionRequest(connection=message))
    ).connection
    assert created.status == cpb.CONNECTION_STATUS_ACTIVE
    assert list(created.permissions_granted) == ["channels:read", "users:read"]
    assert dict(created.metadata) == {"team": "Acme"}
    fetched = await vault.connections.GetConnection(
        cpb.GetConnectionRequest(organization_id=org.id, connection_id=created.id)
    )
    assert fetched.connection == created
    listed = await vault.connections.ListConnections(
        cpb.ListConnectionsRequest(organization_id=org.id)
    )
    assert [c.id for c in listed.connections] == [created.id]
    elsewhere = await vault.connections.ListConnections(
        cpb.ListConnectionsRequest(organization_id=other.id)
    )
    assert list(elsewhere.connections) == []


async def test_connection_of_another_organization_is_not_found(vault: Vault) -> None:
    """Asking for a connection under the wrong organization is NOT_FOUND."""
    org = await new_org(vault)
    other = await new_org(vault)
    conn = await new_connection(vault, org.id)
    await expect_status(
        vault.connections.GetConnection(
            cpb.GetConnectionRequest(organization_id=other.id, connection_id=conn.id)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_status(
        vault.connections.DeleteConnection(
            cpb.DeleteConnectionRequest(organization_id=other.id, connection_id=conn.id)
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_list_filters_and_paginates_newest_first(vault: Vault) -> None:
    """Filters by platform and status, pages of 2, each connection exactly once, newest first."""
    org = await new_org(vault, plan=opb.PLAN_PROFESSIONAL)
    slack = [(await new_connection(vault, org.id)).id for _ in range(3)]
    github = [
        (await new_connection(vault, org.id, platform=cpb.PLATFORM_GITHUB)).id for _ in range(2)
    ]
    await vault.connections.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            organization_id=org.id,
            connection_id=slack[0],
            status=cpb.CONNECTION_STATUS_ERROR,
            reason="token rejected",
        )
    )

    async def collect(**filters: object) -> list[str]:
        ids: list[str] = []
        token = ""
        while True:
            page = await vault.connections.ListConnections(
                cpb.ListConnectionsRequest(
                    organization_id=org.id, page_size=2, page_token=token, **filters
                )
            )
            assert len(page.connections) <= 2
            ids.extend(c.id for c in page.connections)
            token = page.next_page_token
            if not token:
                return ids

    assert await collect() == list(reversed(slack + github))
    assert await collect(platform=cpb.PLATFORM_SLACK) == list(reversed(slack))
    assert await collect(status=cpb.CONNECTION_STATUS_ERROR) == [slack[0]]
    assert await collect(platform=cpb.PLATFORM_GITHUB, status=cpb.CONNECTION_STATUS_ACTIVE) == list(
        reversed(github)
    )


async def test_page_token_replayed_with_other_filters_is_invalid(vault: Vault) -> None:
    """A page token only continues the listing it came from."""
    org = await new_org(vault)
    for _ in range(3):
        await new_connection(vault, org.id)
    page = await vault.connections.ListConnections(
        cpb.ListConnectionsRequest(organization_id=org.id, page_size=1)
    )
    assert page.next_page_token
    await expect_status(
        vault.connections.ListConnections(
            cpb.ListConnectionsRequest(
                organization_id=org.id,
                page_size=1,
                page_token=page.next_page_token,
                platform=cpb.PLATFORM_ZOOM,
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )
    await expect_status(
        vault.connections.ListConnections(
            cpb.ListConnectionsRequest(organization_id=org.id, page_token="garbage!")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )


async def test_update_connection_with_mask_and_etag(vault: Vault) -> None:
    """UpdateConnection changes masked fields only, and refuses a stale etag."""
    org = await new_org(vault)
    conn = await new_connection(vault, org.id)
    change = cpb.Connection(
        organization_id=org.id,
        id=conn.id,
        display_name="Renamed",
        permissions_granted=["admin"],
        platform_user_id="ignored",
    )
    updated = (
        await vault.connections.UpdateConnection(
            cpb.UpdateConnectionRequest(
                connection=change,
                update_mask=field_mask_pb2.FieldMask(paths=["display_name", "permissions_granted"]),
                etag=conn.etag,
            )
        )
    ).connection
    assert updated.display_name == "Renamed"
    assert list(updated.permissions_granted) == ["admin"]
    assert updated.platform_user_id == conn.platform_user_id
    await expect_status(
        vault.connections.UpdateConnection(
            cpb.UpdateConnectionRequest(
                connection=change,
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                etag=conn.etag,
            )
        ),
        grpc.StatusCode.ABORTED,
    )
    await expect_status(
        vault.connections.UpdateConnection(
            cpb.UpdateConnectionRequest(
                connection=change, update_mask=field_mask_pb2.FieldMask(paths=["platform"])
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update_mask",
        "platform",
    )


async def test_status_changes_are_recorded_with_reason(vault: Vault, owner_dsn: str) -> None:
    """Every status change keeps its reason and writes an audit event old -> new."""
    import asyncpg

    org = await new_org(vault)
    conn = await new_connection(vault, org.id)
    changed = (
        await vault.connections.UpdateConnectionStatus(
            cpb.UpdateConnectionStatusRequest(
                organization_id=org.id,
                connection_id=conn.id,
                status=cpb.CONNECTION_STATUS_REVOKED,
                reason="user revoked the app in Slack",
            )
        )
    ).connection
    assert changed.status == cpb.CONNECTION_STATUS_REVOKED
    assert changed.status_reason == "user revoked the app in Slack"
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org.id)
        await chain_pending_audit(owner)
        rows = await owner.fetch(
            "SELECT action, actor, request_id, resource_id, details::text AS details "
            "FROM singura.audit_logs WHERE action = 'connection.status_changed'"
        )
    finally:
        await owner.close()
    assert len(rows) == 1
    assert rows[0]["actor"] == vault.admin_key[4:20]
    assert rows[0]["request_id"]
    assert rows[0]["resource_id"] == conn.id
    assert '"old_status": "active"' in rows[0]["details"]
    assert '"new_status": "revoked"' in rows[0]["details"]
    assert '"reason": "user revoked the app in Slack"' in rows[0]["details"]


async def test_plan_limit_caps_active_connections(vault: Vault) -> None:
    """A FREE organization gets 3 active connections; the 4th is RESOURCE_EXHAUSTED."""
    org = await new_org(vault, plan=opb.PLAN_FREE)
    conns = [await new_connection(vault, org.id) for _ in range(3)]
    await expect_status(
        vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org.id))
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "limit",
        "free",
        "(3)",
    )
    # Deactivating one makes room; reactivating it past the limit is refused again.
    await vault.connections.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            organization_id=org.id,
            connection_id=conns[0].id,
            status=cpb.CONNECTION_STATUS_INACTIVE,
            reason="paused",
        )
    )
    await new_connection(vault, org.id)
    await expect_status(
        vault.connections.UpdateConnectionStatus(
            cpb.UpdateConnectionStatusRequest(
                organization_id=org.id,
                connection_id=conns[0].id,
                status=cpb.CONNECTION_STATUS_ACTIVE,
                reason="resume",
            )
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )


async def test_plan_limit_holds_under_concurrent_creates(vault: Vault) -> None:
    """Ten concurrent creates in a FREE organization yield exactly 3 connections."""
    org = await new_org(vault, plan=opb.PLAN_FREE)
    calls = [
        vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org.id))
        )
        for _ in range(10)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, cpb.CreateConnectionResponse)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 3
    assert len(failed) == 7
    assert {e.code() for e in failed} == {grpc.StatusCode.RESOURCE_EXHAUSTED}


async def test_idempotent_create_and_duplicate_account(vault: Vault) -> None:
    """Same request_id returns the same connection; same platform account is ALREADY_EXISTS."""
    org = await new_org(vault)
    message = connection_message(org.id)
    request_id = str(uuid.uuid4())
    first = await vault.connections.CreateConnection(
        cpb.CreateConnectionRequest(connection=message, request_id=request_id)
    )
    again = await vault.connections.CreateConnection(
        cpb.CreateConnectionRequest(connection=message, request_id=request_id)
    )
    assert again.connection.id == first.connection.id
    await expect_status(
        vault.connections.CreateConnection(cpb.CreateConnectionRequest(connection=message)),
        grpc.StatusCode.ALREADY_EXISTS,
        "platform_user_id",
    )


async def test_deleting_an_organization_cascades_to_connections(
    vault: Vault, owner_dsn: str
) -> None:
    """DeleteOrganization removes its connections, credentials and data keys too."""
    import asyncpg

    org = await new_org(vault)
    conn = await new_connection(vault, org.id)
    await vault.credentials.StoreCredential(
        crpb.StoreCredentialRequest(
            organization_id=org.id,
            connection_id=conn.id,
            type=crpb.CREDENTIAL_TYPE_API_KEY,
            value=canary("cascade"),
        )
    )
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org.id)
        await vault.organizations.DeleteOrganization(
            opb.DeleteOrganizationRequest(organization_id=org.id)
        )
        counts = await owner.fetchrow(
            "SELECT (SELECT count(*) FROM singura.platform_connections) AS connections, "
            "(SELECT count(*) FROM singura.encrypted_credentials) AS credentials, "
            "(SELECT count(*) FROM singura.data_keys) AS data_keys"
        )
    finally:
        await owner.close()
    assert counts is not None
    assert (counts["connections"], counts["credentials"], counts["data_keys"]) == (0, 0, 0)
    await expect_status(
        vault.connections.GetConnection(
            cpb.GetConnectionRequest(organization_id=org.id, connection_id=conn.id)
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_delete_connection(vault: Vault) -> None:
    """DeleteConnection with force removes it at once; a second delete is NOT_FOUND."""
    org = await new_org(vault)
    conn = await new_connection(vault, org.id)
    request = cpb.DeleteConnectionRequest(organization_id=org.id, connection_id=conn.id, force=True)
    await vault.connections.DeleteConnection(request)
    await expect_status(vault.connections.DeleteConnection(request), grpc.StatusCode.NOT_FOUND)
