"""What the vault knows about each SaaS platform's OAuth 2.0 authorization, token and
revocation endpoints.

Pure data plus URL resolution: no I/O. An operator's OAuth client configuration may
override any of the URLs (a sandbox, a regional host, a test server) but never the
platform's *dialect* -- how the endpoint wants to be spoken to and how it answers --
because the dialect belongs to the provider's software, not to where it is hosted.

Sources, checked when this table was written: the providers' developer documentation
for Slack (oauth/v2/authorize, oauth.v2.access, auth.revoke, token rotation; the PKCE
changelog of 2026-03-30), Google (OAuth 2.0 for web server apps: access_type, prompt,
hd, include_granted_scopes, login_hint; OpenID Connect id_token claims), Microsoft
identity platform v2.0 (authorization code flow: login_hint, domain_hint, prompt, PKCE;
id_token claims tid and oid), GitHub (authorizing OAuth apps: the ``login`` parameter;
the PKCE changelog of 2025-07-14; refreshing user access tokens; "Delete an app
authorization"), Salesforce (web server flow with code_challenge and login_hint;
refresh token flow; revoke), Atlassian (implementing OAuth 2.0 3LO: audience and
prompt=consent), Zoom (OAuth with PKCE; refresh and revoke) and Dropbox (OAuth guide:
token_access_type=offline, code_challenge; auth/token/revoke). Entries whose details
are less certain say so in a comment.
"""

# The "hardcoded password" checks mistake endpoint URLs and enum spellings here for
# secrets; this module holds no secret at all.
# ruff: noqa: S105, S106

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import quote

from singura_vault.domain.connections import Platform
from singura_vault.domain.oauth import ClientAuthMethod

TENANT_PLACEHOLDER = "{tenant}"
CLIENT_ID_PLACEHOLDER = "{client_id}"
# Microsoft's multi-tenant authority, used when a connection names no tenant.
DEFAULT_TENANT = "common"


class ResponseDialect(enum.Enum):
    """How a token endpoint reports an error."""

    # RFC 6749 §5.2: a 4xx status with a JSON ``error`` code.
    STANDARD = "standard"
    # Slack's Web API: HTTP 200 with ``"ok": false`` and an ``error`` code.
    SLACK = "slack"
    # GitHub: HTTP 200 with an ``error`` code (and form encoding unless JSON is asked for).
    GITHUB = "github"


class RequestEncoding(enum.Enum):
    """How the token request's parameters travel."""

    FORM = "form"  # application/x-www-form-urlencoded, as RFC 6749 specifies
    JSON = "json"  # Atlassian documents a JSON body for its token endpoint


class ScopeOnRefresh(enum.Enum):
    """Whether a refresh request carries ``scope``."""

    # Never sent: the provider keeps the granted scopes, and some reject the parameter.
    OMIT = "omit"
    # Sent when the client configuration lists scopes (down-scoping is allowed).
    IF_CONFIGURED = "if_configured"
    # Always sent: the provider requires it (Microsoft); the entry's default_scopes
    # stand in when the configuration lists none.
    REQUIRED = "required"


class RevocationStyle(enum.Enum):
    """How a revocation call is made; only meaningful when there is a revocation URL."""

    # RFC 7009: POST form ``token`` + ``token_type_hint``, with client authentication.
    RFC7009 = "rfc7009"
    # RFC 7009 form, without client authentication: the provider takes the token alone,
    # and sending the client secret where it is not needed only widens its exposure.
    RFC7009_TOKEN_ONLY = "rfc7009_token_only"
    # Slack auth.revoke: POST form ``token``; answers 200 with ``ok``.
    SLACK = "slack"
    # Dropbox auth/token/revoke: POST, no body, the access token as a Bearer credential.
    DROPBOX = "dropbox"
    # GitHub "Delete an app authorization": DELETE with Basic client credentials and a
    # JSON body naming the access token; 204 on success. Revokes the whole grant.
    GITHUB_GRANT = "github_grant"


@dataclass(frozen=True)
class OAuthClientConfig:
    """One OAuth client (app registration) the vault refreshes tokens with."""

    platform: Platform
    client_id: str
    client_secret: str = field(repr=False)
    # "" means: the catalogue's URL for the platform.
    token_url: str
    # "" means: the catalogue's URL (which may be none for the platform).
    revocation_url: str
    scopes: tuple[str, ...]
    auth_method: ClientAuthMethod
    # "" means: the catalogue's authorization endpoint for the platform.
    authorization_url: str = ""
    # The redirect URIs registered for the connect flow; a redirect_uri must equal one.
    redirect_uris: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlatformEndpoints:
    """One catalogue entry: a platform's endpoints and the quirks of speaking to them."""

    platform: Platform
    # May contain "{tenant}" (Microsoft), filled from the connection's workspace id.
    token_url: str
    # None: the platform has no revocation call. May contain "{client_id}" (GitHub).
    revocation_url: str | None
    # Where the user's browser is sent to consent (RFC 6749 §4.1.1). May contain
    # "{tenant}" (Microsoft), filled like token_url.
    authorization_url: str
    dialect: ResponseDialect = ResponseDialect.STANDARD
    request_encoding: RequestEncoding = RequestEncoding.FORM
    scope_on_refresh: ScopeOnRefresh = ScopeOnRefresh.OMIT
    # Joins scopes in a request; Slack's lists are comma-separated.
    scope_separator: str = " "
    # Sent when scope_on_refresh is REQUIRED and the client configuration lists none.
    default_scopes: tuple[str, ...] = ()
    revocation_style: RevocationStyle = RevocationStyle.RFC7009
    # For callers: the access-token lifetime to assume when a refresh answer carries no
    # expires_in (Salesforce never sends one; its lifetime is the org's session timeout).
    default_expires_in_s: int | None = None
    # Documentation only: whether a refresh returns a new refresh token and retires the
    # old one. Code never relies on it: a new refresh token in the answer always wins.
    rotates_refresh_tokens: bool = False
    # Whether the revocation call revokes only the token presented. Elsewhere it ends the
    # whole grant (Google, GitHub, and likely Zoom and Dropbox for the same user and
    # client), which after a reconnect is the grant the new tokens belong to: there the
    # old refresh token is left to expire rather than revoked.
    revokes_only_the_token: bool = False
    # Whether the provider takes PKCE (RFC 7636, S256) on the authorization-code flow;
    # where it does, the vault always uses it.
    uses_pkce: bool = False
    # The authorization parameters a caller may add (StartAuthorization's extra_params);
    # anything else is refused, so that no caller can override what the vault sets.
    allowed_extra_params: frozenset[str] = frozenset()
    # Always sent on the authorization request (a caller's allowed extra may override).
    fixed_authorization_params: tuple[tuple[str, str], ...] = ()
    # The authorization parameter that pre-fills the account; None: the platform has
    # none, and a login hint is not sent.
    login_hint_param: str | None = None
    # The id_token claims (workspace, user) that identify the grant, for platforms
    # whose code exchange returns an OpenID Connect id_token; None elsewhere.
    id_token_claims: tuple[str, str] | None = None


_ENTRIES = (
    PlatformEndpoints(
        platform=Platform.SLACK,
        revokes_only_the_token=True,
        token_url="https://slack.com/api/oauth.v2.access",
        revocation_url="https://slack.com/api/auth.revoke",
        authorization_url="https://slack.com/oauth/v2/authorize",
        dialect=ResponseDialect.SLACK,
        scope_separator=",",
        revocation_style=RevocationStyle.SLACK,
        # Only apps with token rotation enabled get refresh tokens; each refresh
        # retires the previous one.
        rotates_refresh_tokens=True,
        # PKCE is an app setting that marks the app a public client, one way (Slack's
        # changelog, 2026-03-30); the vault is a confidential client and does not use it.
        uses_pkce=False,
        # User-token scopes travel apart from the bot's ``scope`` (comma-separated too).
        # Slack's authorize URL has no login hint.
        allowed_extra_params=frozenset({"user_scope"}),
    ),
    PlatformEndpoints(
        platform=Platform.GOOGLE_WORKSPACE,
        token_url="https://oauth2.googleapis.com/token",
        revocation_url="https://oauth2.googleapis.com/revoke",
        authorization_url="https://accounts.google.com/o/oauth2/v2/auth",
        # Google's revoke endpoint takes the token alone; it answers 400 invalid_token
        # for a token that is already invalid (not RFC 7009's 200).
        revocation_style=RevocationStyle.RFC7009_TOKEN_ONLY,
        rotates_refresh_tokens=False,
        uses_pkce=True,
        allowed_extra_params=frozenset({"access_type", "prompt", "hd", "include_granted_scopes"}),
        # Without access_type=offline Google issues no refresh token.
        fixed_authorization_params=(("access_type", "offline"),),
        login_hint_param="login_hint",
        # ``hd`` is present only for Google Workspace accounts (a hosted domain).
        id_token_claims=("hd", "sub"),
    ),
    PlatformEndpoints(
        platform=Platform.MICROSOFT_365,
        token_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        authorization_url="https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        # The identity platform has no token revocation endpoint (sessions are revoked
        # through Graph's revokeSignInSessions, which needs a different permission).
        # A configured revocation_url is spoken to as RFC 7009.
        revocation_url=None,
        scope_on_refresh=ScopeOnRefresh.REQUIRED,
        default_scopes=("https://graph.microsoft.com/.default", "offline_access"),
        rotates_refresh_tokens=True,
        uses_pkce=True,
        allowed_extra_params=frozenset({"domain_hint", "prompt"}),
        login_hint_param="login_hint",
        # Present when ``openid`` is among the requested scopes.
        id_token_claims=("tid", "oid"),
    ),
    PlatformEndpoints(
        platform=Platform.GITHUB,
        token_url="https://github.com/login/oauth/access_token",
        authorization_url="https://github.com/login/oauth/authorize",
        revocation_url="https://api.github.com/applications/{client_id}/grant",
        dialect=ResponseDialect.GITHUB,
        revocation_style=RevocationStyle.GITHUB_GRANT,
        # GitHub App user tokens that expire come with single-use refresh tokens.
        rotates_refresh_tokens=True,
        # S256 only (GitHub changelog, 2025-07-14).
        uses_pkce=True,
        # GitHub calls it ``login``: suggests the account to sign in with.
        login_hint_param="login",
    ),
    PlatformEndpoints(
        platform=Platform.SALESFORCE,
        revokes_only_the_token=True,
        # Production and developer orgs; sandboxes use test.salesforce.com and My Domain
        # orgs may use their own host: configure authorization_url/token_url/
        # revocation_url for those.
        token_url="https://login.salesforce.com/services/oauth2/token",
        authorization_url="https://login.salesforce.com/services/oauth2/authorize",
        revocation_url="https://login.salesforce.com/services/oauth2/revoke",
        revocation_style=RevocationStyle.RFC7009_TOKEN_ONLY,
        # The default session timeout (2 hours); an org may configure a different one.
        default_expires_in_s=7200,
        # Rotation is an opt-in setting of the connected app.
        rotates_refresh_tokens=False,
        uses_pkce=True,
        login_hint_param="login_hint",
    ),
    PlatformEndpoints(
        platform=Platform.ATLASSIAN,
        token_url="https://auth.atlassian.com/oauth/token",
        authorization_url="https://auth.atlassian.com/authorize",
        # Uncertain: Atlassian documents no public endpoint that revokes a 3LO token;
        # access is withdrawn by the user (connected apps page) or an admin. Marked as
        # none, so revocation reports NOT_SUPPORTED unless a revocation_url is
        # configured (then spoken to as RFC 7009).
        revocation_url=None,
        request_encoding=RequestEncoding.JSON,
        rotates_refresh_tokens=True,
        # Uncertain: Atlassian's 3LO documentation does not mention PKCE, so it is not
        # sent. It documents no login hint either.
        uses_pkce=False,
        fixed_authorization_params=(("audience", "api.atlassian.com"), ("prompt", "consent")),
    ),
    PlatformEndpoints(
        platform=Platform.ZOOM,
        token_url="https://zoom.us/oauth/token",
        authorization_url="https://zoom.us/oauth/authorize",
        # RFC 7009-like: form ``token`` with Basic client credentials; answers
        # {"status": "success"}.
        revocation_url="https://zoom.us/oauth/revoke",
        rotates_refresh_tokens=True,
        # Zoom takes code_challenge with S256 (or plain, which is never used).
        uses_pkce=True,
    ),
    PlatformEndpoints(
        platform=Platform.DROPBOX,
        token_url="https://api.dropboxapi.com/oauth2/token",
        authorization_url="https://www.dropbox.com/oauth2/authorize",
        revocation_url="https://api.dropboxapi.com/2/auth/token/revoke",
        # Dropbox accepts ``scope`` on refresh to narrow the new access token.
        scope_on_refresh=ScopeOnRefresh.IF_CONFIGURED,
        revocation_style=RevocationStyle.DROPBOX,
        # Dropbox refresh tokens are long-lived and not returned again on refresh.
        rotates_refresh_tokens=False,
        uses_pkce=True,
        # Without token_access_type=offline Dropbox issues no refresh token.
        fixed_authorization_params=(("token_access_type", "offline"),),
    ),
)

CATALOGUE: Mapping[Platform, PlatformEndpoints] = MappingProxyType(
    {entry.platform: entry for entry in _ENTRIES}
)


def _fill(template: str, client: OAuthClientConfig, workspace_id: str) -> str:
    """Substitute the placeholders a URL may carry, each URL-quoted as one path segment."""
    tenant = quote(workspace_id, safe="") if workspace_id else DEFAULT_TENANT
    return template.replace(TENANT_PLACEHOLDER, tenant).replace(
        CLIENT_ID_PLACEHOLDER, quote(client.client_id, safe="")
    )


def resolve_token_url(client: OAuthClientConfig, workspace_id: str) -> str:
    """The token endpoint for this client: its configured URL, else the catalogue's.

    "{tenant}" becomes the workspace id (Microsoft's tenant), or "common" when empty.
    """
    return _fill(token_url_template(client.platform, client.token_url), client, workspace_id)


def resolve_revocation_url(client: OAuthClientConfig, workspace_id: str) -> str | None:
    """The revocation endpoint for this client, or None when the platform has none."""
    template = revocation_url_template(client.platform, client.revocation_url)
    if template is None:
        return None
    return _fill(template, client, workspace_id)


def resolve_authorization_url(client: OAuthClientConfig, workspace_id: str) -> str:
    """The authorization endpoint for this client: its configured URL, else the catalogue's.

    "{tenant}" becomes the workspace id (Microsoft's tenant), or "common" when empty.
    """
    template = authorization_url_template(client.platform, client.authorization_url)
    return _fill(template, client, workspace_id)


def authorization_url_template(platform: Platform, configured: str) -> str:
    """The authorization endpoint as configured or catalogued, placeholders unfilled."""
    return configured or CATALOGUE[platform].authorization_url


def token_url_template(platform: Platform, configured: str) -> str:
    """The token endpoint as configured or catalogued, placeholders unfilled (what
    GetOAuthClient shows: a Microsoft client serves every tenant)."""
    return configured or CATALOGUE[platform].token_url


def revocation_url_template(platform: Platform, configured: str) -> str | None:
    """The revocation endpoint as configured or catalogued; None if there is none."""
    return configured or CATALOGUE[platform].revocation_url
