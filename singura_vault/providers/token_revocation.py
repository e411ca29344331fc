"""Revoke a token (RFC 7009) or, for GitHub and Dropbox, the grant, in each platform's style.

Revocation never raises for provider or network problems: it reports a
RevocationResult whose detail is a sentence written here, with a sanitized error
code at most, so that a disconnect can complete and say what it could not do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from singura_vault.providers.catalogue import (
    CATALOGUE,
    OAuthClientConfig,
    RevocationStyle,
    resolve_revocation_url,
)
from singura_vault.providers.client_auth import authenticate, basic
from singura_vault.providers.egress import EgressSettings, UnsafeEndpoint, check_endpoint_url
from singura_vault.providers.exchange import Answer, ExchangeError, exchange, phase_timeouts
from singura_vault.providers.outcomes import (
    UNRECOGNIZED,
    RevocationOutcome,
    RevocationResult,
    sanitize_error_code,
)

# Codes meaning the token is already unusable, which is what revocation wants.
_ALREADY_INVALID = frozenset(
    {"invalid_token", "invalid_auth", "token_revoked", "token_expired", "invalid_access_token"}
)


async def revoke(
    http: httpx.AsyncClient,
    settings: EgressSettings,
    client: OAuthClientConfig,
    token: str,
    *,
    token_type_hint: str,
    access_token: str | None,
    workspace_id: str,
) -> RevocationResult:
    """One revocation over http; see TokenEndpointClient.revoke for its contract."""
    entry = CATALOGUE[client.platform]
    url = resolve_revocation_url(client, workspace_id)
    if url is None:
        return RevocationResult(
            RevocationOutcome.NOT_SUPPORTED,
            f"{client.platform.value} has no token revocation endpoint and none is configured",
        )
    try:
        check_endpoint_url(url, allow_loopback_http=settings.allow_loopback_http)
    except UnsafeEndpoint as unsafe:
        return _failed(f"the revocation URL was refused: {unsafe}")
    # Bearer-style revocations need an access token; a refresh token will not do.
    is_access = token_type_hint == "access_token"  # noqa: S105 -- a hint's name
    bearer = access_token or (token if is_access else None)
    timeout_s = settings.revoke_timeout_s
    request = _request(
        http,
        client,
        entry.revocation_style,
        url,
        token,
        token_type_hint,
        bearer,
        phase_timeouts(settings, timeout_s),
    )
    if request is None:
        return _failed(
            f"{client.platform.value} revokes through an access token, and none was given"
        )
    try:
        answer = await exchange(
            http, request, deadline_s=timeout_s, limit=settings.max_response_bytes
        )
    except ExchangeError as failure:
        return _failed(_transport_failure(failure, timeout_s))
    return _interpret(answer, entry.revocation_style)


def _request(
    http: httpx.AsyncClient,
    client: OAuthClientConfig,
    style: RevocationStyle,
    url: str,
    token: str,
    token_type_hint: str,
    bearer: str | None,
    timeout: httpx.Timeout,
) -> httpx.Request | None:
    """The request for the platform's revocation style; None if it lacks a token."""
    headers = {"Accept": "application/json"}
    if style is RevocationStyle.SLACK:
        # auth.revoke ends the token presented: the one we were asked to revoke.
        data = {"token": token}
        return http.build_request("POST", url, data=data, headers=headers, timeout=timeout)
    if style is RevocationStyle.DROPBOX:
        if bearer is None:
            return None
        headers["Authorization"] = f"Bearer {bearer}"
        return http.build_request("POST", url, headers=headers, timeout=timeout)
    if style is RevocationStyle.GITHUB_GRANT:
        if bearer is None:
            return None
        headers["Accept"] = "application/vnd.github+json"
        headers["Authorization"] = basic(client.client_id, client.client_secret)
        body = {"access_token": bearer}
        return http.build_request("DELETE", url, json=body, headers=headers, timeout=timeout)
    data = {"token": token, "token_type_hint": token_type_hint}
    if style is RevocationStyle.RFC7009:
        authenticate(client, headers, data)
    return http.build_request("POST", url, data=data, headers=headers, timeout=timeout)


def _revocation_code(document: Mapping[str, Any] | None) -> str | None:
    if document is None or "error" not in document:
        return None
    error = document["error"]
    if isinstance(error, dict):  # Dropbox: {"error": {".tag": "invalid_access_token"}}
        error = error.get(".tag")
    return sanitize_error_code(error)


def _revoked(detail: str) -> RevocationResult:
    return RevocationResult(RevocationOutcome.REVOKED, detail)


def _failed(detail: str) -> RevocationResult:
    return RevocationResult(RevocationOutcome.FAILED, detail)


def _interpret(answer: Answer, style: RevocationStyle) -> RevocationResult:
    status = answer.status
    document = answer.json_object()
    code = _revocation_code(document)
    if style is RevocationStyle.SLACK and status == 200:
        if document is not None and document.get("ok") is True:
            return _revoked("the provider revoked the token")
        code = code or UNRECOGNIZED
    elif 200 <= status < 300:
        return _revoked("the provider revoked the token")
    if code in _ALREADY_INVALID and (status in (200, 400, 401) or style is RevocationStyle.SLACK):
        return _revoked(f"the provider reports the token was already invalid ({code})")
    if code == "expired_access_token":  # Dropbox: the refresh token lives on
        return _failed(
            "the access token has expired, so the provider could not revoke the grant "
            "with it: refresh the token, then revoke again"
        )
    if style is RevocationStyle.GITHUB_GRANT and status == 404:
        return _failed(
            "provider answered HTTP 404: the access token is unknown (perhaps already "
            "revoked) or the client_id is wrong"
        )
    if style is RevocationStyle.SLACK and status == 200:
        return _failed(f"provider refused the revocation ({code})")
    suffix = f" ({code})" if code else ""
    return _failed(f"provider answered HTTP {status}{suffix}")


def _transport_failure(failure: ExchangeError, timeout_s: float) -> str:
    if failure.code == "timeout":
        return f"timed out after {timeout_s} s"
    if failure.code == "connect_error":
        return "could not connect to the revocation endpoint"
    if failure.code == "too_large":
        return "the revocation endpoint's answer was too large and was discarded"
    return "the connection to the revocation endpoint was lost before its answer arrived"
