"""The connect flow (issue #23): StartAuthorization and CompleteAuthorization over a
real gRPC channel, against the loopback OAuth provider's authorization and token
endpoints (tests/support/oauth_provider.py), with a real HTTP client as the browser and a small
loopback "app callback" server that calls CompleteAuthorization with what it got."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import grpc
import httpx
import pytest

from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as pb
from tests.support.api_keys import make_key
from tests.support.canaries import canary
from tests.support.error_details import details, failure
from tests.support.oauth_connect import Setup, connect_setup
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.status import expect_status
from tests.support.tenants import new_org
from tests.support.vault import Stubs, Vault

ACCESS = crpb.CREDENTIAL_TYPE_ACCESS_TOKEN
REFRESH = crpb.CREDENTIAL_TYPE_REFRESH_TOKEN
WRITER = apb.API_KEY_ROLE_WRITER


@pytest.fixture
async def google(
    vault: Vault, provider: FakeOAuthProvider, browser: httpx.AsyncClient
) -> AsyncIterator[Setup]:
    async for setup in connect_setup(vault, provider, browser, "google"):
        yield setup


@pytest.fixture
async def owner(owner_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(owner_dsn)
    yield conn
    await conn.close()


async def _events(owner: asyncpg.Connection, org: str, action: str) -> list[dict[str, Any]]:
    rows = await owner.fetch(
        "SELECT details, outcome, resource_id FROM singura.audit_logs"
        " WHERE organization_id = $1 AND action = $2"
        " UNION ALL SELECT details, outcome, resource_id FROM singura.audit_pending"
        " WHERE organization_id = $1 AND action = $2",
        uuid.UUID(org),
        action,
    )
    return [
        {**json.loads(r["details"]), "_outcome": r["outcome"], "_resource": r["resource_id"]}
        if isinstance(r["details"], str)
        else {**r["details"], "_outcome": r["outcome"], "_resource": r["resource_id"]}
        for r in rows
    ]


async def _token(setup: Setup, connection_id: str) -> pb.GetAccessTokenResponse:
    return await setup.vault.oauth.GetAccessToken(
        pb.GetAccessTokenRequest(organization_id=setup.org, connection_id=connection_id)
    )


async def _versions(setup: Setup, connection_id: str, type_: int) -> list[int]:
    listed = await setup.vault.credentials.ListCredentials(
        crpb.ListCredentialsRequest(
            organization_id=setup.org,
            connection_id=connection_id,
            type=type_,  # type: ignore[arg-type]  # an enum value
        )
    )
    return sorted(c.version for c in listed.credentials)


def _reason(error: grpc.aio.AioRpcError) -> str:
    reason: str = details(error)["ErrorInfo"].reason
    return reason


# -- the flow ------------------------------------------------------------------------


async def test_connect_creates_an_active_connection_with_tokens_identity_and_scopes(
    slack: Setup, owner: asyncpg.Connection
) -> None:
    """Browser -> provider -> app callback -> CompleteAuthorization: a new ACTIVE connection
    with the provider's identity, requested and granted scopes, both tokens stored as
    versions, and connection.authorized audited without a secret."""
    slack.provider.set_identity(workspace_id="T-acme", user_id="U-alice")
    slack.provider.shape_code_grants(granted_scopes=("channels:read",))
    result = await slack.connect(display_name="Acme Slack")
    connection = result.connection
    assert (connection.platform_workspace_id, connection.platform_user_id) == ("T-acme", "U-alice")
    assert connection.status == cpb.CONNECTION_STATUS_ACTIVE
    assert connection.display_name == "Acme Slack"
    assert list(result.requested_scopes) == ["channels:read", "users:read"]
    assert list(result.granted_scopes) == ["channels:read"]
    assert list(connection.requested_scopes) == ["channels:read", "users:read"]
    assert list(connection.permissions_granted) == ["channels:read"]
    assert not result.reauthorized
    token = await _token(slack, connection.id)
    assert slack.provider.is_access_token_valid(token.access_token)
    assert token.HasField("expire_time")
    assert await _versions(slack, connection.id, REFRESH) == [1]
    # The authorization request carried the state but no verifier or secret.
    sent = slack.provider.last_authorization
    assert sent is not None
    assert sent["client_id"] == slack.client_id
    assert "client_secret" not in sent
    assert "code_verifier" not in sent
    (event,) = await _events(owner, slack.org, "connection.authorized")
    assert event["_resource"] == connection.id
    assert event["granted_scopes"] == ["channels:read"]
    assert token.access_token not in json.dumps(event)
    fetched = await slack.vault.connections.GetConnection(
        cpb.GetConnectionRequest(organization_id=slack.org, connection_id=connection.id)
    )
    assert list(fetched.connection.requested_scopes) == ["channels:read", "users:read"]


async def test_slack_user_scopes_are_kept_apart_from_the_bot_scopes(slack: Setup) -> None:
    """Slack's user scopes (user_scope, answered in authed_user.scope) land in the
    connection's and the response's granted_user_scopes, the bot scopes in
    permissions_granted; a reconnect replaces them."""
    result = await slack.connect(
        scopes=["channels:read"], extra_params={"user_scope": "search:read,users:read"}
    )
    assert list(result.granted_scopes) == ["channels:read"]
    assert list(result.granted_user_scopes) == ["search:read", "users:read"]
    assert list(result.connection.permissions_granted) == ["channels:read"]
    assert list(result.connection.granted_user_scopes) == ["search:read", "users:read"]
    fetched = await slack.vault.connections.GetConnection(
        cpb.GetConnectionRequest(organization_id=slack.org, connection_id=result.connection.id)
    )
    assert list(fetched.connection.permissions_granted) == ["channels:read"]
    assert list(fetched.connection.granted_user_scopes) == ["search:read", "users:read"]
    again = await slack.connect(
        connection_id=result.connection.id,
        scopes=["channels:read"],
        extra_params={"user_scope": "search:read"},
    )
    assert list(again.granted_user_scopes) == ["search:read"]
    assert list(again.connection.granted_user_scopes) == ["search:read"]
    assert list(again.connection.permissions_granted) == ["channels:read"]


async def test_pkce_platform_sends_an_s256_challenge_and_the_verifier_stays_sealed(
    google: Setup, owner: asyncpg.Connection
) -> None:
    """Google: the URL has an S256 challenge, the provider checks the verifier at the
    token endpoint (a mismatch would be invalid_grant), identity comes from the id_token,
    and the database holds neither the state nor the verifier in the clear."""
    google.provider.set_identity(workspace_id="acme.example", user_id="1234567890")
    started = await google.start()
    query = dict(parse_qs(urlsplit(started.authorization_url).query))
    assert query["code_challenge_method"] == ["S256"]
    assert query["access_type"] == ["offline"]
    back = await google.consent(started)
    result = await google.complete(back)
    assert result.connection.platform_user_id == "1234567890"
    assert result.connection.platform_workspace_id == "acme.example"
    row = await owner.fetchrow(
        "SELECT * FROM singura.oauth_authorizations WHERE organization_id = $1",
        uuid.UUID(google.org),
    )
    assert row is not None
    assert row["verifier_ciphertext"] is not None
    dumped = repr(dict(row)).encode()
    assert started.state.encode() not in dumped
    assert back["code"].encode() not in dumped


async def test_reconnect_keeps_the_id_and_makes_the_connection_active_again(
    slack: Setup, owner: asyncpg.Connection
) -> None:
    """A reconnect stores new token versions in the same connection, sets it ACTIVE
    again, audits connection.reauthorized and revokes the old refresh token (Slack
    revokes one token at a time)."""
    first = await slack.connect()
    conn_id = first.connection.id
    old_refresh = await owner.fetchval(
        "SELECT count(*) FROM singura.encrypted_credentials WHERE connection_id = $1",
        uuid.UUID(conn_id),
    )
    assert old_refresh == 2
    await slack.vault.connections.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            organization_id=slack.org,
            connection_id=conn_id,
            status=cpb.CONNECTION_STATUS_EXPIRED,
            reason="the user revoked the app",
        )
    )
    revoked_before = len(slack.provider.revoked)
    again = await slack.connect(connection_id=conn_id)
    assert again.reauthorized
    assert again.connection.id == conn_id
    assert again.connection.status == cpb.CONNECTION_STATUS_ACTIVE
    assert await _versions(slack, conn_id, ACCESS) == [1, 2]
    assert await _versions(slack, conn_id, REFRESH) == [1, 2]
    assert (
        again.previous_refresh_token_revocation.outcome == cpb.PROVIDER_REVOCATION_OUTCOME_REVOKED
    )
    assert len(slack.provider.revoked) == revoked_before + 1
    assert slack.provider.is_access_token_valid((await _token(slack, conn_id)).access_token)
    (event,) = await _events(owner, slack.org, "connection.reauthorized")
    assert event["_resource"] == conn_id


async def test_deny_fails_precondition_and_the_reconnect_target_keeps_its_tokens(
    slack: Setup, owner: asyncpg.Connection
) -> None:
    """The user pressed Deny: FAILED_PRECONDITION naming access_denied, no exchange,
    connection.authorization_failed audited, the connection's tokens untouched."""
    first = await slack.connect()
    conn_id = first.connection.id
    before = (await _token(slack, conn_id)).access_token
    calls = slack.provider.token_calls
    slack.provider.deny_next_authorization()
    started = await slack.start(connection_id=conn_id)
    back = await slack.consent(started)
    assert back["error"] == "access_denied"
    error = await failure(slack.complete(back))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "access_denied" in (error.details() or "")
    assert _reason(error) == "OAUTH_AUTHORIZATION_DENIED"
    assert slack.provider.token_calls == calls
    assert (await _token(slack, conn_id)).access_token == before
    assert await _versions(slack, conn_id, ACCESS) == [1]
    (event,) = await _events(owner, slack.org, "connection.authorization_failed")
    assert event["oauth_error"] == "access_denied"
    assert event["_outcome"] == "failure"


async def test_deny_through_the_app_callback(slack: Setup) -> None:
    """The callback server passes the provider's error on; the vault refuses."""
    slack.provider.deny_next_authorization()
    started = await slack.start()
    answer = await slack.browser.get(started.authorization_url)
    landed = await slack.browser.get(answer.headers["location"])
    assert landed.status_code == 400
    error = slack.callback.results[-1]
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]  # a call's error


async def test_replayed_code_returns_the_same_answer_without_a_provider_call(
    slack: Setup,
) -> None:
    """The same state and code after success: the same connection, no second exchange."""
    started = await slack.start()
    back = await slack.consent(started)
    first = await slack.complete(back)
    calls = slack.provider.token_calls
    second = await slack.complete(back)
    assert second.connection.id == first.connection.id
    assert list(second.granted_scopes) == list(first.granted_scopes)
    assert slack.provider.token_calls == calls


async def test_replayed_state_with_another_code_is_refused(slack: Setup) -> None:
    """A used state with a different code: OAUTH_STATE_USED, no provider call."""
    started = await slack.start()
    back = await slack.consent(started)
    await slack.complete(back)
    calls = slack.provider.token_calls
    error = await failure(slack.complete({**back, "code": canary("other-code")}))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == "OAUTH_STATE_USED"
    assert slack.provider.token_calls == calls


async def test_expired_state_is_refused_and_consumed(
    slack: Setup, owner: asyncpg.Connection
) -> None:
    """A state past SINGURA_OAUTH_STATE_TTL: OAUTH_STATE_EXPIRED, then OAUTH_STATE_USED."""
    started = await slack.start()
    back = await slack.consent(started)
    await owner.execute(
        "UPDATE singura.oauth_authorizations SET expires_at = now() - interval '1 minute'"
        " WHERE organization_id = $1",
        uuid.UUID(slack.org),
    )
    calls = slack.provider.token_calls
    error = await failure(slack.complete(back))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == "OAUTH_STATE_EXPIRED"
    again = await failure(slack.complete(back))
    assert _reason(again) == "OAUTH_STATE_USED"
    assert slack.provider.token_calls == calls


async def test_state_of_another_organization_is_refused_and_consumed(slack: Setup) -> None:
    """Organization B's writer key presents A's state: OAUTH_STATE_OTHER_ORGANIZATION, and
    the state is used up for A too."""
    other = await new_org(slack.vault)
    stubs: Stubs = slack.vault.as_key(await make_key(slack.vault, other, (WRITER,)))
    started = await slack.start()
    back = await slack.consent(started)
    error = await failure(
        stubs.oauth.CompleteAuthorization(
            pb.CompleteAuthorizationRequest(
                organization_id=other, state=back["state"], code=back["code"]
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == "OAUTH_STATE_OTHER_ORGANIZATION"
    assert back["code"] not in (error.details() or "")
    assert _reason(await failure(slack.complete(back))) == "OAUTH_STATE_USED"


async def test_unknown_state_is_refused(slack: Setup) -> None:
    """A well-formed state nobody started: OAUTH_STATE_UNKNOWN."""
    error = await failure(slack.complete({"state": "A" * 43, "code": "x"}))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == "OAUTH_STATE_UNKNOWN"


async def test_unregistered_redirect_uri_is_invalid_argument(slack: Setup) -> None:
    """A redirect_uri that is only a prefix-match of a registered one is refused."""
    request = pb.StartAuthorizationRequest(
        organization_id=slack.org,
        platform=cpb.PLATFORM_SLACK,
        redirect_uri=slack.callback.redirect_uri + "/evil",
    )
    await expect_status(
        slack.vault.oauth.StartAuthorization(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "redirect_uri",
        "registered",
    )


async def test_extra_param_not_allowed_is_invalid_argument_naming_it(slack: Setup) -> None:
    """Slack takes user_scope; a redirect_uri override in extra_params is refused by name."""
    await slack.start(extra_params={"user_scope": "users:read"})
    await expect_status(
        slack.start(extra_params={"prompt": "consent"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "prompt",
    )


async def test_bad_state_and_oversized_code_are_invalid_argument(slack: Setup) -> None:
    """A state of the wrong length, and a code over 4 KiB: INVALID_ARGUMENT naming them."""
    await expect_status(
        slack.complete({"state": "short", "code": "x"}), grpc.StatusCode.INVALID_ARGUMENT, "state"
    )
    await expect_status(
        slack.complete({"state": "A" * 43, "code": "c" * 4097}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "code",
    )


async def test_set_oauth_client_checks_and_returns_redirect_uris(slack: Setup) -> None:
    """redirect_uris are stored and returned exactly; a fragment, a non-loopback http
    URL or a relative one is refused; the effective authorization URL is shown."""
    got = await slack.vault.oauth.GetOAuthClient(
        pb.GetOAuthClientRequest(organization_id=slack.org, platform=cpb.PLATFORM_SLACK)
    )
    assert list(got.client.redirect_uris) == [slack.callback.redirect_uri]
    assert got.client.effective_authorization_url == slack.provider.slack_authorization_url
    for bad in ("https://app.example/cb#x", "http://app.example/cb", "/cb"):
        await expect_status(
            slack.vault.oauth.SetOAuthClient(
                pb.SetOAuthClientRequest(
                    client=pb.OAuthClient(
                        organization_id=slack.org,
                        platform=cpb.PLATFORM_SLACK,
                        client_id="x",
                        client_secret=canary("client-secret"),
                        redirect_uris=[bad],
                    )
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "client.redirect_uris[0]",
        )


async def test_identity_change_is_refused_unless_allowed(slack: Setup) -> None:
    """A reconnect answered for another workspace: OAUTH_IDENTITY_CHANGED and the
    connection untouched; with allow_identity_change it takes the new identity."""
    slack.provider.set_identity(workspace_id="T-one", user_id="U-one")
    conn_id = (await slack.connect()).connection.id
    slack.provider.set_identity(workspace_id="T-two", user_id="U-two")
    started = await slack.start(connection_id=conn_id)
    error = await failure(slack.complete(await slack.consent(started)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == "OAUTH_IDENTITY_CHANGED"
    got = await slack.vault.connections.GetConnection(
        cpb.GetConnectionRequest(organization_id=slack.org, connection_id=conn_id)
    )
    assert got.connection.platform_workspace_id == "T-one"
    assert await _versions(slack, conn_id, ACCESS) == [1]
    started = await slack.start(connection_id=conn_id)
    result = await slack.complete(await slack.consent(started), allow_identity_change=True)
    assert result.connection.id == conn_id
    assert result.connection.platform_workspace_id == "T-two"


async def test_concurrent_completions_make_one_exchange_and_get_the_same_connection(
    slack: Setup, owner: asyncpg.Connection
) -> None:
    """Two completions of one state at once: the second waits on the state's row lock
    while the first holds the provider's answer, then gets the same connection; the
    token endpoint is called exactly once."""
    started = await slack.start()
    back = await slack.consent(started)
    calls = slack.provider.token_calls
    hold = slack.provider.hold_next(on="token")
    first = asyncio.create_task(slack.complete(back))
    assert await hold.wait_reached_async()
    second = asyncio.create_task(slack.complete(back))
    # Released only once the second completion waits on the row lock.
    for _ in range(3000):
        # pg_locks shows every role's waits (pg_stat_activity hides other roles').
        waiting = await owner.fetchval("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted")
        if waiting:
            break
        await asyncio.sleep(0.01)
    assert waiting == 1
    hold.release()
    one, two = await asyncio.gather(first, second)
    assert one.connection.id == two.connection.id
    assert slack.provider.token_calls == calls + 1


async def test_same_account_twice_is_already_exists_and_uses_up_the_state(
    slack: Setup, owner: asyncpg.Connection
) -> None:
    """Connecting the same workspace and user again as a new connection follows
    CreateConnection's uniqueness rule (ALREADY_EXISTS); the code is spent, so the state
    is used up with it and the refusal audited."""
    slack.provider.set_identity(workspace_id="T-same", user_id="U-same")
    await slack.connect()
    started = await slack.start()
    back = await slack.consent(started)
    error = await failure(slack.complete(back))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    calls = slack.provider.token_calls
    assert _reason(await failure(slack.complete(back))) == "OAUTH_STATE_USED"
    assert slack.provider.token_calls == calls
    (event,) = await _events(owner, slack.org, "connection.authorization_failed")
    assert event["kind"] == "connection_refused"
