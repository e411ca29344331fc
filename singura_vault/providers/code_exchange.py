"""Exchange an authorization code for tokens (RFC 6749 §4.1.3) and read who granted them.

The request goes through token_request like a refresh does: the same URL check,
client authentication, encoding, limits and failure mapping (an invalid_grant here is
a bad, expired or replayed code, or a redirect_uri or PKCE verifier that does not
match the authorization request). The answer gives a CodeGrant: the tokens, the
lifetime (the catalogue's documented one when the answer has none), the granted
scopes and the identity of the workspace and user -- Slack's from its JSON,
Microsoft's and Google's from the OpenID Connect id_token.

Nothing here logs; no failure carries the code, the verifier, a token or the
provider's text; the id_token is read for two claims and then dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import httpx

from singura_vault.providers.catalogue import (
    CATALOGUE,
    OAuthClientConfig,
    PlatformEndpoints,
    ResponseDialect,
)
from singura_vault.providers.egress import EgressSettings
from singura_vault.providers.outcomes import CodeGrant, FailureKind, RefreshFailed
from singura_vault.providers.refresh_errors import unparseable
from singura_vault.providers.token_request import (
    expires_in,
    post_token_request,
    scopes,
    tokens,
)

# What each kind of failure means for a code, whose only remedy is a new authorization
# (a code is single use: the vault never presents one twice).
_AGAIN = "start the authorization again"
_REASONS: Mapping[FailureKind, str] = {
    FailureKind.INVALID_GRANT: (
        "the provider rejected the authorization code ({code}): it expired, was already "
        "used, or does not match the redirect_uri or PKCE verifier of its authorization; " + _AGAIN
    ),
    FailureKind.REVOKED: "the provider refused the authorization ({code}); " + _AGAIN,
    FailureKind.INVALID_CLIENT: (
        "the provider rejected the OAuth client or its configuration ({code}): correct "
        "it with SetOAuthClient, then " + _AGAIN
    ),
    FailureKind.TRANSIENT: (
        "the code exchange did not complete ({code}); the code may already be spent "
        "at the provider: " + _AGAIN
    ),
}


async def exchange_code(
    http: httpx.AsyncClient,
    settings: EgressSettings,
    client: OAuthClientConfig,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
    workspace_id: str,
) -> CodeGrant:
    """One code exchange over http; see TokenEndpointClient.exchange_code."""
    params = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier is not None:
        params["code_verifier"] = code_verifier
    try:
        document = await post_token_request(http, settings, client, params, workspace_id)
        return _grant(document, CATALOGUE[client.platform])
    except RefreshFailed as failed:
        raise _about_the_code(failed) from None


def _about_the_code(failed: RefreshFailed) -> RefreshFailed:
    """The same failure, its sentence about a code rather than a refresh token."""
    return RefreshFailed(
        failed.kind,
        failed.oauth_error,
        _REASONS[failed.kind].format(code=failed.oauth_error),
        retry_after_s=failed.retry_after_s,
        outcome_unknown=failed.outcome_unknown,
    )


def _grant(document: Mapping[str, Any], entry: PlatformEndpoints) -> CodeGrant:
    slack = entry.dialect is ResponseDialect.SLACK
    authed_user = _object(document.get("authed_user")) if slack else {}
    pair = tokens(document)
    token_source = document
    if pair is None and slack:
        # Only user scopes were asked for: Slack puts the user token under authed_user.
        pair = tokens(authed_user)
        token_source = authed_user
    if pair is None:
        raise unparseable()
    lifetime = expires_in(token_source.get("expires_in"))
    workspace_id, user_id = (
        (_text(_object(document.get("team")).get("id")), _text(authed_user.get("id")))
        if slack
        else _id_token_identity(document.get("id_token"), entry.id_token_claims)
    )
    return CodeGrant(
        access_token=pair[0],
        refresh_token=pair[1],
        expires_in=entry.default_expires_in_s if lifetime is None else lifetime,
        scopes=scopes(document.get("scope")) if token_source is document else None,
        user_scopes=scopes(authed_user.get("scope")) if slack else None,
        workspace_id=workspace_id,
        user_id=user_id,
        expiry_from_catalogue=lifetime is None and entry.default_expires_in_s is not None,
    )


def _id_token_identity(
    id_token: object, claims: tuple[str, str] | None
) -> tuple[str | None, str | None]:
    """(workspace, user) from the id_token's claims the catalogue names; Nones if absent.

    The signature is NOT verified, and need not be: the token came straight from the
    token endpoint, over the TLS connection the vault opened to the URL it checked,
    in answer to the vault's own client-authenticated request -- OpenID Connect Core
    1.0 §3.1.3.7 lets a client use the TLS server validation in place of checking the
    signature then. The claims serve only to record and compare identity.
    """
    if claims is None or not isinstance(id_token, str):
        return None, None
    payload = _jwt_payload(id_token)
    return _text(payload.get(claims[0])), _text(payload.get(claims[1]))


def _jwt_payload(id_token: str) -> Mapping[str, Any]:
    """The JWT's payload segment as a JSON object; empty when it is not one."""
    segments = id_token.split(".")
    if len(segments) != 3:
        return {}
    encoded = segments[1]
    try:
        decoded = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        document = json.loads(decoded)
    except (binascii.Error, ValueError):
        return {}
    return _object(document)


def _object(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    """A non-empty identifier of sane length, else None (never an error to the caller)."""
    if isinstance(value, str) and 0 < len(value) <= 256:
        return value
    return None
