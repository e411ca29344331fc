"""The provider side of the connect flow: state, PKCE, authorization URLs and the code exchange.

URL building is pure and tested as such; the code exchange and the authorization
endpoint are tested against tests/support/oauth_provider.py over real sockets, with httpx
acting as the user's browser (redirects not followed: the Location is the callback).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Mapping
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from singura_vault.domain.connections import Platform
from singura_vault.providers import (
    CATALOGUE,
    STATE_BYTES,
    ClientAuthMethod,
    CodeGrant,
    EgressSettings,
    ExtraParamNotAllowed,
    FailureKind,
    OAuthClientConfig,
    Pkce,
    RefreshFailed,
    TokenEndpointClient,
    UnsafeEndpoint,
    authorization_url,
    check_extra_params,
    new_pkce,
    new_state,
    platform_uses_pkce,
)
from singura_vault.providers.authorization import pkce_challenge
from tests.support import canaries
from tests.support.oauth_provider import FakeOAuthProvider

BASIC = ClientAuthMethod.CLIENT_SECRET_BASIC
POST = ClientAuthMethod.CLIENT_SECRET_POST
REDIRECT = "https://app.example/callback"
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpointClient]:
    client = TokenEndpointClient(EgressSettings())
    yield client
    await client.aclose()


def catalogued(platform: Platform, **overrides: object) -> OAuthClientConfig:
    fields: dict[str, object] = {
        "platform": platform,
        "client_id": "client-1",
        "client_secret": "not-used-here",
        "token_url": "",
        "revocation_url": "",
        "scopes": (),
        "auth_method": BASIC,
        "redirect_uris": (REDIRECT,),
    }
    fields.update(overrides)
    return OAuthClientConfig(**fields)  # type: ignore[arg-type]


def build(
    client: OAuthClientConfig,
    *,
    scopes: tuple[str, ...] = (),
    pkce: Pkce | None = None,
    login_hint: str = "",
    extra_params: Mapping[str, str] | None = None,
    workspace_id: str = "",
    redirect_uri: str = REDIRECT,
    state: str = "the-state",
) -> tuple[str, dict[str, str]]:
    """The URL without its query, and the query as a dict (each key once)."""
    url = authorization_url(
        client,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        pkce=pkce,
        login_hint=login_hint,
        extra_params=extra_params or {},
        workspace_id=workspace_id,
        allow_loopback_http=True,
    )
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    assert len(query) == len(pairs), "a parameter appeared twice"
    return f"{parts.scheme}://{parts.netloc}{parts.path}", query


# --------------------------------------------------------------- state and PKCE


def test_a_state_is_256_bits_of_base64url_and_never_repeats() -> None:
    """A new state is 32 random bytes as 43 base64url characters, and 200 of them never repeat."""
    states = {new_state() for _ in range(200)}
    assert len(states) == 200
    for state in states:
        assert len(state) == 43
        assert _B64URL.fullmatch(state)
        padded = state + "=" * (-len(state) % 4)
        assert len(base64.urlsafe_b64decode(padded)) == STATE_BYTES == 32


def test_the_pkce_challenge_matches_rfc_7636_appendix_b() -> None:
    """The S256 challenge of RFC 7636 appendix B's verifier is the RFC's challenge."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_a_new_pkce_pair_is_s256_and_its_repr_hides_the_verifier() -> None:
    """A new PKCE pair has a unique, well-formed verifier, its S256 challenge, and a repr and str
    that show the challenge but never the verifier."""
    pairs = [new_pkce() for _ in range(50)]
    assert len({pair.verifier for pair in pairs}) == 50
    for pair in pairs:
        assert 43 <= len(pair.verifier) <= 128
        assert re.fullmatch(r"[A-Za-z0-9._~-]+", pair.verifier)
        assert pair.challenge == pkce_challenge(pair.verifier)
        assert pair.method == "S256"
        assert pair.verifier not in repr(pair)
        assert pair.verifier not in str(pair)
        assert pair.challenge in repr(pair)


def test_pkce_is_used_where_the_catalogue_says_the_provider_takes_it() -> None:
    """PKCE is used for exactly the platforms whose providers take it."""
    takes = {platform for platform in Platform if platform_uses_pkce(platform)}
    assert takes == {
        Platform.GOOGLE_WORKSPACE,
        Platform.MICROSOFT_365,
        Platform.GITHUB,
        Platform.SALESFORCE,
        Platform.ZOOM,
        Platform.DROPBOX,
    }


# ----------------------------------------------------------- authorization URLs


def test_every_catalogued_platform_has_a_safe_authorization_url() -> None:
    """Every catalogued platform's authorization URL is its provider's https endpoint, with the
    client, redirect, state, scopes and (where taken) PKCE in the query."""
    expected = {
        Platform.SLACK: "https://slack.com/oauth/v2/authorize",
        Platform.GOOGLE_WORKSPACE: "https://accounts.google.com/o/oauth2/v2/auth",
        Platform.MICROSOFT_365: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        Platform.GITHUB: "https://github.com/login/oauth/authorize",
        Platform.SALESFORCE: "https://login.salesforce.com/services/oauth2/authorize",
        Platform.ATLASSIAN: "https://auth.atlassian.com/authorize",
        Platform.ZOOM: "https://zoom.us/oauth/authorize",
        Platform.DROPBOX: "https://www.dropbox.com/oauth2/authorize",
    }
    assert set(expected) == set(CATALOGUE)
    for platform, base in expected.items():
        pkce = new_pkce() if platform_uses_pkce(platform) else None
        url, query = build(catalogued(platform), scopes=("a", "b"), pkce=pkce)
        assert url == base
        assert query["response_type"] == "code"
        assert query["client_id"] == "client-1"
        assert query["redirect_uri"] == REDIRECT
        assert query["state"] == "the-state"
        assert query["scope"] == ("a,b" if platform is Platform.SLACK else "a b")
        if pkce is not None:
            assert query["code_challenge"] == pkce.challenge
            assert query["code_challenge_method"] == "S256"
            assert pkce.verifier not in url


def test_the_platforms_fixed_parameters_are_sent() -> None:
    """Each platform's fixed parameters (Google offline access, Atlassian audience and prompt,
    Dropbox offline tokens) are sent, and no scope or challenge where none applies."""
    _, google = build(catalogued(Platform.GOOGLE_WORKSPACE))
    assert google["access_type"] == "offline"
    _, atlassian = build(catalogued(Platform.ATLASSIAN))
    assert (atlassian["audience"], atlassian["prompt"]) == ("api.atlassian.com", "consent")
    _, dropbox = build(catalogued(Platform.DROPBOX))
    assert dropbox["token_access_type"] == "offline"
    _, slack = build(catalogued(Platform.SLACK))
    assert "scope" not in slack  # no scopes asked: none sent
    assert "code_challenge" not in slack


def test_allowed_extra_params_are_added_and_may_override_a_fixed_one() -> None:
    """Extra parameters the platform allows are added to the authorization URL and may override a
    fixed one."""
    _, google = build(
        catalogued(Platform.GOOGLE_WORKSPACE),
        extra_params={"prompt": "consent", "hd": "example.com", "access_type": "online"},
    )
    assert (google["prompt"], google["hd"], google["access_type"]) == (
        "consent",
        "example.com",
        "online",
    )
    _, slack = build(
        catalogued(Platform.SLACK), scopes=("chat:write",), extra_params={"user_scope": "a,b"}
    )
    assert (slack["scope"], slack["user_scope"]) == ("chat:write", "a,b")
    _, microsoft = build(
        catalogued(Platform.MICROSOFT_365), extra_params={"domain_hint": "contoso.com"}
    )
    assert microsoft["domain_hint"] == "contoso.com"


@pytest.mark.parametrize(
    ("platform", "key"),
    [
        (Platform.GOOGLE_WORKSPACE, "redirect_uri"),
        (Platform.GOOGLE_WORKSPACE, "code_challenge"),
        (Platform.SLACK, "access_type"),
        (Platform.MICROSOFT_365, "state"),
        (Platform.GITHUB, "prompt"),
        (Platform.ATLASSIAN, "audience"),
    ],
)
def test_an_extra_param_the_platform_does_not_take_is_refused_by_name(
    platform: Platform, key: str
) -> None:
    """An extra parameter the platform does not take is refused naming the key and the allowed ones,
    never its value."""
    with pytest.raises(ExtraParamNotAllowed) as caught:
        check_extra_params(platform, {key: "canary-value"})
    assert caught.value.key == key
    assert key in str(caught.value)
    assert "canary-value" not in str(caught.value)
    assert caught.value.allowed == tuple(sorted(CATALOGUE[platform].allowed_extra_params))
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ExtraParamNotAllowed):
        build(catalogued(platform), extra_params={key: "x"})


def test_the_login_hint_goes_under_the_platforms_name_or_not_at_all() -> None:
    """The login hint is sent under the platform's own parameter name, or not at all where the
    platform has none."""
    _, google = build(catalogued(Platform.GOOGLE_WORKSPACE), login_hint="ada@example.com")
    assert google["login_hint"] == "ada@example.com"
    _, github = build(catalogued(Platform.GITHUB), login_hint="octocat")
    assert github["login"] == "octocat"
    assert "login_hint" not in github
    _, slack = build(catalogued(Platform.SLACK), login_hint="ada@example.com")
    assert "ada@example.com" not in slack.values()


def test_microsofts_tenant_is_filled_and_a_configured_url_wins() -> None:
    """Microsoft's tenant is filled into its authorization URL, and a configured URL replaces the
    catalogue's, keeping its own query."""
    url, _ = build(catalogued(Platform.MICROSOFT_365), workspace_id="contoso.onmicrosoft.com")
    assert url == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    )
    sandbox = catalogued(
        Platform.SALESFORCE,
        authorization_url="https://test.salesforce.com/services/oauth2/authorize?x=1",
    )
    url, query = build(sandbox)
    assert url == "https://test.salesforce.com/services/oauth2/authorize"
    assert query["x"] == "1"
    assert query["client_id"] == "client-1"


def test_an_unsafe_configured_authorization_url_is_refused() -> None:
    """A configured authorization URL that is plain http, carries credentials, has another scheme,
    or is loopback http in production is refused."""
    for bad in ("http://auth.example/authorize", "https://u:p@auth.example/a", "ftp://x/"):
        with pytest.raises(UnsafeEndpoint):
            build(catalogued(Platform.ZOOM, authorization_url=bad))
    loopback = catalogued(Platform.ZOOM, authorization_url="http://127.0.0.1:1/authorize")
    with pytest.raises(UnsafeEndpoint):
        authorization_url(
            loopback,
            redirect_uri=REDIRECT,
            scopes=(),
            state="s",
            pkce=None,
            login_hint="",
            extra_params={},
            allow_loopback_http=False,
        )


# ------------------------------------------- the loopback provider, as a browser


def registered(
    provider: FakeOAuthProvider,
    platform: Platform = Platform.ZOOM,
    *,
    authorize_url: str | None = None,
    token_url: str | None = None,
    auth_method: ClientAuthMethod = BASIC,
) -> OAuthClientConfig:
    """A client registered at the provider with REDIRECT, on the endpoints that speak
    its platform's dialect unless told otherwise."""
    dialects = {
        Platform.SLACK: (provider.slack_authorization_url, provider.slack_token_url),
        Platform.GITHUB: (provider.github_authorization_url, provider.github_token_url),
        Platform.MICROSOFT_365: (
            provider.microsoft_authorization_url,
            provider.microsoft_token_url,
        ),
        Platform.GOOGLE_WORKSPACE: (provider.google_authorization_url, provider.google_token_url),
    }
    default = dialects.get(platform, (provider.authorization_url, provider.token_url))
    authorize_url = default[0] if authorize_url is None else authorize_url
    token_url = default[1] if token_url is None else token_url
    client_id = f"client-{len(canaries.issued())}"
    secret = canaries.canary("client-secret")
    provider.register_client(client_id, secret)
    provider.register_redirect_uri(client_id, REDIRECT)
    return OAuthClientConfig(
        platform=platform,
        client_id=client_id,
        client_secret=secret,
        token_url=token_url,
        revocation_url="",
        scopes=(),
        auth_method=auth_method,
        authorization_url=authorize_url,
        redirect_uris=(REDIRECT,),
    )


async def follow(url: str) -> tuple[int, dict[str, str]]:
    """GET the authorization URL as a browser would, without following the redirect:
    the status and the callback's query parameters."""
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as browser:
        answer = await browser.get(url)
    location = answer.headers.get("location", "")
    if answer.status_code == 302:
        assert location.startswith(REDIRECT + "?")
    return answer.status_code, dict(parse_qsl(urlsplit(location).query))


async def authorize(
    client: OAuthClientConfig,
    *,
    scopes: tuple[str, ...] = ("read", "write"),
    extra_params: Mapping[str, str] | None = None,
) -> tuple[str, Pkce | None]:
    """Run the authorization step; returns the code and the PKCE pair used."""
    state = new_state()
    pkce = new_pkce() if platform_uses_pkce(client.platform) else None
    status, back = await follow(
        authorization_url(
            client,
            redirect_uri=REDIRECT,
            scopes=scopes,
            state=state,
            pkce=pkce,
            login_hint="",
            extra_params=extra_params or {},
            allow_loopback_http=True,
        )
    )
    assert status == 302
    assert back["state"] == state
    return back["code"], pkce


async def redeem(
    endpoint: TokenEndpointClient, client: OAuthClientConfig, code: str, pkce: Pkce | None
) -> CodeGrant:
    """Exchange the code as the vault will: the same redirect URI, the pair's verifier."""
    verifier = None if pkce is None else pkce.verifier
    return await endpoint.exchange_code(
        client, code=code, redirect_uri=REDIRECT, code_verifier=verifier
    )


async def test_the_authorize_endpoint_redirects_with_a_code_and_the_same_state(
    provider: FakeOAuthProvider,
) -> None:
    """The provider's authorize endpoint redirects to the registered URI with a code and the state
    it was given."""
    client = registered(provider, Platform.GITHUB)
    pkce = new_pkce()
    state = new_state()
    url = authorization_url(
        client,
        redirect_uri=REDIRECT,
        scopes=("repo",),
        state=state,
        pkce=pkce,
        login_hint="octocat",
        extra_params={},
        allow_loopback_http=True,
    )
    status, back = await follow(url)
    assert status == 302
    assert back["state"] == state
    assert back["code"].startswith("canary-code-")
    seen = provider.last_authorization
    assert seen is not None
    assert seen["code_challenge"] == pkce.challenge
    assert seen["code_challenge_method"] == "S256"
    assert seen["login"] == "octocat"
    assert provider.outstanding_codes == 1


async def test_a_denied_authorization_redirects_with_the_error_and_the_state(
    provider: FakeOAuthProvider,
) -> None:
    """A denied authorization redirects with access_denied and the state, issues no code, and only
    that one attempt is denied."""
    client = registered(provider)
    provider.deny_next_authorization()
    state = new_state()
    status, back = await follow(build_url(client, state=state, pkce=new_pkce()))
    assert status == 302
    assert back == {"error": "access_denied", "state": state}
    assert provider.outstanding_codes == 0
    # Only the next one: the user may try again and consent.
    status, back = await follow(build_url(client, state=state, pkce=new_pkce()))
    assert back["code"].startswith("canary-code-")


async def test_the_authorize_endpoint_refuses_an_unregistered_redirect_without_redirecting(
    provider: FakeOAuthProvider,
) -> None:
    """An unregistered redirect URI or an unknown client gets a 400 from the authorize endpoint,
    never a redirect."""
    client = registered(provider)
    for redirect_uri in (REDIRECT + "/", REDIRECT + "?x=1", "https://evil.example/callback"):
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as browser:
            answer = await browser.get(build_url(client, redirect_uri=redirect_uri))
        assert answer.status_code == 400
        assert "location" not in answer.headers
    unknown = catalogued(Platform.ZOOM, authorization_url=provider.authorization_url)
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as browser:
        answer = await browser.get(build_url(unknown))
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_client"


def build_url(
    client: OAuthClientConfig,
    *,
    redirect_uri: str = REDIRECT,
    state: str = "s",
    pkce: Pkce | None = None,
) -> str:
    return authorization_url(
        client,
        redirect_uri=redirect_uri,
        scopes=(),
        state=state,
        pkce=pkce,
        login_hint="",
        extra_params={},
        allow_loopback_http=True,
    )


# ------------------------------------------------------------ the code exchange


async def test_a_standard_code_exchange_returns_the_tokens_and_granted_scopes(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A standard code exchange returns valid access and refresh tokens, their lifetime and the
    granted scopes."""
    client = registered(provider)
    code, pkce = await authorize(client, scopes=("meeting:read", "user:read"))
    assert pkce is not None

    grant = await redeem(endpoint, client, code, pkce)

    assert provider.is_access_token_valid(grant.access_token)
    assert grant.refresh_token is not None
    assert provider.is_refresh_token_valid(grant.refresh_token)
    assert grant.expires_in == 3600
    assert grant.scopes == ("meeting:read", "user:read")
    assert grant.user_scopes is None
    assert (grant.workspace_id, grant.user_id) == (None, None)
    sent = provider.last_token_request
    assert sent is not None
    assert sent.params["grant_type"] == "authorization_code"
    assert sent.params["redirect_uri"] == REDIRECT
    assert sent.client_auth == "basic"
    assert {"code", "code_verifier"} <= set(sent.form_keys)
    # The refresh token it issued works with the existing refresh path.
    refreshed = await endpoint.refresh(client, grant.refresh_token)
    assert provider.is_access_token_valid(refreshed.access_token)


async def test_a_slack_code_exchange_reads_team_authed_user_and_both_scope_lists(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A Slack code exchange (no PKCE) reads the team, the authed user and both the bot and user
    scope lists."""
    client = registered(provider, Platform.SLACK, auth_method=POST)
    provider.set_identity(workspace_id="T0123", user_id="U0456")
    code, pkce = await authorize(
        client, scopes=("chat:write", "channels:read"), extra_params={"user_scope": "search:read"}
    )
    assert pkce is None  # Slack: no PKCE
    assert "code_challenge" not in (provider.last_authorization or {})

    grant = await endpoint.exchange_code(
        client, code=code, redirect_uri=REDIRECT, code_verifier=None
    )

    assert grant.scopes == ("chat:write", "channels:read")
    assert grant.user_scopes == ("search:read",)
    assert (grant.workspace_id, grant.user_id) == ("T0123", "U0456")
    assert grant.refresh_token is not None
    assert provider.last_token_request is not None
    assert "code_verifier" not in provider.last_token_request.form_keys


@pytest.mark.parametrize(
    ("platform", "workspace", "user"),
    [
        (Platform.MICROSOFT_365, "72f988bf-86f1-41af-91ab-2d7cd011db47", "oid-1"),
        (Platform.GOOGLE_WORKSPACE, "example.com", "110169484474386276334"),
    ],
)
async def test_an_id_token_gives_the_identity_of_microsoft_and_google_grants(
    provider: FakeOAuthProvider,
    endpoint: TokenEndpointClient,
    platform: Platform,
    workspace: str,
    user: str,
) -> None:
    """For Microsoft and Google grants, the workspace and user come from the id token's claims."""
    client = registered(provider, platform)
    provider.set_identity(workspace_id=workspace, user_id=user)
    code, pkce = await authorize(client, scopes=("openid", "offline_access"))
    assert pkce is not None

    grant = await redeem(endpoint, client, code, pkce)

    assert (grant.workspace_id, grant.user_id) == (workspace, user)
    assert grant.scopes == ("openid", "offline_access")


async def test_a_consumer_google_account_has_no_workspace(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A consumer Google account's grant has a user but no workspace."""
    client = registered(provider, Platform.GOOGLE_WORKSPACE)
    provider.set_identity(workspace_id=None, user_id="1234")
    code, pkce = await authorize(client)
    assert pkce is not None
    grant = await redeem(endpoint, client, code, pkce)
    assert (grant.workspace_id, grant.user_id) == (None, "1234")


async def test_a_missing_expires_in_becomes_the_catalogues_lifetime(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """An answer without expires_in takes the platform's catalogued lifetime (none for Dropbox)."""
    provider.shape_code_grants(expires_in=None, issue_refresh_token=False)
    for platform, expected in ((Platform.SALESFORCE, 7200), (Platform.DROPBOX, None)):
        client = registered(provider, platform)
        code, pkce = await authorize(client)
        grant = await redeem(endpoint, client, code, pkce)
        assert grant.expires_in == expected
        assert grant.refresh_token is None


async def test_slack_user_token_only_answer_is_read_from_authed_user(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A Slack answer with only a user token is read from authed_user: its token, scopes, lifetime
    and identity."""
    client = registered(provider, Platform.SLACK)
    user_token = canaries.canary("at")
    answer = {
        "ok": True,
        "team": {"id": "T9"},
        "authed_user": {
            "id": "U9",
            "scope": "search:read,users:read",
            "access_token": user_token,
            "token_type": "user",
            "expires_in": 43200,
        },
    }
    provider.answer_next_raw(200, json.dumps(answer).encode())
    grant = await endpoint.exchange_code(
        client, code="any", redirect_uri=REDIRECT, code_verifier=None
    )
    assert grant.access_token == user_token
    assert grant.expires_in == 43200
    assert grant.scopes is None
    assert grant.user_scopes == ("search:read", "users:read")
    assert (grant.workspace_id, grant.user_id) == ("T9", "U9")


async def test_a_malformed_id_token_leaves_the_identity_unknown(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A malformed id token (not a JWT, bad base64, wrong claim types, not a string) leaves the
    identity unknown instead of failing."""
    client = registered(provider, Platform.MICROSOFT_365)
    for id_token in ("not-a-jwt", "a.%%%.c", "a." + _b64({"tid": 5, "oid": ["x"]}) + ".c", 42):
        answer = {"access_token": canaries.canary("at"), "id_token": id_token}
        provider.answer_next_raw(200, json.dumps(answer).encode())
        grant = await endpoint.exchange_code(
            client, code="any", redirect_uri=REDIRECT, code_verifier=None
        )
        assert (grant.workspace_id, grant.user_id) == (None, None)


def _b64(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


async def exchange_fails(
    endpoint: TokenEndpointClient,
    client: OAuthClientConfig,
    *,
    code: str,
    redirect_uri: str = REDIRECT,
    code_verifier: str | None,
) -> RefreshFailed:
    with pytest.raises(RefreshFailed) as caught:
        await endpoint.exchange_code(
            client, code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
        )
    return caught.value


async def test_a_replayed_code_is_invalid_grant(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A replayed authorization code is invalid_grant, with a reason about the code that says to
    start again."""
    client = registered(provider)
    code, pkce = await authorize(client)
    assert pkce is not None
    await redeem(endpoint, client, code, pkce)

    replayed = await exchange_fails(endpoint, client, code=code, code_verifier=pkce.verifier)

    assert replayed.kind is FailureKind.INVALID_GRANT
    assert replayed.oauth_error == "invalid_grant"
    assert "authorization code" in replayed.reason
    assert "start the authorization again" in replayed.reason
    assert "refresh token" not in replayed.reason


async def test_a_wrong_or_missing_verifier_is_invalid_grant(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """An exchange with another PKCE verifier, or none, is invalid_grant."""
    client = registered(provider)
    for verifier in (new_pkce().verifier, None):
        code, _ = await authorize(client)
        failed = await exchange_fails(endpoint, client, code=code, code_verifier=verifier)
        assert failed.kind is FailureKind.INVALID_GRANT


async def test_a_different_redirect_uri_is_invalid_grant(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """An exchange with a redirect URI other than the authorization's is invalid_grant."""
    client = registered(provider)
    code, pkce = await authorize(client)
    assert pkce is not None
    failed = await exchange_fails(
        endpoint,
        client,
        code=code,
        redirect_uri=REDIRECT + "/other",
        code_verifier=pkce.verifier,
    )
    assert failed.kind is FailureKind.INVALID_GRANT


async def test_a_code_for_another_client_is_invalid_grant(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """A code issued to one client, redeemed by another, is invalid_grant."""
    owner = registered(provider)
    thief = registered(provider)
    code, pkce = await authorize(owner)
    assert pkce is not None
    failed = await exchange_fails(endpoint, thief, code=code, code_verifier=pkce.verifier)
    assert failed.kind is FailureKind.INVALID_GRANT


async def test_no_failure_or_grant_shows_a_code_verifier_or_token(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """No exchange failure or grant shows the code, verifier, client secret or tokens, even when the
    provider echoes them."""
    client = registered(provider, auth_method=POST)
    code, pkce = await authorize(client)
    assert pkce is not None
    grant = await redeem(endpoint, client, code, pkce)
    # The provider echoes the presented code and the client secret in its error text.
    replayed = await exchange_fails(endpoint, client, code=code, code_verifier=pkce.verifier)
    wrong_client = await exchange_fails(
        endpoint,
        OAuthClientConfig(
            client.platform,
            client.client_id,
            canaries.canary("client-secret"),
            client.token_url,
            "",
            (),
            POST,
        ),
        code=canaries.canary("code"),
        code_verifier=pkce.verifier,
    )
    assert wrong_client.kind is FailureKind.INVALID_CLIENT
    secrets = (code, pkce.verifier, grant.access_token, grant.refresh_token, client.client_secret)
    shown = [repr(grant), str(grant), repr(pkce)]
    for failure in (replayed, wrong_client):
        shown += [str(failure), repr(failure), failure.reason, failure.oauth_error]
    for text in shown:
        for secret in secrets:
            assert secret is not None
            assert secret not in text
    assert isinstance(grant, CodeGrant)


async def test_an_unsafe_token_url_is_refused_before_the_code_is_sent(
    provider: FakeOAuthProvider, endpoint: TokenEndpointClient
) -> None:
    """An unsafe token URL is refused before the authorization code is sent anywhere."""
    client = catalogued(Platform.ZOOM, token_url="http://auth.example/token")
    with pytest.raises(UnsafeEndpoint):
        await endpoint.exchange_code(client, code="c", redirect_uri=REDIRECT, code_verifier=None)
    assert provider.token_calls == 0


def test_the_fake_providers_id_token_is_a_jwt_with_the_claims() -> None:
    """The id_token helper the fake uses is a three-part JWT whose payload parses."""
    from tests.support.oauth_provider import Identity, _id_token

    token = _id_token("microsoft", "cid", Identity("tenant", "object"))
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert (claims["tid"], claims["oid"], claims["aud"]) == ("tenant", "object", "cid")
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"] == "HS256"
    assert _B64URL.fullmatch(signature)
