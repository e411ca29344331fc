"""One POST to a platform's token endpoint, whatever the grant: build, send, read the answer.

Shared by the refresh (token_refresh) and the authorization-code exchange
(code_exchange): the URL checked before credentials go to it, the catalogue's request
encoding and client authentication, the bounded exchange, and the answer read as a
JSON document -- or the RefreshFailed it describes (refresh_errors). Only the grant's
own parameters and the reading of a successful document differ between the callers.

Nothing here logs, and no failure carries the request's secrets or the provider's text.
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
    resolve_token_url,
)
from singura_vault.providers.client_auth import authenticate
from singura_vault.providers.egress import EgressSettings, check_endpoint_url
from singura_vault.providers.exchange import Answer, ExchangeError, exchange, phase_timeouts
from singura_vault.providers.outcomes import FailureKind, sanitize_error_code
from singura_vault.providers.refresh_errors import (
    http_failure,
    refusal,
    transport_failure,
    unparseable,
)

# Anything larger is not a lifetime any provider issues; treated as absent.
_MAX_EXPIRES_IN_S = 10 * 365 * 86400


async def post_token_request(
    http: httpx.AsyncClient,
    settings: EgressSettings,
    client: OAuthClientConfig,
    params: dict[str, str],
    workspace_id: str,
) -> dict[str, Any]:
    """POST the grant's params (plus client authentication) to the client's token URL.

    Returns the successful answer's JSON object. Raises RefreshFailed for anything the
    provider or the network did (a disguised refusal in a 2xx included), and
    UnsafeEndpoint when the resolved token URL is not one credentials may go to.
    """
    entry = CATALOGUE[client.platform]
    url = check_endpoint_url(
        resolve_token_url(client, workspace_id),
        allow_loopback_http=settings.allow_loopback_http,
    )
    request = _request(http, settings, client, entry, url, params)
    try:
        answer = await exchange(
            http,
            request,
            deadline_s=settings.total_timeout_s,
            limit=settings.max_response_bytes,
        )
    except ExchangeError as failure:
        # Logged by the caller, which knows the connection.
        raise transport_failure(failure, settings) from None
    return _document(answer, entry)


def _request(
    http: httpx.AsyncClient,
    settings: EgressSettings,
    client: OAuthClientConfig,
    entry: PlatformEndpoints,
    url: str,
    params: dict[str, str],
) -> httpx.Request:
    # JSON always: GitHub otherwise answers form-encoded.
    headers = {"Accept": "application/json"}
    params = dict(params)
    authenticate(client, headers, params)
    timeout = phase_timeouts(settings, settings.total_timeout_s)
    if entry.request_encoding is RequestEncoding.JSON:
        return http.build_request("POST", url, json=params, headers=headers, timeout=timeout)
    return http.build_request("POST", url, data=params, headers=headers, timeout=timeout)


def _document(answer: Answer, entry: PlatformEndpoints) -> dict[str, Any]:
    """The successful answer's JSON object, or the RefreshFailed that describes it."""
    if not 200 <= answer.status < 300:
        raise http_failure(answer)
    document = answer.json_object()
    if document is None:
        raise unparseable()
    code = _error_in_success(document, entry.dialect)
    if code is not None:
        raise refusal(code, fallback=FailureKind.TRANSIENT)
    return document


def _error_in_success(document: Mapping[str, Any], dialect: ResponseDialect) -> str | None:
    """The error code of a 2xx answer that is really a refusal (Slack, GitHub), if any."""
    if dialect is ResponseDialect.SLACK and document.get("ok") is False:
        return sanitize_error_code(document.get("error"))
    if "access_token" not in document and "error" in document:
        return sanitize_error_code(document.get("error"))
    return None


def tokens(document: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """(access_token, refresh_token or None) from a token answer; None if unusable."""
    access_token = document.get("access_token")
    refresh_token = document.get("refresh_token")
    if not isinstance(access_token, str) or not access_token:
        return None
    if refresh_token == "":
        refresh_token = None
    if refresh_token is not None and not isinstance(refresh_token, str):
        return None
    return access_token, refresh_token


def expires_in(value: object) -> int | None:
    """A token lifetime in seconds from an answer's expires_in; None if absent or absurd."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _MAX_EXPIRES_IN_S:
        return value
    return None


def scopes(value: object) -> tuple[str, ...] | None:
    """Scopes from an answer's scope (space- or comma-separated, or a list); None if absent."""
    if isinstance(value, str):
        return tuple(part for part in re.split(r"[\s,]+", value) if part)
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return tuple(value)
    return None
