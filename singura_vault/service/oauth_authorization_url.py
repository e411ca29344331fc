"""Building the authorization URL StartAuthorization hands the app: the OAuth client's
authorization endpoint with the redirect URI, scopes, state, PKCE challenge, login
hint and the extra parameters the platform allows.

The URL is built from what the client's settings say, never its secret
(``url_config``); an endpoint that fails the egress checks is the client's
misconfiguration (FAILED_PRECONDITION, OAUTH_CLIENT_MISCONFIGURED).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from singura_vault.domain.connections import Platform
from singura_vault.domain.oauth import OAuthClientRecord
from singura_vault.errors import FailedPrecondition, InvalidArgument
from singura_vault.providers import (
    ExtraParamNotAllowed,
    OAuthClientConfig,
    Pkce,
    UnsafeEndpoint,
    authorization_url,
    check_extra_params,
)

MAX_EXTRA_PARAMS = 20


def build_url(
    client: OAuthClientRecord,
    *,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    pkce: Pkce | None,
    login_hint: str,
    extra_params: Mapping[str, str],
    allow_loopback_http: bool,
) -> str:
    """The authorization URL for ``client``; FailedPrecondition if its endpoint is unusable."""
    try:
        return authorization_url(
            url_config(client),
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=state,
            pkce=pkce,
            login_hint=login_hint,
            extra_params=extra_params,
            allow_loopback_http=allow_loopback_http,
        )
    except UnsafeEndpoint as exc:
        raise FailedPrecondition(
            f"the OAuth client's authorization endpoint is not usable: {exc}; correct it "
            "with SetOAuthClient",
            reason="OAUTH_CLIENT_MISCONFIGURED",
        ) from None


def checked_extra_params(platform: Platform, extra: Mapping[str, str]) -> dict[str, str]:
    """The request's extra_params, if the platform allows each (providers catalogue)."""
    if len(extra) > MAX_EXTRA_PARAMS:
        raise InvalidArgument("extra_params", f"has more than {MAX_EXTRA_PARAMS} entries")
    try:
        check_extra_params(platform, extra)
    except ExtraParamNotAllowed as exc:
        raise InvalidArgument(f"extra_params[{_printable_key(exc.key)}]", str(exc)) from None
    for key, value in extra.items():
        if len(value) > 1024:
            raise InvalidArgument(f"extra_params[{key}]", "is longer than 1024 characters")
    return dict(extra)


def url_config(client: OAuthClientRecord) -> OAuthClientConfig:
    """What building an authorization URL needs of the client: never its secret."""
    settings = client.settings
    return OAuthClientConfig(
        platform=settings.platform,
        client_id=settings.client_id,
        client_secret="",
        token_url=settings.token_url,
        revocation_url=settings.revocation_url,
        scopes=settings.scopes,
        auth_method=settings.auth_method,
        authorization_url=settings.authorization_url,
        redirect_uris=settings.redirect_uris,
    )


def _printable_key(key: str) -> str:
    return key if key.isidentifier() and len(key) <= 64 else "?"
