"""OAuthService: clients, GetAccessToken and RefreshConnection against a real OAuth 2.0
token endpoint on loopback (tests/support/oauth_provider.py): single flight across two vault
processes, rotated refresh tokens that are never lost, and the failure states."""

from __future__ import annotations

import asyncio
import signal
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from prometheus_client import generate_latest

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.config import OAuthSettings, PoolSettings
from singura_vault.db.pool import Database
from singura_vault.domain.credentials import Credential, CredentialState, CredentialType
from singura_vault.metrics import REGISTRY
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as pb
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.service.access import AccessService
from singura_vault.service.oauth_refresh_failures import LOST_ROTATION
from singura_vault.service.oauth_token_lifetime import effective_margin, is_fresh
from singura_vault.service.rewrap import RewrapWorker
from singura_vault.service.sealing import SealingService
from tests.support.api_keys import make_key
from tests.support.audit import chain_pending_audit
from tests.support.auth import bearer
from tests.support.credentials import ACCESS
from tests.support.oauth import (
    CLIENT_ID,
    REFRESH,
    WORKER_ON,
    Linked,
    access_version,
    connection,
    get_token,
    link,
    past,
    refresh_worker,
    set_client,
)
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault, start_vault, stop_vault
from tests.support.vault_process import serve_process, serve_process_handle


async def age_access_token(owner_dsn: str, linked: Linked, seconds: int) -> None:
    """Move the current access token's issue and expiry times `seconds` into the past:
    to the vault, that much of its life has gone by (the tests' clock; no sleeps)."""
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", linked.org)
        moved = await owner.execute(
            "UPDATE singura.encrypted_credentials "
            "SET created_at = created_at - make_interval(secs => $3), "
            "expires_at = expires_at - make_interval(secs => $3) "
            "WHERE organization_id = $1 AND connection_id = $2 "
            "AND credential_type = 'access_token' AND state = 'active'",
            uuid.UUID(linked.org),
            uuid.UUID(linked.conn),
            seconds,
        )
    finally:
        await owner.close()
    assert moved == "UPDATE 1"


async def audit_actions(owner_dsn: str, org: str) -> list[str]:
    owner = await asyncpg.connect(owner_dsn)
    try:
        await chain_pending_audit(owner)
        rows = await owner.fetch(
            "SELECT action FROM singura.audit_logs WHERE organization_id = $1 ORDER BY chain_seq",
            uuid.UUID(org),
        )
    finally:
        await owner.close()
    return [r["action"] for r in rows]


# -- clients ------------------------------------------------------------------------


async def test_a_client_is_stored_sealed_and_returned_without_its_secret(
    vault: Vault, provider: FakeOAuthProvider, owner_dsn: str
) -> None:
    """An OAuth client is stored with its secret sealed, and neither SetOAuthClient nor
    GetOAuthClient ever returns the secret."""
    org, _ = await tenant(vault)
    secret = f"canary-client-secret-{uuid.uuid4().hex}"
    stored = await set_client(vault, provider, org, secret, scopes=["channels:read"])
    assert stored.client_secret == ""
    assert stored.client_id == CLIENT_ID
    assert stored.effective_token_url == provider.token_url
    assert stored.auth_method == pb.CLIENT_AUTH_METHOD_CLIENT_SECRET_POST
    fetched = (
        await vault.oauth.GetOAuthClient(
            pb.GetOAuthClientRequest(organization_id=org, platform=cpb.PLATFORM_SLACK)
        )
    ).client
    assert fetched.client_secret == ""
    assert list(fetched.scopes) == ["channels:read"]
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        row = await owner.fetchrow(
            "SELECT secret_ciphertext FROM singura.oauth_clients WHERE organization_id = $1",
            uuid.UUID(org),
        )
    finally:
        await owner.close()
    assert row is not None
    assert secret.encode() not in row["secret_ciphertext"]

    await vault.oauth.DeleteOAuthClient(
        pb.DeleteOAuthClientRequest(organization_id=org, platform=cpb.PLATFORM_SLACK)
    )
    await expect_status(
        vault.oauth.GetOAuthClient(
            pb.GetOAuthClientRequest(organization_id=org, platform=cpb.PLATFORM_SLACK)
        ),
        grpc.StatusCode.NOT_FOUND,
        "SetOAuthClient",
    )


async def test_the_catalogue_fills_in_a_platforms_endpoints(vault: Vault) -> None:
    """A client set without URLs gets its platform's catalogued token and revocation endpoints as
    the effective ones."""
    org, _ = await tenant(vault)
    client = pb.OAuthClient(
        organization_id=org,
        platform=cpb.PLATFORM_GOOGLE_WORKSPACE,
        client_id=CLIENT_ID,
        client_secret="canary-catalogue-secret",
    )
    stored = (await vault.oauth.SetOAuthClient(pb.SetOAuthClientRequest(client=client))).client
    assert stored.token_url == ""
    assert stored.effective_token_url.startswith("https://oauth2.googleapis.com/")
    assert stored.effective_revocation_url.startswith("https://oauth2.googleapis.com/")


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"client_secret": ""}, "client.client_secret: is required"),
        ({"client_id": ""}, "client.client_id: is required"),
        ({"token_url": "http://oauth.example.com/token"}, "client.token_url"),
        ({"token_url": "ftp://127.0.0.1/token"}, "client.token_url"),
        ({"revocation_url": "https://user:pw@example.com/revoke"}, "client.revocation_url"),
        ({"platform": cpb.PLATFORM_UNSPECIFIED}, "client.platform: is required"),
    ],
)
async def test_a_bad_client_is_invalid_argument(
    vault: Vault, fields: dict[str, object], fragment: str
) -> None:
    """A client with a missing or malformed field is refused with INVALID_ARGUMENT naming the
    field."""
    org, _ = await tenant(vault)
    values: dict[str, object] = {
        "organization_id": org,
        "platform": cpb.PLATFORM_SLACK,
        "client_id": CLIENT_ID,
        "client_secret": "canary-bad-client",
        **fields,
    }
    message = await expect_status(
        vault.oauth.SetOAuthClient(
            pb.SetOAuthClientRequest(client=pb.OAuthClient(**values))  # type: ignore[arg-type]  # test values
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        fragment,
    )
    assert "pw@" not in message


async def test_a_reader_may_read_a_client_but_not_set_it(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """A reader key may read an OAuth client but setting one is PERMISSION_DENIED, naming the writer
    role."""
    org, _ = await tenant(vault)
    await set_client(vault, provider, org, "canary-reader-secret")
    reader = vault.as_key(await make_key(vault, org, (apb.API_KEY_ROLE_READER,)))
    await reader.oauth.GetOAuthClient(
        pb.GetOAuthClientRequest(organization_id=org, platform=cpb.PLATFORM_SLACK)
    )
    await expect_status(
        set_client(reader, provider, org, "canary-reader-secret-2"),
        grpc.StatusCode.PERMISSION_DENIED,
        "writer",
    )
    await expect_status(
        reader.oauth.GetAccessToken(pb.GetAccessTokenRequest(organization_id=org)),
        grpc.StatusCode.PERMISSION_DENIED,
        "revealer",
    )


# -- GetAccessToken ---------------------------------------------------------------


async def test_a_fresh_token_is_returned_without_calling_the_provider(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """GetAccessToken returns a still-fresh access token as stored, without calling the provider."""
    linked = await link(vault, provider, expired=False)
    response = await get_token(vault, linked)
    assert response.access_token == linked.access_token
    assert response.refreshed is False
    assert provider.token_calls == 0


async def test_an_expired_token_is_refreshed_and_the_rotated_refresh_token_stored(
    vault: Vault, provider: FakeOAuthProvider, owner_dsn: str
) -> None:
    """An expired access token is refreshed with one provider call, stored as a new version, and the
    rotated refresh token stored too."""
    linked = await link(vault, provider)
    response = await get_token(vault, linked)
    assert response.refreshed is True
    assert response.access_token != linked.access_token
    assert response.credential.version == 2
    assert response.expire_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) + timedelta(minutes=50)
    assert provider.token_calls == 1
    versions = (
        await vault.credentials.ListCredentialVersions(
            crpb.ListCredentialVersionsRequest(
                organization_id=linked.org, connection_id=linked.conn, type=REFRESH
            )
        )
    ).credentials
    assert [v.version for v in versions] == [2, 1]
    assert versions[1].state == crpb.CREDENTIAL_STATE_SUPERSEDED
    # The provider took the new refresh token: the next refresh uses it.
    forced = await vault.oauth.RefreshConnection(
        pb.RefreshConnectionRequest(
            organization_id=linked.org, connection_id=linked.conn, force=True
        )
    )
    assert forced.refreshed is True
    assert forced.access_token.version == 3
    assert forced.connection.status == cpb.CONNECTION_STATUS_ACTIVE
    assert forced.connection.refresh_failure_count == 0
    assert forced.connection.HasField("last_refresh_time")
    assert provider.token_calls == 2
    actions = await audit_actions(owner_dsn, linked.org)
    assert actions.count("connection.token_refreshed") == 2
    assert "credential.revealed" in actions


async def test_a_provider_without_rotation_keeps_the_refresh_token(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """When the provider does not rotate, a refresh keeps the one refresh-token version."""
    linked = await link(vault, provider, rotate=False)
    assert (await get_token(vault, linked)).refreshed is True
    versions = (
        await vault.credentials.ListCredentialVersions(
            crpb.ListCredentialVersionsRequest(
                organization_id=linked.org, connection_id=linked.conn, type=REFRESH
            )
        )
    ).credentials
    assert [v.version for v in versions] == [1]


async def get_token_valid_for(
    vault: Stubs, linked: Linked, seconds: int
) -> pb.GetAccessTokenResponse:
    return await vault.oauth.GetAccessToken(
        pb.GetAccessTokenRequest(
            organization_id=linked.org,
            connection_id=linked.conn,
            min_valid_for=duration_pb2.Duration(seconds=seconds),
        )
    )


async def test_min_valid_for_decides_when_to_refresh(
    vault: Vault, provider: FakeOAuthProvider, owner_dsn: str
) -> None:
    """A token is refreshed when it expires within min_valid_for, the margin capped at
    half the token's lifetime."""
    linked = await link(vault, provider, expired=False)  # issued now, valid for an hour
    await age_access_token(owner_dsn, linked, 40 * 60)  # 20 minutes left
    assert (await get_token_valid_for(vault, linked, 10 * 60)).refreshed is False
    assert provider.token_calls == 0
    response = await get_token_valid_for(vault, linked, 25 * 60)
    assert response.refreshed is True
    assert response.credential.version == 2
    # The new token lives an hour: two hours cannot be had, and asking does not refresh.
    assert (await get_token_valid_for(vault, linked, 2 * 3600)).refreshed is False
    assert provider.token_calls == 1
    await expect_status(
        vault.oauth.GetAccessToken(
            pb.GetAccessTokenRequest(
                organization_id=linked.org,
                connection_id=linked.conn,
                min_valid_for=duration_pb2.Duration(seconds=-1),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "min_valid_for",
    )


async def test_tokens_shorter_lived_than_min_valid_for_are_refreshed_once_per_half_life(
    vault: Vault, provider: FakeOAuthProvider, owner_dsn: str
) -> None:
    """The provider's tokens live 60 s, less than the default min_valid_for (5 minutes):
    three calls refresh once and then get the same version; once half the token's life
    has gone by, the next call refreshes again. The background refresh is scheduled for
    the same moment."""
    linked = await link(vault, provider, expires_in=60)
    responses = [await get_token(vault, linked) for _ in range(3)]
    assert [r.refreshed for r in responses] == [True, False, False]
    assert {r.credential.version for r in responses} == {2}
    assert len({r.access_token for r in responses}) == 1
    assert provider.token_calls == 1
    expire_time = responses[0].expire_time.ToDatetime(tzinfo=UTC)
    next_refresh = (await connection(vault, linked)).next_refresh_time.ToDatetime(tzinfo=UTC)
    assert next_refresh < expire_time - timedelta(seconds=20)

    await age_access_token(owner_dsn, linked, 31)  # 29 s left: past half its life
    again = await get_token(vault, linked)
    assert again.refreshed is True
    assert again.credential.version == 3
    assert provider.token_calls == 2


def test_the_refresh_margin_is_capped_at_half_the_tokens_lifetime() -> None:
    """is_fresh against a stated clock: a long margin is cut to half the lifetime, a
    short one is kept, an unknown expiry is never due."""
    issued = datetime(2030, 1, 1, tzinfo=UTC)
    token = Credential(
        id=uuid.uuid4(),
        organization_id=uuid.uuid4(),
        connection_id=uuid.uuid4(),
        type=CredentialType.ACCESS_TOKEN,
        version=1,
        state=CredentialState.ACTIVE,
        key_version=1,
        fingerprint="f",
        created_at=issued,
        expires_at=issued + timedelta(seconds=60),
        state_changed_at=None,
    )
    five_minutes = timedelta(minutes=5)
    assert effective_margin(token, five_minutes) == timedelta(seconds=30)
    assert effective_margin(token, timedelta(seconds=10)) == timedelta(seconds=10)
    assert is_fresh(token, issued + timedelta(seconds=29), five_minutes)
    assert not is_fresh(token, issued + timedelta(seconds=30), five_minutes)
    assert not is_fresh(token, issued + timedelta(seconds=50), timedelta(seconds=10))
    unknown = replace(token, expires_at=None)
    assert is_fresh(unknown, issued + timedelta(days=365), five_minutes)
    stored_expired = replace(token, expires_at=issued - timedelta(seconds=1))
    assert not is_fresh(stored_expired, issued, five_minutes)


async def test_fifty_callers_on_two_processes_make_one_provider_call(
    vault: Vault,
    provider: FakeOAuthProvider,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> None:
    """Fifty concurrent GetAccessToken calls across two vault processes make one provider call and
    all get the same new token."""
    linked = await link(vault, provider)
    hold = provider.hold_next()
    async with serve_process(vault, service_dsn, auth_secret, root_key) as address:
        channel = grpc.aio.insecure_channel(address, interceptors=bearer(vault.admin_key))
        try:
            other = Stubs.on(channel)
            calls = [
                asyncio.create_task(get_token(vault if i % 2 else other, linked)) for i in range(50)
            ]
            assert await hold.wait_reached_async()
            hold.release()
            responses = await asyncio.gather(*calls)
        finally:
            await channel.close()
    assert provider.token_calls == 1
    assert len({r.access_token for r in responses}) == 1
    assert responses[0].access_token != linked.access_token
    assert any(r.refreshed for r in responses)


async def test_a_caller_that_gives_up_does_not_lose_the_refresh(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """A caller cancelled while its refresh is in flight does not lose the refresh: the rotated
    tokens are stored and used."""
    linked = await link(vault, provider)
    hold = provider.hold_next()
    first = vault.oauth.GetAccessToken(
        pb.GetAccessTokenRequest(organization_id=linked.org, connection_id=linked.conn)
    )
    waiting = asyncio.ensure_future(first)
    assert await hold.wait_reached_async()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    hold.release()
    # The refresh went on without its caller: this call joins it or finds its result.
    response = await get_token(vault, linked)
    assert response.access_token != linked.access_token
    assert provider.token_calls == 1


# -- failures ---------------------------------------------------------------------


async def test_a_transient_failure_keeps_the_connection_active_and_cools_down(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """A transient provider failure is UNAVAILABLE, keeps the connection ACTIVE with the error and a
    cooldown, and the cooldown spares the provider further calls."""
    linked = await link(vault, provider)
    provider.fail_next(status=503)
    await expect_status(get_token(vault, linked), grpc.StatusCode.UNAVAILABLE, "503")
    state = await connection(vault, linked)
    assert state.status == cpb.CONNECTION_STATUS_ACTIVE
    assert state.refresh_failure_count == 1
    assert "503" in state.last_refresh_error
    assert state.next_refresh_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC)
    # In the cooldown the provider is not called again...
    await expect_status(get_token(vault, linked), grpc.StatusCode.UNAVAILABLE, "next attempt")
    assert provider.token_calls == 1
    # ... unless forced; a success resets the count.
    forced = await vault.oauth.RefreshConnection(
        pb.RefreshConnectionRequest(
            organization_id=linked.org, connection_id=linked.conn, force=True
        )
    )
    assert forced.refreshed is True
    assert forced.connection.refresh_failure_count == 0
    assert forced.connection.last_refresh_error == ""


async def test_retry_after_lengthens_the_cooldown(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """A provider's Retry-After lengthens the refresh cooldown to at least that long."""
    linked = await link(vault, provider)
    provider.fail_next(status=429, retry_after=3600)
    await expect_status(get_token(vault, linked), grpc.StatusCode.UNAVAILABLE)
    state = await connection(vault, linked)
    assert state.next_refresh_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) + timedelta(
        minutes=55
    )


async def test_invalid_grant_expires_the_connection_with_its_reason(
    vault: Vault, provider: FakeOAuthProvider, owner_dsn: str
) -> None:
    """invalid_grant: the user must reconnect, and every message says so (not to fix
    the OAuth client)."""
    linked = await link(vault, provider)
    provider.fail_next(status=400, error="invalid_grant")
    first = await expect_status(
        get_token(vault, linked),
        grpc.StatusCode.FAILED_PRECONDITION,
        "invalid_grant",
        "the user must reconnect",
        "StoreCredential",
        "UpdateConnectionStatus",
    )
    state = await connection(vault, linked)
    assert state.status == cpb.CONNECTION_STATUS_EXPIRED
    assert "invalid_grant" in state.status_reason
    assert "connection.status_changed" in await audit_actions(owner_dsn, linked.org)
    # An expired connection is not refreshed again.
    then = await expect_status(
        get_token(vault, linked),
        grpc.StatusCode.FAILED_PRECONDITION,
        "EXPIRED",
        "when the user has reconnected",
    )
    for message in (first, then):
        assert "SetOAuthClient" not in message
    assert provider.token_calls == 1


async def test_invalid_client_puts_the_connection_in_error_until_the_client_is_fixed(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """invalid_client: the messages say to fix the client with SetOAuthClient and that the
    user need not reconnect (never "reconnect the user"); after SetOAuthClient and
    UpdateConnectionStatus ACTIVE, the stored refresh token refreshes again."""
    linked = await link(vault, provider)
    await set_client(vault, provider, linked.org, "canary-wrong-secret", linked.client_id)
    first = await expect_status(
        get_token(vault, linked),
        grpc.StatusCode.FAILED_PRECONDITION,
        "invalid_client",
        "SetOAuthClient",
        "need not reconnect",
        "UpdateConnectionStatus",
    )
    state = await connection(vault, linked)
    assert state.status == cpb.CONNECTION_STATUS_ERROR
    assert "SetOAuthClient" in state.status_reason
    then = await expect_status(
        get_token(vault, linked),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ERROR",
        "SetOAuthClient",
        "need not reconnect",
        "UpdateConnectionStatus",
    )
    for message in (first, then):
        assert "must reconnect" not in message
        assert "reconnect the user" not in message
        assert "when the user has reconnected" not in message
    assert provider.token_calls == 1

    await set_client(vault, provider, linked.org, linked.client_secret, linked.client_id)
    await vault.connections.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            organization_id=linked.org,
            connection_id=linked.conn,
            status=cpb.CONNECTION_STATUS_ACTIVE,
            reason="OAuth client secret corrected",
        )
    )
    response = await get_token(vault, linked)
    assert response.refreshed is True
    assert provider.token_calls == 2
    assert not provider.is_refresh_token_valid(linked.refresh_token)  # used, and rotated
    assert (await connection(vault, linked)).refresh_failure_count == 0


async def test_a_connection_without_a_client_or_refresh_token_says_what_is_missing(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """Refreshing a connection without an OAuth client or refresh token is refused with a message
    saying which is missing."""
    org, conn = await tenant(vault)
    await vault.credentials.StoreCredential(
        crpb.StoreCredentialRequest(
            organization_id=org,
            connection_id=conn,
            type=ACCESS,
            value="canary-lonely-access",
            expire_time=past(),
        )
    )
    lonely = Linked(org, conn, "", "", "", "")
    await expect_status(
        get_token(vault, lonely), grpc.StatusCode.FAILED_PRECONDITION, "no refresh token"
    )
    await vault.credentials.StoreCredential(
        crpb.StoreCredentialRequest(
            organization_id=org, connection_id=conn, type=REFRESH, value="canary-lonely-refresh"
        )
    )
    await expect_status(
        get_token(vault, lonely), grpc.StatusCode.FAILED_PRECONDITION, "SetOAuthClient"
    )
    assert provider.token_calls == 0


# -- a vault killed between the provider's answer and its commit ----------------------


@pytest.mark.parametrize("rotate", [True, False])
async def test_a_refresh_lost_to_a_killed_vault_is_detected(
    vault: Vault,
    provider: FakeOAuthProvider,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
    rotate: bool,
) -> None:
    """The provider rotates, the vault that asked dies before it commits. With rotation,
    the next refresh gets invalid_grant and says the rotation was lost (ERROR), never
    loops; without rotation it simply succeeds."""
    linked = await link(vault, provider, rotate=rotate)
    hold = provider.hold_next()
    async with serve_process_handle(vault, service_dsn, auth_secret, root_key) as (
        address,
        process,
    ):
        channel = grpc.aio.insecure_channel(address, interceptors=bearer(vault.admin_key))
        try:
            doomed = asyncio.ensure_future(get_token(Stubs.on(channel), linked))
            assert await hold.wait_reached_async()  # the provider has rotated; no answer yet
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 30)
            hold.release()
            with pytest.raises(grpc.aio.AioRpcError):
                await doomed
        finally:
            await channel.close()
    if rotate:
        message = await expect_status(
            get_token(vault, linked), grpc.StatusCode.FAILED_PRECONDITION, LOST_ROTATION
        )
        assert "ERROR" in message or "error" in message
        state = await connection(vault, linked)
        assert state.status == cpb.CONNECTION_STATUS_ERROR
        assert state.status_reason == LOST_ROTATION
    else:
        response = await get_token(vault, linked)
        assert response.refreshed is True
        assert (await connection(vault, linked)).status == cpb.CONNECTION_STATUS_ACTIVE
    assert provider.token_calls == 2


# -- isolation ----------------------------------------------------------------------


async def test_another_tenant_reaches_neither_the_client_nor_the_refresh_state(
    vault: Vault, provider: FakeOAuthProvider, service_dsn: str
) -> None:
    """The service layer refuses another organization's key; beneath it, row-level
    security shows the service role neither table's rows from another tenant."""
    linked = await link(vault, provider)
    await get_token(vault, linked)  # leaves refresh state behind
    other_org, _ = await tenant(vault)
    outsider = vault.as_key(
        await make_key(vault, other_org, (apb.API_KEY_ROLE_READER, apb.API_KEY_ROLE_REVEALER))
    )
    await expect_status(
        outsider.oauth.GetOAuthClient(
            pb.GetOAuthClientRequest(organization_id=linked.org, platform=cpb.PLATFORM_SLACK)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_status(get_token(outsider, linked), grpc.StatusCode.PERMISSION_DENIED)
    service = await asyncpg.connect(service_dsn)
    try:
        for org, expected in ((other_org, 0), (linked.org, 1)):
            async with service.transaction():
                await service.execute("SELECT set_config('singura.organization_id', $1, true)", org)
                for table in ("oauth_clients", "connection_refresh_state"):
                    count = await service.fetchval(f"SELECT count(*) FROM singura.{table}")
                    assert count == expected, (table, org)
    finally:
        await service.close()


# -- background refresh ---------------------------------------------------------------


async def test_two_workers_refresh_each_due_connection_once(
    vault: Vault,
    provider: FakeOAuthProvider,
    sealing: SealingService,
    service_dsn: str,
    owner_dsn: str,
) -> None:
    """Two workers on two pools (as two processes have) run a pass at the same time:
    every due connection is refreshed exactly once; one that is not due is left."""
    expired = [await link(vault, provider) for _ in range(5)]
    idle = await link(vault, provider, expired=False)  # fresh, but not refreshed for 10 days
    fresh = await link(vault, provider, expired=False)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", idle.org)
        await owner.execute(
            "INSERT INTO singura.connection_refresh_state (organization_id, connection_id, "
            "last_refresh_at) VALUES ($1, $2, now() - interval '10 days')",
            uuid.UUID(idle.org),
            uuid.UUID(idle.conn),
        )
    finally:
        await owner.close()
    other_db = await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=4))
    first, first_http = refresh_worker(vault.db, sealing)
    second, second_http = refresh_worker(other_db, sealing)
    try:
        attempted = await asyncio.gather(first.run_once(), second.run_once())
    finally:
        await first_http.aclose()
        await second_http.aclose()
        await other_db.close()
    assert sum(attempted) == 6
    assert provider.token_calls == 6
    for linked in (*expired, idle):
        assert await access_version(vault, linked) == 2
    assert await access_version(vault, fresh) == 1
    # Nothing is due any more: a second pass refreshes nothing.
    again, again_http = refresh_worker(vault.db, sealing)
    try:
        assert await again.run_once() == 0
    finally:
        await again_http.aclose()


async def test_a_worker_leaves_a_cooling_connection_alone(
    vault: Vault, provider: FakeOAuthProvider, sealing: SealingService
) -> None:
    """The background refresh worker skips a connection in its failure cooldown and calls no
    provider."""
    linked = await link(vault, provider)
    provider.fail_next(status=503)
    await expect_status(get_token(vault, linked), grpc.StatusCode.UNAVAILABLE)
    worker, http = refresh_worker(vault.db, sealing)
    try:
        assert await worker.run_once() == 0
    finally:
        await http.aclose()
    assert provider.token_calls == 1


async def test_the_background_refresh_runs_in_two_serve_processes(
    vault: Vault,
    provider: FakeOAuthProvider,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> None:
    """Two `serve` processes with the worker on: each expired connection is refreshed
    by one of them, once."""
    linked = [await link(vault, provider) for _ in range(4)]
    async with (
        serve_process(vault, service_dsn, auth_secret, root_key, **WORKER_ON),
        serve_process(vault, service_dsn, auth_secret, root_key, **WORKER_ON),
    ):
        assert await provider.wait_for_token_calls_async(len(linked))
    # Both have stopped; SIGTERM let every refresh the provider answered commit.
    assert provider.token_calls == len(linked)
    for each in linked:
        assert await access_version(vault, each) == 2
        assert (await connection(vault, each)).HasField("last_refresh_time")


# -- revoking at the provider ---------------------------------------------------------


async def delete_revoking(vault: Stubs, linked: Linked, etag: str = "") -> cpb.ProviderRevocation:
    response = await vault.connections.DeleteConnection(
        cpb.DeleteConnectionRequest(
            organization_id=linked.org,
            connection_id=linked.conn,
            etag=etag,
            revoke_at_provider=True,
            # These tests check the connection is gone at once: since #29 that needs
            # force (the default keeps it recoverable; tests/integration/test_soft_delete.py).
            force=True,
        )
    )
    return response.provider_revocation


async def test_a_connection_deleted_with_revoke_at_provider_is_revoked_there_first(
    vault: Vault, provider: FakeOAuthProvider, owner_dsn: str
) -> None:
    """Deleting a connection with revoke_at_provider revokes its token at the provider, audited
    before the deletion."""
    linked = await link(vault, provider)
    revocation = await delete_revoking(vault, linked)
    assert revocation.outcome == cpb.PROVIDER_REVOCATION_OUTCOME_REVOKED
    assert not provider.is_refresh_token_valid(linked.refresh_token)
    await expect_status(connection(vault, linked), grpc.StatusCode.NOT_FOUND)
    actions = await audit_actions(owner_dsn, linked.org)
    assert actions.index("connection.provider_revocation") < actions.index("connection.deleted")


async def test_a_provider_that_fails_does_not_block_the_delete(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """A failing provider revocation is reported as FAILED (without the token) and the connection is
    still deleted."""
    linked = await link(vault, provider)
    provider.fail_revocations(503)
    revocation = await delete_revoking(vault, linked)
    assert revocation.outcome == cpb.PROVIDER_REVOCATION_OUTCOME_FAILED
    assert "503" in revocation.detail
    assert linked.refresh_token not in revocation.detail
    await expect_status(connection(vault, linked), grpc.StatusCode.NOT_FOUND)


async def test_a_slow_provider_does_not_hold_up_the_delete_past_the_timeout(
    db: Database,
    key_manager: keys.KeyManager,
    access_service: AccessService,
    provider: FakeOAuthProvider,
) -> None:
    """SINGURA_REVOKE_TIMEOUT bounds the wait: the provider never answers, the
    connection is deleted all the same."""
    running = await start_vault(
        Components(
            db,
            key_manager=key_manager,
            access=access_service,
            oauth=OAuthSettings(revoke_timeout_s=0.5, refresh_worker=False),
        )
    )
    try:
        linked = await link(running, provider)
        hold = provider.hold_next(on="revoke")
        revocation = await delete_revoking(running, linked)
        assert hold.reached.is_set()
        hold.release()
        assert revocation.outcome == cpb.PROVIDER_REVOCATION_OUTCOME_FAILED
        assert "0.5" in revocation.detail
        await expect_status(connection(running, linked), grpc.StatusCode.NOT_FOUND)
    finally:
        await stop_vault(running)


async def test_without_a_client_the_revocation_is_skipped_and_the_delete_done(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """Without an OAuth client the provider revocation is SKIPPED with the reason, no call is made,
    and the delete is done."""
    linked = await link(vault, provider)
    await vault.oauth.DeleteOAuthClient(
        pb.DeleteOAuthClientRequest(organization_id=linked.org, platform=cpb.PLATFORM_SLACK)
    )
    revocation = await delete_revoking(vault, linked)
    assert revocation.outcome == cpb.PROVIDER_REVOCATION_OUTCOME_SKIPPED
    assert "no OAuth client" in revocation.detail
    assert provider.revoke_calls == 0


async def test_a_stale_etag_refuses_before_anything_is_revoked(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """A delete with a stale etag is ABORTED before anything is revoked at the provider."""
    linked = await link(vault, provider)
    etag = (await connection(vault, linked)).etag
    await vault.connections.UpdateConnection(
        cpb.UpdateConnectionRequest(
            connection=cpb.Connection(
                organization_id=linked.org, id=linked.conn, display_name="Renamed"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    )
    await expect_status(delete_revoking(vault, linked, etag), grpc.StatusCode.ABORTED, "etag")
    assert provider.revoke_calls == 0
    assert (await connection(vault, linked)).status == cpb.CONNECTION_STATUS_ACTIVE


async def test_revoke_credential_can_revoke_the_token_at_the_provider(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """RevokeCredential with revoke_at_provider revokes the refresh token at the provider as well as
    in the vault."""
    linked = await link(vault, provider)
    refresh = (
        await vault.credentials.ListCredentialVersions(
            crpb.ListCredentialVersionsRequest(
                organization_id=linked.org, connection_id=linked.conn, type=REFRESH
            )
        )
    ).credentials[0]
    response = await vault.credentials.RevokeCredential(
        crpb.RevokeCredentialRequest(
            organization_id=linked.org, credential_id=refresh.id, revoke_at_provider=True
        )
    )
    assert response.provider_revocation.outcome == cpb.PROVIDER_REVOCATION_OUTCOME_REVOKED
    assert response.credentials[0].state == crpb.CREDENTIAL_STATE_REVOKED
    assert not provider.is_refresh_token_valid(linked.refresh_token)

    api_key = (
        await vault.credentials.StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=linked.org,
                connection_id=linked.conn,
                type=crpb.CREDENTIAL_TYPE_API_KEY,
                value="canary-not-a-token",
            )
        )
    ).credential
    await expect_status(
        vault.credentials.RevokeCredential(
            crpb.RevokeCredentialRequest(
                organization_id=linked.org, credential_id=api_key.id, revoke_at_provider=True
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "revoke_at_provider",
    )
    kept = (
        await vault.credentials.GetCredential(
            crpb.GetCredentialRequest(organization_id=linked.org, credential_id=api_key.id)
        )
    ).credential
    assert kept.state == crpb.CREDENTIAL_STATE_ACTIVE


async def test_revoked_consent_revokes_the_connection(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """A provider answering access_denied to a refresh marks the connection REVOKED and the call
    FAILED_PRECONDITION."""
    linked = await link(vault, provider)
    provider.fail_next(status=400, error="access_denied")
    await expect_status(get_token(vault, linked), grpc.StatusCode.FAILED_PRECONDITION, "REVOKED")
    assert (await connection(vault, linked)).status == cpb.CONNECTION_STATUS_REVOKED


async def test_refreshes_are_counted_by_platform_and_outcome_without_tokens(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """Refreshes are counted by platform and outcome in the metrics, with no token in any label."""

    def count(outcome: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "singura_oauth_refreshes_total", {"platform": "slack", "outcome": outcome}
            )
            or 0.0
        )

    before_success, before_transient = count("success"), count("transient")
    linked = await link(vault, provider)
    provider.fail_next(status=500)
    await expect_status(get_token(vault, linked), grpc.StatusCode.UNAVAILABLE)
    await vault.oauth.RefreshConnection(
        pb.RefreshConnectionRequest(
            organization_id=linked.org, connection_id=linked.conn, force=True
        )
    )
    assert count("transient") == before_transient + 1
    assert count("success") == before_success + 1
    exposition = generate_latest(REGISTRY).decode()
    assert "singura_oauth_refresh_seconds_bucket" in exposition
    token = (await get_token(vault, linked)).access_token
    for secret in (token, linked.refresh_token, linked.client_secret):
        assert secret not in exposition


async def test_invalid_grant_after_a_peer_rotated_is_not_an_error(
    vault: Vault, provider: FakeOAuthProvider, owner_dsn: str
) -> None:
    """A newer refresh token committed while the provider was answering (by a writer
    outside the vault's lock) explains an invalid_grant: the connection stays ACTIVE
    and the caller gets the stored token, no error."""
    linked = await link(vault, provider)
    hold = provider.hold_next()
    provider.fail_next(status=400, error="invalid_grant")
    call = asyncio.ensure_future(get_token(vault, linked))
    assert await hold.wait_reached_async()
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", linked.org)
        async with owner.transaction():
            row = await owner.fetchrow(
                "UPDATE singura.encrypted_credentials SET state = 'superseded' "
                "WHERE connection_id = $1 AND credential_type = 'refresh_token' "
                "AND state = 'active' RETURNING *",
                uuid.UUID(linked.conn),
            )
            assert row is not None
            await owner.execute(
                "INSERT INTO singura.encrypted_credentials (organization_id, id, "
                "connection_id, credential_type, version, ciphertext, nonce, key_version, "
                "fingerprint) VALUES ($1, $2, $3, 'refresh_token', $4, $5, $6, $7, $8)",
                row["organization_id"],
                uuid.uuid4(),
                row["connection_id"],
                row["version"] + 1,
                row["ciphertext"],
                row["nonce"],
                row["key_version"],
                row["fingerprint"],
            )
    finally:
        await owner.close()
    hold.release()
    response = await call
    assert response.refreshed is False
    state = await connection(vault, linked)
    assert state.status == cpb.CONNECTION_STATUS_ACTIVE
    assert state.refresh_failure_count == 0


async def test_production_refuses_plain_http_even_to_loopback(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService
) -> None:
    """A production vault refuses an OAuth client whose endpoints are plain http, even on
    loopback."""
    running = await start_vault(
        Components(db, key_manager=key_manager, access=access_service, production=True)
    )
    try:
        org, _ = await tenant(running)
        await expect_status(
            running.oauth.SetOAuthClient(
                pb.SetOAuthClientRequest(
                    client=pb.OAuthClient(
                        organization_id=org,
                        platform=cpb.PLATFORM_SLACK,
                        client_id=CLIENT_ID,
                        client_secret="canary-production-secret",
                        token_url="http://127.0.0.1:9/token",
                    )
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "client.token_url",
            "https",
        )
    finally:
        await stop_vault(running)


async def test_rewrap_reseals_client_secrets_so_their_key_can_be_retired(
    vault: Vault, provider: FakeOAuthProvider, key_manager: keys.KeyManager
) -> None:
    """Client secrets are sealed under data keys too. Before a rewrap, retiring the
    version that seals one is refused; the rewrap job re-seals it under the newest
    version, the old one then retires, and the refresh still authenticates."""
    linked = await link(vault, provider)
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=linked.org))
    retire = vault.keys.RetireKeyVersion(
        kpb.RetireKeyVersionRequest(data_key=kpb.DataKeyRef(organization_id=linked.org, version=1))
    )
    await expect_status(retire, grpc.StatusCode.FAILED_PRECONDITION, "OAuth client secrets")
    await vault.keys.StartRewrap(kpb.StartRewrapRequest())
    worker = RewrapWorker(KeyAdminRepository(vault.db), key_manager)
    assert await worker.work_once()
    await vault.keys.RetireKeyVersion(
        kpb.RetireKeyVersionRequest(data_key=kpb.DataKeyRef(organization_id=linked.org, version=1))
    )
    response = await get_token(vault, linked)
    assert response.refreshed is True
    assert provider.token_calls == 1
