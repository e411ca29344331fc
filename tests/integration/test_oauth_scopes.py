"""Scopes and token expiry (issue #23, item 3) over a real gRPC channel, with connections
made through the connect flow against the loopback OAuth provider: ListConnections'
scope-drift filter, where an access token's expiry came from (expiry_source), and a
refresh that reports other scopes (connection.scopes_changed)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import httpx
import pytest

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as pb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.canaries import canary
from tests.support.messages import org_message
from tests.support.oauth_connect import AppCallback, Setup
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.status import expect_status
from tests.support.vault import Vault

GOOGLE_SCOPES = ["openid", "email"]
# The catalogue's documented Salesforce lifetime (default_expires_in_s): 2 hours.
SALESFORCE_LIFETIME_S = 7200


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        yield client


async def _setup(
    vault: Vault, provider: FakeOAuthProvider, browser: httpx.AsyncClient, platform: str
) -> AsyncIterator[Setup]:
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_ENTERPRISE))
        )
    ).organization.id
    secret = canary("client-secret")
    client_id = f"scopes-{uuid.uuid4().hex[:8]}"
    provider.register_client(client_id, secret)
    callback = AppCallback(vault.address, vault.admin_key, org)
    provider.register_redirect_uri(client_id, callback.redirect_uri)
    if platform == "google":  # identity from the id_token: several accounts per org
        urls: dict[str, Any] = {
            "platform": cpb.PLATFORM_GOOGLE_WORKSPACE,
            "token_url": provider.google_token_url,
            "authorization_url": provider.google_authorization_url,
            "scopes": GOOGLE_SCOPES,
        }
    else:  # Salesforce: the standard dialect; its catalogue entry has a default lifetime
        urls = {
            "platform": cpb.PLATFORM_SALESFORCE,
            "token_url": provider.token_url,
            "authorization_url": provider.authorization_url,
            "scopes": ["api", "refresh_token"],
        }
    await vault.oauth.SetOAuthClient(
        pb.SetOAuthClientRequest(
            client=pb.OAuthClient(
                organization_id=org,
                client_id=client_id,
                client_secret=secret,
                revocation_url=provider.revocation_url,
                redirect_uris=[callback.redirect_uri],
                **urls,
            )
        )
    )
    try:
        yield Setup(vault, provider, org, client_id, callback, int(urls["platform"]), browser)
    finally:
        callback.close()


@pytest.fixture
async def google(
    vault: Vault, provider: FakeOAuthProvider, browser: httpx.AsyncClient
) -> AsyncIterator[Setup]:
    async for setup in _setup(vault, provider, browser, "google"):
        yield setup


@pytest.fixture
async def salesforce(
    vault: Vault, provider: FakeOAuthProvider, browser: httpx.AsyncClient
) -> AsyncIterator[Setup]:
    async for setup in _setup(vault, provider, browser, "salesforce"):
        yield setup


async def _connect_as(setup: Setup, user: str, granted: tuple[str, ...] | None) -> str:
    """Connect one Google account that is granted `granted` (None: what was asked)."""
    setup.provider.set_identity(workspace_id="example.com", user_id=user)
    setup.provider.shape_code_grants(granted_scopes=granted)
    done = await setup.connect(scopes=GOOGLE_SCOPES)
    return done.connection.id


async def _listed(setup: Setup, drift: int, page_size: int = 0) -> set[str]:
    ids: set[str] = set()
    token = ""
    while True:
        page = await setup.vault.connections.ListConnections(
            cpb.ListConnectionsRequest(
                organization_id=setup.org,
                scope_drift=drift,  # type: ignore[arg-type]  # an enum value
                page_size=page_size,
                page_token=token,
            )
        )
        ids |= {c.id for c in page.connections}
        token = page.next_page_token
        if not token:
            return ids


async def _refresh(setup: Setup, connection_id: str) -> pb.RefreshConnectionResponse:
    return await setup.vault.oauth.RefreshConnection(
        pb.RefreshConnectionRequest(
            organization_id=setup.org, connection_id=connection_id, force=True
        )
    )


def _answer_next_refresh(provider: FakeOAuthProvider, **fields: Any) -> str:
    """The next token request gets a successful answer with these fields; no refresh
    token in it (no rotation: the stored one stays good). Returns its access token."""
    access_token = canary("at")
    document = {"access_token": access_token, "token_type": "Bearer", **fields}
    provider.answer_next_raw(200, json.dumps(document).encode())
    return access_token


async def _events(owner_dsn: str, org: str, action: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(owner_dsn)
    try:
        rows = await conn.fetch(
            "SELECT details::text AS details FROM singura.audit_logs"
            " WHERE organization_id = $1 AND action = $2"
            " UNION ALL SELECT details::text FROM singura.audit_pending"
            " WHERE organization_id = $1 AND action = $2",
            uuid.UUID(org),
            action,
        )
    finally:
        await conn.close()
    return [json.loads(row["details"]) for row in rows]


async def _access_token_lifetime(setup: Setup, connection_id: str) -> float:
    token = await setup.vault.oauth.GetAccessToken(
        pb.GetAccessTokenRequest(organization_id=setup.org, connection_id=connection_id)
    )
    assert token.HasField("expire_time")
    return token.expire_time.ToSeconds() - time.time()


async def test_scope_drift_lists_missing_extra_and_either(google: Setup) -> None:
    """ListConnections' scope_drift keeps the connections whose granted scopes lack a
    requested one (MISSING), include one nobody asked for (EXTRA), or either (ANY);
    connections granted exactly what they asked for, or with no requested scopes
    recorded, never drift."""
    exact = await _connect_as(google, "u-exact", None)
    reordered = await _connect_as(google, "u-reordered", ("email", "openid", "email"))
    missing = await _connect_as(google, "u-missing", ("openid",))
    extra = await _connect_as(google, "u-extra", ("openid", "email", "drive.readonly"))
    both = await _connect_as(google, "u-both", ("openid", "drive.readonly"))
    # Made by hand: granted scopes, nothing requested -> never drifted.
    by_hand = (
        await google.vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(
                connection=cpb.Connection(
                    organization_id=google.org,
                    platform=cpb.PLATFORM_GOOGLE_WORKSPACE,
                    platform_user_id="u-by-hand",
                    display_name="by hand",
                    permissions_granted=["admin.directory"],
                )
            )
        )
    ).connection.id

    assert await _listed(google, cpb.SCOPE_DRIFT_MISSING) == {missing, both}
    assert await _listed(google, cpb.SCOPE_DRIFT_EXTRA) == {extra, both}
    assert await _listed(google, cpb.SCOPE_DRIFT_ANY) == {missing, extra, both}
    # Page by page, the filter holds across page tokens.
    assert await _listed(google, cpb.SCOPE_DRIFT_ANY, page_size=1) == {missing, extra, both}
    assert await _listed(google, cpb.SCOPE_DRIFT_UNSPECIFIED) == {
        exact,
        reordered,
        missing,
        extra,
        both,
        by_hand,
    }
    got = await google.vault.connections.GetConnection(
        cpb.GetConnectionRequest(organization_id=google.org, connection_id=extra)
    )
    assert list(got.connection.requested_scopes) == GOOGLE_SCOPES
    assert list(got.connection.permissions_granted) == ["openid", "email", "drive.readonly"]


async def test_scope_drift_filter_is_bound_to_page_tokens_and_known_values(
    google: Setup,
) -> None:
    """A page token taken with one drift filter is refused with another, and a drift
    value the contract does not define is INVALID_ARGUMENT naming the field."""
    await _connect_as(google, "u-a", ("openid",))
    await _connect_as(google, "u-b", ("openid",))
    first = await google.vault.connections.ListConnections(
        cpb.ListConnectionsRequest(
            organization_id=google.org, scope_drift=cpb.SCOPE_DRIFT_MISSING, page_size=1
        )
    )
    assert first.next_page_token
    await expect_status(
        google.vault.connections.ListConnections(
            cpb.ListConnectionsRequest(
                organization_id=google.org,
                scope_drift=cpb.SCOPE_DRIFT_EXTRA,
                page_size=1,
                page_token=first.next_page_token,
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_status(
        google.vault.connections.ListConnections(
            cpb.ListConnectionsRequest(
                organization_id=google.org,
                scope_drift=42,  # type: ignore[arg-type]  # not a defined value
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "scope_drift",
    )


async def test_expiry_source_is_the_provider_when_the_code_answer_has_expires_in(
    google: Setup,
) -> None:
    """A code answer with expires_in: the connection's expiry_source is PROVIDER."""
    connection_id = await _connect_as(google, "u-provider", None)
    got = await google.vault.connections.GetConnection(
        cpb.GetConnectionRequest(organization_id=google.org, connection_id=connection_id)
    )
    assert got.connection.expiry_source == cpb.EXPIRY_SOURCE_PROVIDER
    assert 3000 < await _access_token_lifetime(google, connection_id) <= 3600


async def test_a_missing_expires_in_uses_the_catalogues_lifetime_and_says_so(
    salesforce: Setup, owner_dsn: str
) -> None:
    """Salesforce's code answer has no expires_in: the token expires after the
    catalogue's documented lifetime and the connection says CATALOGUE, in
    ListConnections as in the audit event."""
    salesforce.provider.shape_code_grants(expires_in=None)
    done = await salesforce.connect()
    assert done.connection.expiry_source == cpb.EXPIRY_SOURCE_CATALOGUE
    listed = await salesforce.vault.connections.ListConnections(
        cpb.ListConnectionsRequest(organization_id=salesforce.org)
    )
    assert [c.expiry_source for c in listed.connections] == [cpb.EXPIRY_SOURCE_CATALOGUE]
    lifetime = await _access_token_lifetime(salesforce, done.connection.id)
    assert SALESFORCE_LIFETIME_S - 600 < lifetime <= SALESFORCE_LIFETIME_S
    # Due for refresh before it lapses, not never.
    assert done.connection.HasField("next_refresh_time")
    (event,) = await _events(owner_dsn, salesforce.org, "connection.authorized")
    assert event["expiry_source"] == "catalogue"


async def test_a_missing_expires_in_with_no_catalogue_lifetime_is_none(google: Setup) -> None:
    """Google's catalogue entry has no default lifetime: an answer without expires_in
    leaves the token without an expiry, and the connection says NONE."""
    google.provider.set_identity(workspace_id="example.com", user_id="u-none")
    google.provider.shape_code_grants(expires_in=None)
    done = await google.connect(scopes=GOOGLE_SCOPES)
    assert done.connection.expiry_source == cpb.EXPIRY_SOURCE_NONE
    token = await google.vault.oauth.GetAccessToken(
        pb.GetAccessTokenRequest(organization_id=google.org, connection_id=done.connection.id)
    )
    assert not token.HasField("expire_time")


async def test_a_refresh_without_expires_in_falls_back_to_the_catalogue(
    salesforce: Setup, owner_dsn: str
) -> None:
    """A refresh answer without expires_in gets the catalogue's lifetime and
    expiry_source CATALOGUE; the next answer with expires_in makes it PROVIDER again."""
    done = await salesforce.connect()  # the code answer has expires_in 3600
    assert done.connection.expiry_source == cpb.EXPIRY_SOURCE_PROVIDER
    _answer_next_refresh(salesforce.provider)
    refreshed = await _refresh(salesforce, done.connection.id)
    assert refreshed.refreshed
    assert refreshed.connection.expiry_source == cpb.EXPIRY_SOURCE_CATALOGUE
    lifetime = await _access_token_lifetime(salesforce, done.connection.id)
    assert SALESFORCE_LIFETIME_S - 600 < lifetime <= SALESFORCE_LIFETIME_S
    events = await _events(owner_dsn, salesforce.org, "connection.token_refreshed")
    assert [e["expiry_source"] for e in events] == ["catalogue"]

    again = await _refresh(salesforce, done.connection.id)  # the provider's own answer
    assert again.connection.expiry_source == cpb.EXPIRY_SOURCE_PROVIDER
    assert 3000 < await _access_token_lifetime(salesforce, done.connection.id) <= 3600


async def test_a_refresh_reporting_other_scopes_updates_them_and_is_audited(
    google: Setup, owner_dsn: str
) -> None:
    """A refresh whose answer reports other granted scopes updates permissions_granted
    and appends connection.scopes_changed (the lists, no token) with the refresh; the
    connection then shows in the drift listing. The same scopes in another order, or an
    answer without scope, change nothing."""
    connection_id = await _connect_as(google, "u-widened", None)
    assert await _listed(google, cpb.SCOPE_DRIFT_ANY) == set()

    access_token = _answer_next_refresh(
        google.provider, expires_in=3600, scope="openid email drive.readonly"
    )
    refreshed = await _refresh(google, connection_id)
    assert list(refreshed.connection.permissions_granted) == [
        "openid",
        "email",
        "drive.readonly",
    ]
    (event,) = await _events(owner_dsn, google.org, "connection.scopes_changed")
    assert event["before"] == GOOGLE_SCOPES
    assert event["after"] == ["openid", "email", "drive.readonly"]
    assert event["added"] == ["drive.readonly"]
    assert event["removed"] == []
    assert access_token not in json.dumps(event)
    assert await _listed(google, cpb.SCOPE_DRIFT_EXTRA) == {connection_id}
    assert await _listed(google, cpb.SCOPE_DRIFT_MISSING) == set()

    # Same set, other order; then no scope at all: no change, no event.
    _answer_next_refresh(google.provider, expires_in=3600, scope="drive.readonly email openid")
    await _refresh(google, connection_id)
    _answer_next_refresh(google.provider, expires_in=3600)
    await _refresh(google, connection_id)
    assert len(await _events(owner_dsn, google.org, "connection.scopes_changed")) == 1

    # Narrowed below what was requested: MISSING now, and audited again.
    _answer_next_refresh(google.provider, expires_in=3600, scope="openid")
    narrowed = await _refresh(google, connection_id)
    assert list(narrowed.connection.permissions_granted) == ["openid"]
    events = await _events(owner_dsn, google.org, "connection.scopes_changed")
    assert len(events) == 2
    assert {"before": ["openid", "email", "drive.readonly"], "after": ["openid"]}.items() <= (
        next(e for e in events if e["after"] == ["openid"]).items()
    )
    assert await _listed(google, cpb.SCOPE_DRIFT_MISSING) == {connection_id}
    assert await _listed(google, cpb.SCOPE_DRIFT_EXTRA) == set()
