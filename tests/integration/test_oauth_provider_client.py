"""The outbound OAuth client (singura_vault.providers) against a real fake provider.

Every call crosses a real socket to tests/support/oauth_provider.py on 127.0.0.1: rotation,
client authentication, dialects, withheld and oversized answers are the server's real
behaviour, not stubs. Timeouts are provoked by withholding an answer, never by sleeping.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from singura_vault.domain.connections import Platform
from singura_vault.providers import (
    CATALOGUE,
    ClientAuthMethod,
    EgressSettings,
    FailureKind,
    OAuthClientConfig,
    RefreshFailed,
    RevocationOutcome,
    RevocationResult,
    TokenEndpointClient,
    TokenGrant,
    UnsafeEndpoint,
    check_endpoint_url,
    resolve_revocation_url,
    resolve_token_url,
)
from tests.support import canaries
from tests.support.oauth_provider import FakeOAuthProvider

BASIC = ClientAuthMethod.CLIENT_SECRET_BASIC
POST = ClientAuthMethod.CLIENT_SECRET_POST


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpointClient]:
    client = TokenEndpointClient(EgressSettings())
    yield client
    await client.aclose()


def oauth_client(
    provider: FakeOAuthProvider,
    *,
    platform: Platform = Platform.GOOGLE_WORKSPACE,
    auth_method: ClientAuthMethod = BASIC,
    token_url: str | None = None,
    revocation_url: str | None = None,
    scopes: tuple[str, ...] = (),
    client_id: str = "",
    secret_suffix: str = "",
) -> OAuthClientConfig:
    """An OAuth client registered at the provider, pointed at its standard endpoints."""
    client_id = client_id or f"client-{len(canaries.issued())}"
    secret = canaries.canary("client-secret") + secret_suffix
    provider.register_client(client_id, secret)
    return OAuthClientConfig(
        platform=platform,
        client_id=client_id,
        client_secret=secret,
        token_url=provider.token_url if token_url is None else token_url,
        revocation_url=provider.revocation_url if revocation_url is None else revocation_url,
        scopes=scopes,
        auth_method=auth_method,
    )


def with_secret(client: OAuthClientConfig, secret: str) -> OAuthClientConfig:
    return OAuthClientConfig(
        platform=client.platform,
        client_id=client.client_id,
        client_secret=secret,
        token_url=client.token_url,
        revocation_url=client.revocation_url,
        scopes=client.scopes,
        auth_method=client.auth_method,
    )


async def refresh_fails(
    endpoint: TokenEndpointClient, client: OAuthClientConfig, refresh_token: str
) -> RefreshFailed:
    with pytest.raises(RefreshFailed) as caught:
        await endpoint.refresh(client, refresh_token)
    return caught.value


# ----------------------------------------------------------------------- refresh


async def test_refresh_with_rotation_retires_the_old_refresh_token(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A refresh against a rotating provider returns a new valid access token and a new refresh
    token, and the old refresh token stops working."""
    client = oauth_client(provider)
    access_token, refresh_token = provider.issue_grant(
        client.client_id, expires_in=1234, scopes=("email", "drive.readonly")
    )

    grant = await endpoint.refresh(client, refresh_token)

    assert grant.access_token.startswith("canary-at-")
    assert grant.access_token != access_token
    assert provider.is_access_token_valid(grant.access_token)
    assert grant.refresh_token is not None
    assert grant.refresh_token != refresh_token
    assert grant.expires_in == 1234
    assert grant.scopes == ("email", "drive.readonly")
    assert not provider.is_refresh_token_valid(refresh_token)

    reused = await refresh_fails(endpoint, client, refresh_token)
    assert reused.kind is FailureKind.INVALID_GRANT
    assert reused.oauth_error == "invalid_grant"
    assert not reused.outcome_unknown
    assert "the user must reconnect" in reused.reason
    assert str(reused) == reused.reason

    again = await endpoint.refresh(client, grant.refresh_token)
    assert again.refresh_token not in (None, grant.refresh_token)


async def test_refresh_without_rotation_returns_no_refresh_token(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """Without rotation each refresh returns a fresh access token, no refresh token and no scopes,
    and the refresh token stays valid."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id, rotate=False)

    first = await endpoint.refresh(client, refresh_token)
    second = await endpoint.refresh(client, refresh_token)

    assert first.refresh_token is None
    assert second.refresh_token is None
    assert first.access_token != second.access_token
    assert first.scopes is None  # the answer carried no "scope"
    assert provider.is_refresh_token_valid(refresh_token)


@pytest.mark.parametrize("auth_method", [BASIC, POST])
async def test_client_authentication_methods_reach_the_server(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient, auth_method: ClientAuthMethod
) -> None:
    """Each client authentication method reaches the token endpoint as a form-encoded POST, with RFC
    6749 encoding of awkward characters in the id and secret."""
    # Characters that RFC 6749 §2.3.1's form-urlencoding must protect inside Basic.
    client = oauth_client(
        provider, auth_method=auth_method, client_id="app:id+1 x", secret_suffix=" +:/%é"
    )
    _, refresh_token = provider.issue_grant(client.client_id)

    await endpoint.refresh(client, refresh_token)

    seen = provider.last_token_request
    assert seen is not None
    assert seen.method == "POST"
    assert seen.content_type == "application/x-www-form-urlencoded"
    assert seen.headers["accept"] == "application/json"
    assert seen.params["grant_type"] == "refresh_token"
    if auth_method is BASIC:
        assert seen.client_auth == "basic"
        assert seen.headers["authorization"] == "Basic"
        assert "client_secret" not in seen.form_keys
    else:
        assert seen.client_auth == "post"
        assert "authorization" not in seen.headers
        assert {"client_id", "client_secret"} <= set(seen.form_keys)
    assert "scope" not in seen.form_keys  # Google takes no scope on refresh


async def test_rejected_client_credentials_are_invalid_client(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A wrong client secret fails as INVALID_CLIENT with a reason naming the client credentials,
    and leaves the refresh token valid."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)

    failure = await refresh_fails(endpoint, with_secret(client, "wrong"), refresh_token)

    assert failure.kind is FailureKind.INVALID_CLIENT
    assert failure.oauth_error == "invalid_client"
    assert "client_id and client_secret" in failure.reason
    assert provider.is_refresh_token_valid(refresh_token)


async def test_scripted_invalid_grant_is_classified(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A 400 invalid_grant answer is classified as INVALID_GRANT with no retry delay."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    provider.fail_next(status=400, error="invalid_grant")

    failure = await refresh_fails(endpoint, client, refresh_token)

    assert failure.kind is FailureKind.INVALID_GRANT
    assert failure.retry_after_s is None


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("invalid_scope", FailureKind.INVALID_CLIENT),
        ("invalid_request", FailureKind.INVALID_CLIENT),
        ("access_denied", FailureKind.REVOKED),
        ("Bad <b>code</b> with spaces", FailureKind.INVALID_CLIENT),
    ],
)
async def test_other_400_codes_are_classified_and_sanitized(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient, error: str, kind: FailureKind
) -> None:
    """Other 400 error codes map to their failure kind, an unrecognised code is reported as such,
    and the provider's markup never reaches the reason."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    provider.fail_next(status=400, error=error)

    failure = await refresh_fails(endpoint, client, refresh_token)

    assert failure.kind is kind
    expected_code = error if " " not in error else "unrecognized"
    assert failure.oauth_error == expected_code
    assert "<b>" not in failure.reason


async def test_server_error_is_transient_and_leaves_the_token_usable(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """An HTTP 500 is a transient failure with a known outcome, and the same refresh token works on
    the next try."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    provider.fail_next(status=500)

    failure = await refresh_fails(endpoint, client, refresh_token)

    assert failure.kind is FailureKind.TRANSIENT
    assert failure.oauth_error == "http_500"
    assert failure.retry_after_s is None
    assert not failure.outcome_unknown
    assert (await endpoint.refresh(client, refresh_token)).access_token


async def test_rate_limit_carries_retry_after_seconds(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """An HTTP 429 with Retry-After in seconds is transient and carries that delay, also in its
    reason."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    provider.fail_next(status=429, retry_after=30)

    failure = await refresh_fails(endpoint, client, refresh_token)

    assert failure.kind is FailureKind.TRANSIENT
    assert failure.oauth_error == "http_429"
    assert failure.retry_after_s == 30.0
    assert "30 s" in failure.reason


async def test_unavailable_carries_retry_after_as_http_date(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """An HTTP 503 whose Retry-After is an HTTP date is transient and carries the delay until that
    date."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    when = datetime.now(UTC) + timedelta(seconds=120)
    provider.fail_next(
        status=503,
        error="temporarily_unavailable",
        retry_after=email.utils.format_datetime(when, usegmt=True),
    )

    failure = await refresh_fails(endpoint, client, refresh_token)

    assert failure.oauth_error == "http_503"
    assert failure.retry_after_s is not None
    assert 60.0 < failure.retry_after_s <= 120.0


async def test_a_200_without_an_access_token_is_an_unknown_outcome(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A 200 without an access token, or not JSON at all, is a transient failure whose outcome is
    unknown."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    provider.answer_next_raw(200, b'{"token_type": "Bearer"}')
    provider.answer_next_raw(200, b"<html>hello</html>", content_type="text/html")

    for _ in range(2):
        failure = await refresh_fails(endpoint, client, refresh_token)
        assert failure.kind is FailureKind.TRANSIENT
        assert failure.oauth_error == "unparseable"
        assert failure.outcome_unknown


async def test_connection_refused_is_transient_with_a_known_outcome(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A refused connection is a transient connect_error whose outcome is known (nothing was
    sent)."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = oauth_client(provider, token_url=f"http://127.0.0.1:{port}/token")

    failure = await refresh_fails(endpoint, client, "canary-rt-unused")

    assert failure.kind is FailureKind.TRANSIENT
    assert failure.oauth_error == "connect_error"
    assert not failure.outcome_unknown


# ------------------------------------------------------------------------ dialects


async def test_slack_dialect_success_and_200_errors(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """Slack's dialect: a success carries its scopes and lifetime, and an error answered with HTTP
    200 is classified by its code."""
    client = oauth_client(provider, platform=Platform.SLACK, token_url=provider.slack_token_url)
    _, refresh_token = provider.issue_grant(
        client.client_id, expires_in=43200, scopes=("chat:write", "channels:read")
    )

    grant = await endpoint.refresh(client, refresh_token)
    assert grant.scopes == ("chat:write", "channels:read")
    assert grant.expires_in == 43200
    assert grant.refresh_token is not None

    stale = await refresh_fails(endpoint, client, refresh_token)
    assert (stale.kind, stale.oauth_error) == (FailureKind.INVALID_GRANT, "invalid_refresh_token")

    bad_secret = await refresh_fails(endpoint, _post(client, "wrong"), grant.refresh_token)
    assert (bad_secret.kind, bad_secret.oauth_error) == (
        FailureKind.INVALID_CLIENT,
        "bad_client_secret",
    )

    provider.fail_next(status=200, error="token_revoked")
    revoked = await refresh_fails(endpoint, client, grant.refresh_token)
    assert (revoked.kind, revoked.oauth_error) == (FailureKind.REVOKED, "token_revoked")
    assert not revoked.outcome_unknown

    provider.fail_next(status=200, error="internal_error")
    other = await refresh_fails(endpoint, client, grant.refresh_token)
    assert (other.kind, other.oauth_error) == (FailureKind.TRANSIENT, "internal_error")


def _post(client: OAuthClientConfig, secret: str) -> OAuthClientConfig:
    """The same client, authenticating in the body (so Slack can tell which part is wrong)."""
    return OAuthClientConfig(
        platform=client.platform,
        client_id=client.client_id,
        client_secret=secret,
        token_url=client.token_url,
        revocation_url=client.revocation_url,
        scopes=client.scopes,
        auth_method=POST,
    )


async def test_github_dialect_200_with_error(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """GitHub's dialect: JSON is asked for, and errors answered with HTTP 200 are classified as
    invalid grant or invalid client."""
    client = oauth_client(provider, platform=Platform.GITHUB, token_url=provider.github_token_url)
    _, refresh_token = provider.issue_grant(client.client_id)

    # The fake answers form-encoded unless JSON is asked for, as GitHub does: a parsed
    # grant proves the Accept header.
    grant = await endpoint.refresh(client, refresh_token)
    assert grant.refresh_token is not None

    stale = await refresh_fails(endpoint, client, refresh_token)
    assert (stale.kind, stale.oauth_error) == (FailureKind.INVALID_GRANT, "bad_refresh_token")

    wrong = await refresh_fails(endpoint, with_secret(client, "wrong"), grant.refresh_token)
    assert (wrong.kind, wrong.oauth_error) == (
        FailureKind.INVALID_CLIENT,
        "incorrect_client_credentials",
    )


async def test_microsoft_sends_scope_on_refresh(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """Microsoft 365 refreshes send a scope (the configured one, or the default) to the tenant's
    token endpoint."""
    default = oauth_client(provider, platform=Platform.MICROSOFT_365, auth_method=POST)
    configured = oauth_client(
        provider,
        platform=Platform.MICROSOFT_365,
        scopes=("offline_access", "User.Read"),
    )
    _, first = provider.issue_grant(default.client_id)
    _, second = provider.issue_grant(configured.client_id)

    await endpoint.refresh(default, first, workspace_id="contoso.onmicrosoft.com")
    seen = provider.last_token_request
    assert seen is not None
    assert seen.params["scope"] == "https://graph.microsoft.com/.default offline_access"

    await endpoint.refresh(configured, second)
    seen = provider.last_token_request
    assert seen is not None
    assert seen.params["scope"] == "offline_access User.Read"


async def test_atlassian_speaks_json(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """Atlassian refreshes are sent as a JSON body with the client credentials in it."""
    client = oauth_client(provider, platform=Platform.ATLASSIAN, auth_method=POST)
    _, refresh_token = provider.issue_grant(client.client_id)

    grant = await endpoint.refresh(client, refresh_token)

    seen = provider.last_token_request
    assert seen is not None
    assert seen.content_type == "application/json"
    assert set(seen.form_keys) == {"grant_type", "refresh_token", "client_id", "client_secret"}
    assert grant.refresh_token is not None


# ------------------------------------------------------- lost, slow and odd answers


async def test_a_dropped_answer_is_an_unknown_outcome(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A connection dropped before the answer is a transient connection_lost failure whose outcome
    is unknown."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    hold = provider.hold_next()

    task = asyncio.create_task(endpoint.refresh(client, refresh_token))
    assert await hold.wait_reached_async()
    hold.drop()
    with pytest.raises(RefreshFailed) as caught:
        await task

    assert caught.value.kind is FailureKind.TRANSIENT
    assert caught.value.oauth_error == "connection_lost"
    assert caught.value.outcome_unknown
    assert "may have rotated" in caught.value.reason
    # Why it matters: the provider rotated before the answer was lost.
    assert not provider.is_refresh_token_valid(refresh_token)


async def test_total_timeout_bounds_a_withheld_answer(provider: FakeOAuthProvider) -> None:
    """A withheld answer ends at the total timeout as a transient failure with an unknown outcome,
    the limit named in the reason."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    hold = provider.hold_next()
    async with TokenEndpointClient(EgressSettings(total_timeout_s=0.5)) as impatient:
        task = asyncio.create_task(impatient.refresh(client, refresh_token))
        assert await hold.wait_reached_async()
        with pytest.raises(RefreshFailed) as caught:
            await task
    hold.release()

    assert caught.value.kind is FailureKind.TRANSIENT
    assert caught.value.oauth_error == "timeout"
    assert caught.value.outcome_unknown
    assert "within 0.5 s" in caught.value.reason


async def test_total_timeout_covers_reading_the_body(provider: FakeOAuthProvider) -> None:
    """The total timeout also bounds a body that stops half way after the headers arrived."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    # Status and headers arrive at once; the body stops half way.
    hold = provider.hold_next(after_headers=True)
    async with TokenEndpointClient(EgressSettings(total_timeout_s=0.5)) as impatient:
        started = time.monotonic()
        with pytest.raises(RefreshFailed) as caught:
            await impatient.refresh(client, refresh_token)
        elapsed = time.monotonic() - started
    hold.release()

    assert hold.reached.is_set()
    assert caught.value.oauth_error == "timeout"
    assert caught.value.outcome_unknown
    # The deadline fired, not httpx's per-read backstop (5 s later) or the server.
    assert elapsed < 3.0


async def test_an_oversized_answer_is_discarded(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """An answer over the size cap is discarded as too_large, whether found while streaming (outcome
    unknown) or declared up front (outcome known)."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    provider.oversize_next(1024 * 1024)  # no Content-Length: caught while streaming
    provider.answer_next_raw(500, b"x" * (65 * 1024), content_type="text/plain")  # declared

    streamed = await refresh_fails(endpoint, client, refresh_token)
    declared = await refresh_fails(endpoint, client, refresh_token)

    assert (streamed.kind, streamed.oauth_error) == (FailureKind.TRANSIENT, "too_large")
    assert streamed.outcome_unknown  # a 200 we could not read may have rotated
    assert declared.oauth_error == "too_large"
    assert not declared.outcome_unknown


async def test_redirects_are_not_followed(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A redirect from the token endpoint is not followed: the failure says so and names token_url,
    and the token stays valid."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    provider.redirect_next(302, provider.token_url)

    failure = await refresh_fails(endpoint, client, refresh_token)

    assert (failure.kind, failure.oauth_error) == (FailureKind.TRANSIENT, "http_302")
    assert "not followed" in failure.reason
    assert "token_url" in failure.reason
    assert provider.token_calls == 1
    assert provider.is_refresh_token_valid(refresh_token)


# ---------------------------------------------------------------- endpoint safety


@pytest.mark.parametrize(
    "url",
    [
        "https://oauth2.googleapis.com/token",
        "https://login.example.com:8443/oauth/token?tenant=a",
        "http://127.0.0.1:8080/token",
        "http://127.9.9.9/token",
        "http://[::1]:9000/token",
        "http://localhost/token",
    ],
)
def test_safe_endpoint_urls_are_accepted(url: str) -> None:
    """Endpoint URLs that are https, or http on loopback when allowed, are accepted unchanged."""
    assert check_endpoint_url(url, allow_loopback_http=True) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://oauth.example.com/token", "must use https"),
        ("http://10.0.0.1/token", "must use https"),
        ("ftp://oauth.example.com/token", "must use https"),
        ("/token", "absolute"),
        ("https:///token", "no host"),
        ("https://user:hunter2@oauth.example.com/token?secret=s3cr3t", "credentials"),
        ("https://oauth.example.com/token#frag", "fragment"),
        ("https://oauth.example.com/to ken", "whitespace"),
        ("https://oauth.example.com:99999/token", "cannot be parsed"),
    ],
)
def test_unsafe_endpoint_urls_are_refused(url: str, problem: str) -> None:
    """Unsafe endpoint URLs are refused with the problem named and without the credentials they
    embed."""
    with pytest.raises(UnsafeEndpoint) as caught:
        check_endpoint_url(url, allow_loopback_http=True)
    assert problem in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_loopback_http_is_refused_when_not_allowed() -> None:
    """With loopback http disallowed, http to 127.0.0.1 is refused while https to it is accepted."""
    with pytest.raises(UnsafeEndpoint, match="disabled in production"):
        check_endpoint_url("http://127.0.0.1:8080/token", allow_loopback_http=False)
    url = "https://127.0.0.1:8443/token"
    assert check_endpoint_url(url, allow_loopback_http=False) == url


async def test_production_settings_never_send_to_plain_http(provider: FakeOAuthProvider) -> None:
    """Production egress settings refuse a plain-http refresh and revocation before any request
    reaches the provider."""
    client = oauth_client(provider)
    _, refresh_token = provider.issue_grant(client.client_id)
    async with TokenEndpointClient(EgressSettings(allow_loopback_http=False)) as strict:
        with pytest.raises(UnsafeEndpoint):
            await strict.refresh(client, refresh_token)
        result = await strict.revoke(client, refresh_token)

    assert result.outcome is RevocationOutcome.FAILED
    assert "refused" in result.detail
    assert provider.token_calls == 0
    assert provider.revoke_calls == 0


# ---------------------------------------------------------------------- revocation


async def test_rfc7009_revocation_with_client_authentication(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """An RFC 7009 revocation authenticates the client with Basic, hints refresh_token, and the
    token no longer refreshes."""
    client = oauth_client(provider, platform=Platform.ZOOM)
    _, refresh_token = provider.issue_grant(client.client_id)

    result = await endpoint.revoke(client, refresh_token)

    assert result.outcome is RevocationOutcome.REVOKED
    assert provider.revoked == [refresh_token]
    seen = provider.last_revoke_request
    assert seen is not None
    assert seen.client_auth == "basic"
    assert seen.params["token_type_hint"] == "refresh_token"
    failure = await refresh_fails(endpoint, client, refresh_token)
    assert failure.kind is FailureKind.INVALID_GRANT


async def test_token_only_revocation_sends_no_client_secret(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """Google's token-only revocation sends no client secret and invalidates the access token."""
    client = oauth_client(provider, platform=Platform.GOOGLE_WORKSPACE, auth_method=POST)
    access_token, _ = provider.issue_grant(client.client_id)

    result = await endpoint.revoke(client, access_token, token_type_hint="access_token")

    assert result.outcome is RevocationOutcome.REVOKED
    seen = provider.last_revoke_request
    assert seen is not None
    assert seen.client_auth == "none"
    assert "client_secret" not in seen.form_keys
    assert not provider.is_access_token_valid(access_token)


async def test_revocation_not_supported_without_an_endpoint(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A platform without a revocation endpoint reports NOT_SUPPORTED without calling out, while a
    configured endpoint is used."""
    microsoft = oauth_client(provider, platform=Platform.MICROSOFT_365, revocation_url="")
    atlassian = oauth_client(provider, platform=Platform.ATLASSIAN, revocation_url="")
    configured = oauth_client(provider, platform=Platform.MICROSOFT_365)
    _, refresh_token = provider.issue_grant(configured.client_id)

    for client in (microsoft, atlassian):
        result = await endpoint.revoke(client, "canary-rt-never-sent")
        assert result.outcome is RevocationOutcome.NOT_SUPPORTED
        assert client.platform.value in result.detail
    assert provider.revoke_calls == 0

    result = await endpoint.revoke(configured, refresh_token)
    assert result.outcome is RevocationOutcome.REVOKED
    assert provider.revoke_calls == 1


async def test_revocation_failure_statuses_are_reported(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A revocation answered with HTTP 503 is reported as FAILED with the status and error, and the
    token stays valid."""
    client = oauth_client(provider, platform=Platform.ZOOM)
    _, refresh_token = provider.issue_grant(client.client_id)
    provider.fail_revocations(503)

    result = await endpoint.revoke(client, refresh_token)

    assert result == RevocationResult(
        RevocationOutcome.FAILED, "provider answered HTTP 503 (temporarily_unavailable)"
    )
    assert provider.is_refresh_token_valid(refresh_token)


async def test_revocation_is_bounded_by_its_timeout(provider: FakeOAuthProvider) -> None:
    """A withheld revocation answer ends at the revocation timeout as FAILED, naming the limit."""
    client = oauth_client(provider, platform=Platform.ZOOM)
    _, refresh_token = provider.issue_grant(client.client_id)
    hold = provider.hold_next(on="revoke")
    async with TokenEndpointClient(EgressSettings(revoke_timeout_s=0.5)) as impatient:
        task = asyncio.create_task(impatient.revoke(client, refresh_token))
        assert await hold.wait_reached_async()
        result = await task
    hold.release()

    assert result == RevocationResult(RevocationOutcome.FAILED, "timed out after 0.5 s")


async def test_slack_revocation_and_an_already_invalid_token(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """Slack revocation revokes the tokens, and revoking them again counts as revoked with an
    'already invalid' detail."""
    client = oauth_client(
        provider, platform=Platform.SLACK, revocation_url=provider.slack_revocation_url
    )
    access_token, refresh_token = provider.issue_grant(client.client_id)

    first = await endpoint.revoke(client, refresh_token, access_token=access_token)
    second = await endpoint.revoke(client, refresh_token, access_token=access_token)

    assert first.outcome is RevocationOutcome.REVOKED
    assert second.outcome is RevocationOutcome.REVOKED
    assert "already invalid (invalid_auth)" in second.detail
    seen = provider.last_revoke_request
    assert seen is not None
    assert seen.client_auth == "none"
    assert seen.form_keys == ("token",)


async def test_github_grant_revocation(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """GitHub grant revocation needs the access token: without it the revocation fails, with it the
    grant is revoked (again: already invalid)."""
    client = oauth_client(
        provider, platform=Platform.GITHUB, revocation_url=provider.github_revocation_url
    )
    access_token, refresh_token = provider.issue_grant(client.client_id)

    without = await endpoint.revoke(client, refresh_token)
    revoked = await endpoint.revoke(client, refresh_token, access_token=access_token)
    again = await endpoint.revoke(client, refresh_token, access_token=access_token)

    assert without.outcome is RevocationOutcome.FAILED
    assert "access token" in without.detail
    assert revoked.outcome is RevocationOutcome.REVOKED
    assert not provider.is_refresh_token_valid(refresh_token)  # the whole grant went
    assert again.outcome is RevocationOutcome.FAILED
    assert "HTTP 404" in again.detail
    seen = provider.last_revoke_request
    assert seen is not None
    assert (seen.method, seen.client_auth) == ("DELETE", "basic")
    assert seen.path == f"/github/applications/{client.client_id}/grant"


async def test_dropbox_revocation_uses_the_access_token(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """Dropbox revocation goes through the access token, invalidates the refresh token, and a second
    revocation is 'already invalid'."""
    client = oauth_client(
        provider, platform=Platform.DROPBOX, revocation_url=provider.dropbox_revocation_url
    )
    access_token, refresh_token = provider.issue_grant(client.client_id, rotate=False)

    revoked = await endpoint.revoke(client, refresh_token, access_token=access_token)
    again = await endpoint.revoke(client, access_token, token_type_hint="access_token")

    assert revoked.outcome is RevocationOutcome.REVOKED
    assert not provider.is_refresh_token_valid(refresh_token)
    assert again.outcome is RevocationOutcome.REVOKED
    assert "already invalid" in again.detail
    seen = provider.last_revoke_request
    assert seen is not None
    assert seen.headers["authorization"] == "Bearer"
    assert seen.form_keys == ()


# ------------------------------------------------------------------ the fake itself

_UNAUTHENTICATED_REFRESH = """
import sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], data=b"grant_type=refresh_token")
try:
    urllib.request.urlopen(request, timeout=30)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def test_the_fake_provider_answers_other_processes(provider: FakeOAuthProvider) -> None:
    """The loopback OAuth provider answers a request from another process (a 401 to an
    unauthenticated refresh), independent of this event loop."""
    # Vault subprocesses will call it: it must not depend on this process's event loop.
    done = subprocess.run(
        [sys.executable, "-c", _UNAUTHENTICATED_REFRESH, provider.token_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "401"
    assert provider.token_calls == 1


# ------------------------------------------------------------------ the catalogue


def test_the_catalogue_covers_every_platform_with_safe_urls() -> None:
    """The read-only platform catalogue has an entry for every platform, with resolved token and
    revocation URLs that pass the production URL check."""
    assert isinstance(CATALOGUE, MappingProxyType)
    assert set(CATALOGUE) == set(Platform)
    for platform, entry in CATALOGUE.items():
        assert entry.platform is platform
        client = OAuthClientConfig(platform, "id", "secret", "", "", (), BASIC)
        check_endpoint_url(resolve_token_url(client, "tenant"), allow_loopback_http=False)
        revocation = resolve_revocation_url(client, "tenant")
        if revocation is not None:
            check_endpoint_url(revocation, allow_loopback_http=False)
        assert "{" not in resolve_token_url(client, "tenant")
    assert CATALOGUE[Platform.MICROSOFT_365].revocation_url is None
    assert CATALOGUE[Platform.ATLASSIAN].revocation_url is None


def test_urls_resolve_tenants_client_ids_and_overrides() -> None:
    """Endpoint URLs substitute the tenant and client id percent-encoded, and a configured URL
    overrides the catalogue's."""
    microsoft = OAuthClientConfig(Platform.MICROSOFT_365, "id", "s", "", "", (), POST)
    assert resolve_token_url(microsoft, "") == (
        "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    )
    assert resolve_token_url(microsoft, "a/b c") == (
        "https://login.microsoftonline.com/a%2Fb%20c/oauth2/v2.0/token"
    )
    assert resolve_revocation_url(microsoft, "t") is None
    github = OAuthClientConfig(Platform.GITHUB, "Iv1.abc/", "s", "", "", (), BASIC)
    assert resolve_revocation_url(github, "") == (
        "https://api.github.com/applications/Iv1.abc%2F/grant"
    )
    custom = OAuthClientConfig(
        Platform.SALESFORCE,
        "id",
        "s",
        "https://test.salesforce.com/services/oauth2/token",
        "https://test.salesforce.com/services/oauth2/revoke",
        (),
        POST,
    )
    assert resolve_token_url(custom, "") == custom.token_url
    assert resolve_revocation_url(custom, "") == custom.revocation_url


# ------------------------------------------------------------------------- secrets


async def test_no_message_or_repr_contains_a_secret(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """No grant, client, failure message or repr contains a token or client secret, even when the
    provider echoes them back."""
    client = oauth_client(provider, auth_method=POST)
    slack = oauth_client(
        provider, platform=Platform.SLACK, token_url=provider.slack_token_url, auth_method=POST
    )
    github = oauth_client(provider, platform=Platform.GITHUB, token_url=provider.github_token_url)
    access_token, refresh_token = provider.issue_grant(client.client_id)
    grant = await endpoint.refresh(client, refresh_token)
    texts = [repr(grant), str(grant), repr(client), str(client), repr(slack)]

    failures: list[RefreshFailed] = [
        # The fake echoes the presented refresh token and secret in error_description.
        await refresh_fails(endpoint, client, refresh_token),
        await refresh_fails(
            endpoint, _post(client, canaries.canary("wrong-secret")), refresh_token
        ),
        await refresh_fails(endpoint, slack, refresh_token),
        await refresh_fails(endpoint, github, refresh_token),
    ]
    hold = provider.hold_next()
    task = asyncio.create_task(endpoint.refresh(client, grant.refresh_token or ""))
    assert await hold.wait_reached_async()
    hold.drop()
    with pytest.raises(RefreshFailed) as dropped:
        await task
    failures.append(dropped.value)
    for failure in failures:
        texts += [str(failure), repr(failure), failure.reason, failure.oauth_error]
        texts += traceback.format_exception(failure)
    results = [
        await endpoint.revoke(client, access_token, token_type_hint="access_token"),
        await endpoint.revoke(slack, "canary-rt-unknown", access_token=access_token),
    ]
    texts += [repr(result) for result in results]

    secrets = [
        *canaries.issued(),
        access_token,
        refresh_token,
        grant.access_token,
        grant.refresh_token or "",
        client.client_secret,
    ]
    combined = "\n".join(texts)
    assert "canary-" not in combined
    leaked = [secret for secret in secrets if secret and secret in combined]
    assert not leaked, f"{len(leaked)} secrets appeared in messages or reprs"
    assert isinstance(grant, TokenGrant)
