"""Refresh and revoke OAuth 2.0 tokens at a provider, and say plainly what happened.

A refresh either returns a TokenGrant or raises RefreshFailed with a FailureKind the
caller can act on: retry later (TRANSIENT), ask the user to reconnect (INVALID_GRANT,
REVOKED), or fix the OAuth client configuration (INVALID_CLIENT). Because providers
rotate refresh tokens, RefreshFailed also says whether the request may have reached
the provider with its answer lost (outcome_unknown): then the stored refresh token
may already be dead, and the caller must not treat a later invalid_grant as the
user's doing.

Secrets never leave this module in text: a failure carries only a sanitized OAuth
error code and a sentence written here. The provider's body is parsed for its error
code and nothing else; error_description is never read, since providers echo request
parameters in it.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import enum
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import httpx

from singura_vault.domain import ClientAuthMethod
from singura_vault.providers.catalogue import (
    CATALOGUE,
    OAuthClientConfig,
    PlatformEndpoints,
    RequestEncoding,
    ResponseDialect,
    RevocationStyle,
    ScopeOnRefresh,
    resolve_revocation_url,
    resolve_token_url,
)
from singura_vault.providers.egress import (
    EgressSettings,
    UnsafeEndpoint,
    build_http_client,
    check_endpoint_url,
)

_ERROR_CODE = re.compile(r"^[a-z0-9_.-]{1,64}$")
UNRECOGNIZED = "unrecognized"
# A Retry-After beyond a day is a provider bug, not a plan: the caller's own backoff
# takes over rather than parking a connection for weeks.
_MAX_RETRY_AFTER_S = 86400.0
# Anything larger is not a lifetime any provider issues; treated as absent.
_MAX_EXPIRES_IN_S = 10 * 365 * 86400
_ROTATION_HINT = "; the provider may have rotated the refresh token"
# How far httpx's own read/write timeouts sit beyond a call's deadline (see _timeout).
_BACKSTOP_S = 5.0


@dataclass(frozen=True)
class TokenGrant:
    """A successful refresh. Its repr shows no token."""

    access_token: str = field(repr=False)
    # None when the provider sent no new refresh token (no rotation): keep the old one.
    refresh_token: str | None = field(repr=False)
    # Seconds, from the response; None if absent or invalid.
    expires_in: int | None
    # From the response's "scope" (space- or comma-separated); None if absent.
    scopes: tuple[str, ...] | None


class FailureKind(enum.Enum):
    """What the caller should do about a failed refresh."""

    # Retry later: timeouts, connection errors, 5xx, 429, unparseable/oversized answers.
    TRANSIENT = "transient"
    # The refresh token expired, was revoked or was rotated away: the user must reconnect.
    INVALID_GRANT = "invalid_grant"
    # The client id/secret (or the client's configuration) was rejected: fix the client.
    INVALID_CLIENT = "invalid_client"
    # Consent or the token was revoked (Slack token_revoked, access_denied, ...).
    REVOKED = "revoked"


class RefreshFailed(Exception):  # noqa: N818 -- the name is the public contract
    """A refresh that did not produce a grant; str() is the human-readable reason."""

    def __init__(
        self,
        kind: FailureKind,
        oauth_error: str,
        reason: str,
        *,
        retry_after_s: float | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        # A sanitized code: "invalid_grant", "http_503", "timeout", "too_large", ...
        self.oauth_error = oauth_error
        # One sentence a human can act on; no secrets, no provider body text.
        self.reason = reason
        # From Retry-After on 429/503, else None.
        self.retry_after_s = retry_after_s
        # True when the request may have reached the provider and its answer was lost.
        self.outcome_unknown = outcome_unknown


class RevocationOutcome(enum.Enum):
    REVOKED = "revoked"
    # The platform has no revocation endpoint and none is configured.
    NOT_SUPPORTED = "not_supported"
    FAILED = "failed"


@dataclass(frozen=True)
class RevocationResult:
    outcome: RevocationOutcome
    # A human sentence without secrets, e.g. "provider answered HTTP 503".
    detail: str


def sanitize_error_code(value: object) -> str:
    """The provider's error code if it is a plain identifier, else "unrecognized".

    Anything else could be free text -- possibly echoing a token -- so it is dropped.
    """
    if isinstance(value, str) and _ERROR_CODE.fullmatch(value):
        return value
    return UNRECOGNIZED


# --------------------------------------------------------------------------- transport


class _TooLargeError(Exception):
    pass


@dataclass(frozen=True)
class _Answer:
    """A provider's complete, bounded answer."""

    status: int
    headers: httpx.Headers
    body: bytes = field(repr=False)


class _ExchangeError(Exception):
    """No usable answer: ``code`` is timeout, connect_error, connection_lost, too_large..."""

    def __init__(self, code: str, *, outcome_unknown: bool, status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.outcome_unknown = outcome_unknown
        self.status = status


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLargeError
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise _TooLargeError
    return bytes(body)


async def _exchange(
    http: httpx.AsyncClient, request: httpx.Request, *, deadline_s: float, limit: int
) -> _Answer:
    """Send one request and read its bounded answer within deadline_s, or explain why not.

    Whether the request may have reached the provider is tracked through httpcore's
    trace hook: once request headers start going out, a lost answer is an unknown
    outcome. (Behind a proxy the CONNECT counts too, which errs on the cautious side.)
    """
    sent = False

    async def trace(event: str, _info: Mapping[str, Any]) -> None:
        nonlocal sent
        if event.endswith("send_request_headers.started"):
            sent = True

    request.extensions = {**request.extensions, "trace": trace}
    status: int | None = None
    try:
        async with asyncio.timeout(deadline_s):
            response = await http.send(request, stream=True)
            status = response.status_code
            try:
                body = await _read_bounded(response, limit)
            finally:
                await response.aclose()
            return _Answer(status=status, headers=response.headers, body=body)
    except TimeoutError:
        raise _ExchangeError("timeout", outcome_unknown=sent) from None
    except _TooLargeError:
        # A 2xx we could not read may have carried a rotated refresh token.
        unknown = status is not None and 200 <= status < 300
        raise _ExchangeError("too_large", outcome_unknown=unknown, status=status) from None
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError):
        # Nothing reached the provider: connecting (or waiting for a connection) failed.
        raise _ExchangeError("connect_error", outcome_unknown=False) from None
    except httpx.TimeoutException:
        raise _ExchangeError("timeout", outcome_unknown=sent) from None
    except (httpx.TransportError, httpx.DecodingError):
        raise _ExchangeError("connection_lost", outcome_unknown=sent) from None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds from now (RFC 9110: delay-seconds or an HTTP-date)."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - time.time(), 0.0), _MAX_RETRY_AFTER_S)


def _form_urlencoded_basic(user: str, password: str) -> str:
    """HTTP Basic for a token endpoint: both parts form-urlencoded first (RFC 6749 §2.3.1)."""
    return _basic(quote_plus(user, safe=""), quote_plus(password, safe=""))


def _basic(user: str, password: str) -> str:
    pair = f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


# ----------------------------------------------------------------------- classification

_CREDENTIAL_CODES = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "incorrect_client_credentials",  # GitHub
        "invalid_client_id",  # Slack
        "bad_client_secret",  # Slack
    }
)
_CODE_KINDS: Mapping[str, FailureKind] = {
    "invalid_grant": FailureKind.INVALID_GRANT,
    "invalid_refresh_token": FailureKind.INVALID_GRANT,  # Slack
    "bad_refresh_token": FailureKind.INVALID_GRANT,  # GitHub
    **{code: FailureKind.INVALID_CLIENT for code in _CREDENTIAL_CODES},
    # The request itself was refused: a configuration problem, not a user's.
    "invalid_scope": FailureKind.INVALID_CLIENT,
    "invalid_request": FailureKind.INVALID_CLIENT,
    "unsupported_grant_type": FailureKind.INVALID_CLIENT,
    "access_denied": FailureKind.REVOKED,
    "token_revoked": FailureKind.REVOKED,  # Slack
    "account_inactive": FailureKind.REVOKED,  # Slack
    "temporarily_unavailable": FailureKind.TRANSIENT,
    "server_error": FailureKind.TRANSIENT,
}


def _refusal(code: str, *, fallback: FailureKind) -> RefreshFailed:
    """The failure for an explicit error code from the provider."""
    kind = _CODE_KINDS.get(code, fallback)
    if kind is FailureKind.INVALID_GRANT:
        reason = (
            f"the provider rejected the refresh token ({code}): it expired, was revoked "
            "or was already used; the user must reconnect"
        )
    elif kind is FailureKind.REVOKED:
        reason = (
            f"the provider reports that access was revoked ({code}): the user or an admin "
            "withdrew consent; the user must reconnect"
        )
    elif kind is FailureKind.INVALID_CLIENT and code in _CREDENTIAL_CODES:
        reason = (
            f"the provider rejected the OAuth client ({code}): check the client_id and "
            "client_secret given to SetOAuthClient"
        )
    elif kind is FailureKind.INVALID_CLIENT:
        reason = (
            f"the provider rejected the client configuration ({code}): check the scopes, "
            "auth method and token_url given to SetOAuthClient"
        )
    else:
        reason = f"the provider refused the refresh for now ({code}); retry later"
    return RefreshFailed(kind, code, reason)


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


def _unparseable() -> RefreshFailed:
    return RefreshFailed(
        FailureKind.TRANSIENT,
        "unparseable",
        "the token endpoint answered success without a usable access_token" + _ROTATION_HINT,
        outcome_unknown=True,
    )


def _interpret_refresh(answer: _Answer, entry: PlatformEndpoints) -> TokenGrant:
    """The grant in the answer, or the RefreshFailed that describes it."""
    status = answer.status
    document = _json_object(answer.body)
    if 200 <= status < 300:
        if document is None:
            raise _unparseable()
        code = _error_in_success(document, entry.dialect)
        if code is not None:
            raise _refusal(code, fallback=FailureKind.TRANSIENT)
        grant = _grant(document)
        if grant is None:
            raise _unparseable()
        return grant
    if 300 <= status < 400:
        raise RefreshFailed(
            FailureKind.TRANSIENT,
            f"http_{status}",
            f"the token endpoint answered with a redirect (HTTP {status}), which is not "
            "followed: check the token_url given to SetOAuthClient",
        )
    if status == 429 or status >= 500:
        retry_after = _retry_after(answer.headers) if status in (429, 503) else None
        what = "is rate limiting" if status == 429 else "failed"
        when = f"retry in {retry_after:.0f} s" if retry_after is not None else "retry later"
        raise RefreshFailed(
            FailureKind.TRANSIENT,
            f"http_{status}",
            f"the token endpoint {what} (HTTP {status}); {when}",
            retry_after_s=retry_after,
        )
    if status in (400, 401):
        # RFC 6749 §5.2. An unexplained 4xx is deterministic: retrying the same
        # request gets the same answer, so it is the client's configuration.
        code = sanitize_error_code(document.get("error")) if document else UNRECOGNIZED
        if code == UNRECOGNIZED and status == 401:
            code = "invalid_client"
        raise _refusal(code, fallback=FailureKind.INVALID_CLIENT)
    raise RefreshFailed(
        FailureKind.TRANSIENT,
        f"http_{status}",
        f"the token endpoint answered HTTP {status}: check the token_url given to SetOAuthClient",
    )


def _transport_refresh_failure(failure: _ExchangeError, settings: EgressSettings) -> RefreshFailed:
    if failure.code == "timeout":
        reason = f"the token endpoint did not answer within {settings.total_timeout_s} s"
    elif failure.code == "connect_error":
        reason = "could not connect to the token endpoint; check network access to the provider"
    elif failure.code == "too_large":
        reason = (
            f"the token endpoint's answer exceeded {settings.max_response_bytes} bytes "
            "and was discarded"
        )
    else:
        reason = "the connection to the token endpoint was lost before its answer arrived"
    if failure.outcome_unknown:
        reason += _ROTATION_HINT
    return RefreshFailed(
        FailureKind.TRANSIENT, failure.code, reason, outcome_unknown=failure.outcome_unknown
    )


# -------------------------------------------------------------------------- revocation

# Codes meaning the token is already unusable, which is what revocation wants.
_ALREADY_INVALID = frozenset(
    {"invalid_token", "invalid_auth", "token_revoked", "token_expired", "invalid_access_token"}
)


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


def _interpret_revocation(answer: _Answer, style: RevocationStyle) -> RevocationResult:
    status = answer.status
    document = _json_object(answer.body)
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


def _transport_revocation_failure(failure: _ExchangeError, timeout_s: float) -> str:
    if failure.code == "timeout":
        return f"timed out after {timeout_s} s"
    if failure.code == "connect_error":
        return "could not connect to the revocation endpoint"
    if failure.code == "too_large":
        return "the revocation endpoint's answer was too large and was discarded"
    return "the connection to the revocation endpoint was lost before its answer arrived"


# ------------------------------------------------------------------------------ client


class TokenEndpointClient:
    """Refreshes and revokes tokens for any catalogued platform over one HTTP client."""

    def __init__(self, settings: EgressSettings) -> None:
        self._settings = settings
        self._http = build_http_client(settings)

    async def __aenter__(self) -> TokenEndpointClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _timeout(self, total_s: float) -> httpx.Timeout:
        """httpx's per-phase limits for one call: connect is bounded on its own so an
        unreachable provider fails fast (with a known outcome); reads and writes get a
        backstop beyond the deadline, so that the deadline -- which also catches a
        provider that drips its answer byte by byte -- is what normally fires."""
        connect = min(self._settings.connect_timeout_s, total_s)
        return httpx.Timeout(total_s + _BACKSTOP_S, connect=connect)

    async def refresh(
        self, client: OAuthClientConfig, refresh_token: str, *, workspace_id: str = ""
    ) -> TokenGrant:
        """Exchange a refresh token for a new access token (and maybe a new refresh token).

        Raises RefreshFailed for anything the provider or the network did, and
        UnsafeEndpoint when the resolved token URL is not one credentials may go to.
        """
        entry = CATALOGUE[client.platform]
        url = check_endpoint_url(
            resolve_token_url(client, workspace_id),
            allow_loopback_http=self._settings.allow_loopback_http,
        )
        request = self._refresh_request(client, entry, url, refresh_token)
        try:
            answer = await _exchange(
                self._http,
                request,
                deadline_s=self._settings.total_timeout_s,
                limit=self._settings.max_response_bytes,
            )
            grant = _interpret_refresh(answer, entry)
        except _ExchangeError as failure:
            # Logged by the caller, which knows the connection (service/oauth_refresh.py).
            raise _transport_refresh_failure(failure, self._settings) from None
        return grant

    def _refresh_request(
        self, client: OAuthClientConfig, entry: PlatformEndpoints, url: str, refresh_token: str
    ) -> httpx.Request:
        params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        scopes = client.scopes
        if entry.scope_on_refresh is ScopeOnRefresh.REQUIRED and not scopes:
            scopes = entry.default_scopes
        if entry.scope_on_refresh is not ScopeOnRefresh.OMIT and scopes:
            params["scope"] = entry.scope_separator.join(scopes)
        # JSON always: GitHub otherwise answers form-encoded.
        headers = {"Accept": "application/json"}
        if client.auth_method is ClientAuthMethod.CLIENT_SECRET_BASIC:
            headers["Authorization"] = _form_urlencoded_basic(
                client.client_id, client.client_secret
            )
        else:
            params["client_id"] = client.client_id
            params["client_secret"] = client.client_secret
        timeout = self._timeout(self._settings.total_timeout_s)
        if entry.request_encoding is RequestEncoding.JSON:
            return self._http.build_request(
                "POST", url, json=params, headers=headers, timeout=timeout
            )
        return self._http.build_request("POST", url, data=params, headers=headers, timeout=timeout)

    async def revoke(
        self,
        client: OAuthClientConfig,
        token: str,
        *,
        token_type_hint: str = "refresh_token",  # noqa: S107 -- a hint's name, not a secret
        access_token: str | None = None,
        workspace_id: str = "",
    ) -> RevocationResult:
        """Ask the provider to revoke a token (or, for GitHub and Dropbox, the grant).

        Never raises for provider or network problems, nor for an unsafe configured
        URL: a disconnect should complete and report what it could not do. Bounded
        by revoke_timeout_s.
        """
        entry = CATALOGUE[client.platform]
        url = resolve_revocation_url(client, workspace_id)
        if url is None:
            return RevocationResult(
                RevocationOutcome.NOT_SUPPORTED,
                f"{client.platform.value} has no token revocation endpoint and none is configured",
            )
        try:
            check_endpoint_url(url, allow_loopback_http=self._settings.allow_loopback_http)
        except UnsafeEndpoint as unsafe:
            return _failed(f"the revocation URL was refused: {unsafe}")
        # Bearer-style revocations need an access token; a refresh token will not do.
        is_access = token_type_hint == "access_token"  # noqa: S105 -- a hint's name
        bearer = access_token or (token if is_access else None)
        request = self._revocation_request(
            client, entry.revocation_style, url, token, token_type_hint, bearer
        )
        if request is None:
            return _failed(
                f"{client.platform.value} revokes through an access token, and none was given"
            )
        timeout_s = self._settings.revoke_timeout_s
        try:
            answer = await _exchange(
                self._http, request, deadline_s=timeout_s, limit=self._settings.max_response_bytes
            )
        except _ExchangeError as failure:
            return _failed(_transport_revocation_failure(failure, timeout_s))
        return _interpret_revocation(answer, entry.revocation_style)

    def _revocation_request(
        self,
        client: OAuthClientConfig,
        style: RevocationStyle,
        url: str,
        token: str,
        token_type_hint: str,
        bearer: str | None,
    ) -> httpx.Request | None:
        """The request for the platform's revocation style; None if it lacks a token."""
        timeout = self._timeout(self._settings.revoke_timeout_s)
        headers = {"Accept": "application/json"}
        if style is RevocationStyle.SLACK:
            # auth.revoke ends the token presented: the one we were asked to revoke.
            data = {"token": token}
            return self._http.build_request(
                "POST", url, data=data, headers=headers, timeout=timeout
            )
        if style is RevocationStyle.DROPBOX:
            if bearer is None:
                return None
            headers["Authorization"] = f"Bearer {bearer}"
            return self._http.build_request("POST", url, headers=headers, timeout=timeout)
        if style is RevocationStyle.GITHUB_GRANT:
            if bearer is None:
                return None
            headers["Accept"] = "application/vnd.github+json"
            headers["Authorization"] = _basic(client.client_id, client.client_secret)
            body = {"access_token": bearer}
            return self._http.build_request(
                "DELETE", url, json=body, headers=headers, timeout=timeout
            )
        data = {"token": token, "token_type_hint": token_type_hint}
        if style is RevocationStyle.RFC7009:
            if client.auth_method is ClientAuthMethod.CLIENT_SECRET_BASIC:
                headers["Authorization"] = _form_urlencoded_basic(
                    client.client_id, client.client_secret
                )
            else:
                data["client_id"] = client.client_id
                data["client_secret"] = client.client_secret
        return self._http.build_request("POST", url, data=data, headers=headers, timeout=timeout)
