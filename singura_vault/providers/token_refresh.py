"""Refresh an access token (RFC 6749 §6): build the request and read the grant from the answer.

The provider's body is parsed for the grant and, on a disguised refusal, its error
code; nothing else of it is kept. What a failure means is refresh_errors' job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from singura_vault.providers.catalogue import (
    CATALOGUE,
    OAuthClientConfig,
    PlatformEndpoints,
    RequestEncoding,
    ResponseDialect,
    ScopeOnRefresh,
    resolve_token_url,
)
from singura_vault.providers.client_auth import authenticate
from singura_vault.providers.egress import EgressSettings, check_endpoint_url
from singura_vault.providers.exchange import Answer, ExchangeError, exchange, phase_timeouts
from singura_vault.providers.outcomes import FailureKind, TokenGrant, sanitize_error_code
from singura_vault.providers.refresh_errors import (
    http_failure,
    refusal,
    transport_failure,
    unparseable,
)

# Anything larger is not a lifetime any provider issues; treated as absent.
_MAX_EXPIRES_IN_S = 10 * 365 * 86400


async def refresh(
    http: httpx.AsyncClient,
    settings: EgressSettings,
    client: OAuthClientConfig,
    refresh_token: str,
    workspace_id: str,
) -> TokenGrant:
    """One refresh over http; see TokenEndpointClient.refresh for what it raises."""
    entry = CATALOGUE[client.platform]
    url = check_endpoint_url(
        resolve_token_url(client, workspace_id),
        allow_loopback_http=settings.allow_loopback_http,
    )
    request = _request(http, settings, client, entry, url, refresh_token)
    try:
        answer = await exchange(
            http,
            request,
            deadline_s=settings.total_timeout_s,
            limit=settings.max_response_bytes,
        )
        grant = _interpret(answer, entry)
    except ExchangeError as failure:
        # Logged by the caller, which knows the connection (service/oauth_refresh.py).
        raise transport_failure(failure, settings) from None
    return grant


def _request(
    http: httpx.AsyncClient,
    settings: EgressSettings,
    client: OAuthClientConfig,
    entry: PlatformEndpoints,
    url: str,
    refresh_token: str,
) -> httpx.Request:
    params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    scopes = client.scopes
    if entry.scope_on_refresh is ScopeOnRefresh.REQUIRED and not scopes:
        scopes = entry.default_scopes
    if entry.scope_on_refresh is not ScopeOnRefresh.OMIT and scopes:
        params["scope"] = entry.scope_separator.join(scopes)
    # JSON always: GitHub otherwise answers form-encoded.
    headers = {"Accept": "application/json"}
    authenticate(client, headers, params)
    timeout = phase_timeouts(settings, settings.total_timeout_s)
    if entry.request_encoding is RequestEncoding.JSON:
        return http.build_request("POST", url, json=params, headers=headers, timeout=timeout)
    return http.build_request("POST", url, data=params, headers=headers, timeout=timeout)


def _interpret(answer: Answer, entry: PlatformEndpoints) -> TokenGrant:
    """The grant in the answer, or the RefreshFailed that describes it."""
    if not 200 <= answer.status < 300:
        raise http_failure(answer)
    document = answer.json_object()
    if document is None:
        raise unparseable()
    code = _error_in_success(document, entry.dialect)
    if code is not None:
        raise refusal(code, fallback=FailureKind.TRANSIENT)
    grant = _grant(document)
    if grant is None:
        raise unparseable()
    return grant


def _error_in_success(document: Mapping[str, Any], dialect: ResponseDialect) -> str | None:
    """The error code of a 2xx answer that is really a refusal (Slack, GitHub), if any."""
    if dialect is ResponseDialect.SLACK and document.get("ok") is False:
        return sanitize_error_code(document.get("error"))
    if "access_token" not in document and "error" in document:
        return sanitize_error_code(document.get("error"))
    return None


def _expires_in(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _MAX_EXPIRES_IN_S:
        return value
    return None


def _scopes(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return tuple(part for part in re.split(r"[\s,]+", value) if part)
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return tuple(value)
    return None


def _grant(document: Mapping[str, Any]) -> TokenGrant | None:
    access_token = document.get("access_token")
    refresh_token = document.get("refresh_token")
    if not isinstance(access_token, str) or not access_token:
        return None
    if refresh_token == "":
        refresh_token = None
    if refresh_token is not None and not isinstance(refresh_token, str):
        return None
    return TokenGrant(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=_expires_in(document.get("expires_in")),
        scopes=_scopes(document.get("scope")),
    )
