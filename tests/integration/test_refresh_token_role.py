"""Refresh tokens behind their own role (#29 item 4), over a real channel: revealing a
REFRESH_TOKEN needs API_KEY_ROLE_REFRESH_TOKEN_REVEALER (admin keys keep it), the
revealer role no longer covers it, a batch refuses only its refresh-token items, and
GetAccessToken, which refreshes inside the vault, still works for a revealer key."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest

from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from tests.support.api_keys import make_key
from tests.support.audit import chain_pending_audit
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, API_KEY, reveal, store
from tests.support.error_details import details
from tests.support.oauth import get_token, link
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Vault

REFRESH = crpb.CREDENTIAL_TYPE_REFRESH_TOKEN
REVEALER = apb.API_KEY_ROLE_REVEALER
REFRESH_REVEALER = apb.API_KEY_ROLE_REFRESH_TOKEN_REVEALER


def item(conn: str, type_: int) -> crpb.BatchRevealItem:
    return crpb.BatchRevealItem(connection_id=conn, type=type_)


async def test_a_revealer_key_is_refused_a_refresh_token_naming_the_role(vault: Vault) -> None:
    """A key with reader and revealer (what reading refresh tokens took before): its
    RevealCredential of a REFRESH_TOKEN is PERMISSION_DENIED naming the new role, with
    reason REFRESH_TOKEN_ROLE_REQUIRED; the same key still reveals the access token."""
    org, conn = await tenant(vault)
    access = canary("role-access")
    await store(vault, org, conn, access)
    await store(vault, org, conn, canary("role-refresh"), REFRESH)
    revealer = vault.as_key(await make_key(vault, org, (apb.API_KEY_ROLE_READER, REVEALER)))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reveal(revealer, org, conn, type_=REFRESH)
    error = info.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    message = error.details() or ""
    assert "API_KEY_ROLE_REFRESH_TOKEN_REVEALER" in message
    assert "refresh tokens" in message
    assert details(error)["ErrorInfo"].reason == "REFRESH_TOKEN_ROLE_REQUIRED"
    assert await reveal(revealer, org, conn) == access


async def test_the_new_role_and_an_admin_key_reveal_refresh_tokens(vault: Vault) -> None:
    """A key with the refresh_token_revealer role (it is stored and listed as such)
    reveals the refresh token but not an access token, which still needs revealer; the
    admin key reveals both."""
    org, conn = await tenant(vault)
    access, refresh = canary("role-new-access"), canary("role-new-refresh")
    await store(vault, org, conn, access)
    await store(vault, org, conn, refresh, REFRESH)
    created = await vault.access.CreateApiKey(
        apb.CreateApiKeyRequest(organization_id=org, roles=[REFRESH_REVEALER], name="refresh")
    )
    assert list(created.api_key.roles) == [REFRESH_REVEALER]
    listed = await vault.access.ListApiKeys(apb.ListApiKeysRequest(organization_id=org))
    assert [list(k.roles) for k in listed.api_keys] == [[REFRESH_REVEALER]]
    holder = vault.as_key(created.secret)

    assert await reveal(holder, org, conn, type_=REFRESH) == refresh
    await expect_status(
        reveal(holder, org, conn), grpc.StatusCode.PERMISSION_DENIED, "API_KEY_ROLE_REVEALER"
    )
    assert await reveal(vault, org, conn, type_=REFRESH) == refresh
    assert await reveal(vault, org, conn) == access


async def test_a_batch_refuses_only_its_refresh_token_items(vault: Vault, owner_dsn: str) -> None:
    """A revealer key's batch of an access token, a refresh token and an API key: the
    refresh token's item alone is PERMISSION_DENIED naming the role, with no value and
    no metadata, and is not audited; the other two are revealed and audited."""
    org, conn = await tenant(vault)
    access, key = canary("role-batch-access"), canary("role-batch-key")
    await store(vault, org, conn, access)
    await store(vault, org, conn, canary("role-batch-refresh"), REFRESH)
    await store(vault, org, conn, key, API_KEY)
    revealer = vault.as_key(await make_key(vault, org, (REVEALER,)))

    response = await revealer.credentials.BatchRevealCredentials(
        crpb.BatchRevealCredentialsRequest(
            organization_id=org,
            items=[item(conn, ACCESS), item(conn, REFRESH), item(conn, API_KEY)],
        )
    )
    codes = [r.code for r in response.results]
    assert codes == [
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.PERMISSION_DENIED.value[0],
        grpc.StatusCode.OK.value[0],
    ]
    assert [r.value for r in response.results] == [access, "", key]
    refused = response.results[1]
    assert "API_KEY_ROLE_REFRESH_TOKEN_REVEALER" in refused.message
    assert not refused.HasField("credential")

    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        await chain_pending_audit(owner)
        audited = await owner.fetch(
            "SELECT details->>'credential_type' AS type FROM singura.audit_logs "
            "WHERE organization_id = $1 AND action = 'credential.revealed'",
            uuid.UUID(org),
        )
    finally:
        await owner.close()
    assert sorted(r["type"] for r in audited) == ["access_token", "api_key"]


async def test_a_batch_of_only_refresh_tokens_and_a_key_with_both_roles(vault: Vault) -> None:
    """A refresh-token-only key's batch reveals refresh tokens and refuses the access
    token's item; a key with both roles gets every item; a key with neither reveal role
    is refused the whole call."""
    org, conn = await tenant(vault)
    access, refresh = canary("role-both-access"), canary("role-both-refresh")
    await store(vault, org, conn, access)
    await store(vault, org, conn, refresh, REFRESH)
    request = crpb.BatchRevealCredentialsRequest(
        organization_id=org, items=[item(conn, REFRESH), item(conn, ACCESS)]
    )
    only_refresh = vault.as_key(await make_key(vault, org, (REFRESH_REVEALER,)))
    response = await only_refresh.credentials.BatchRevealCredentials(request)
    assert response.results[0].value == refresh
    assert response.results[1].code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "API_KEY_ROLE_REVEALER" in response.results[1].message

    both = vault.as_key(await make_key(vault, org, (REVEALER, REFRESH_REVEALER)))
    response = await both.credentials.BatchRevealCredentials(request)
    assert [r.value for r in response.results] == [refresh, access]

    reader = vault.as_key(await make_key(vault, org, (apb.API_KEY_ROLE_READER,)))
    await expect_status(
        reader.credentials.BatchRevealCredentials(request), grpc.StatusCode.PERMISSION_DENIED
    )


async def test_get_access_token_still_refreshes_for_a_revealer_key(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """GetAccessToken uses the stored refresh token inside the vault: a revealer key
    without the new role gets a freshly refreshed access token (but cannot read the
    refresh token itself)."""
    linked = await link(vault, provider)
    revealer = vault.as_key(await make_key(vault, linked.org, (apb.API_KEY_ROLE_READER, REVEALER)))
    response = await get_token(revealer, linked)
    assert response.refreshed
    assert response.access_token
    assert response.access_token != linked.access_token
    await expect_status(
        reveal(revealer, linked.org, linked.conn, type_=REFRESH),
        grpc.StatusCode.PERMISSION_DENIED,
        "API_KEY_ROLE_REFRESH_TOKEN_REVEALER",
    )
