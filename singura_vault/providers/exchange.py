"""One bounded HTTP exchange with a provider: send, read at most a cap, or say why not.

Whatever goes wrong on the wire comes back as an ExchangeError with a short code
(timeout, connect_error, connection_lost, too_large) and whether the request may
have reached the provider; never as httpx's own exception, whose text can carry the
URL. The answer's body is handed on as bytes for the caller to parse and is never
put into text here.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from singura_vault.providers.egress import EgressSettings

# A Retry-After beyond a day is a provider bug, not a plan: the caller's own backoff
# takes over rather than parking a connection for weeks.
_MAX_RETRY_AFTER_S = 86400.0
# How far httpx's own read/write timeouts sit beyond a call's deadline (see phase_timeouts).
_BACKSTOP_S = 5.0


class _TooLargeError(Exception):
    pass


@dataclass(frozen=True)
class Answer:
    """A provider's complete, bounded answer."""

    status: int
    headers: httpx.Headers
    body: bytes = field(repr=False)

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None if it is not one."""
        try:
            document = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None
        return document if isinstance(document, dict) else None


class ExchangeError(Exception):
    """No usable answer: ``code`` is timeout, connect_error, connection_lost, too_large..."""

    def __init__(self, code: str, *, outcome_unknown: bool, status: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.outcome_unknown = outcome_unknown
        self.status = status


def phase_timeouts(settings: EgressSettings, total_s: float) -> httpx.Timeout:
    """httpx's per-phase limits for one call: connect is bounded on its own so an
    unreachable provider fails fast (with a known outcome); reads and writes get a
    backstop beyond the deadline, so that the deadline -- which also catches a
    provider that drips its answer byte by byte -- is what normally fires."""
    connect = min(settings.connect_timeout_s, total_s)
    return httpx.Timeout(total_s + _BACKSTOP_S, connect=connect)


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


async def exchange(
    http: httpx.AsyncClient, request: httpx.Request, *, deadline_s: float, limit: int
) -> Answer:
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
            return Answer(status=status, headers=response.headers, body=body)
    except TimeoutError:
        raise ExchangeError("timeout", outcome_unknown=sent) from None
    except _TooLargeError:
        # A 2xx we could not read may have carried a rotated refresh token.
        unknown = status is not None and 200 <= status < 300
        raise ExchangeError("too_large", outcome_unknown=unknown, status=status) from None
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError):
        # Nothing reached the provider: connecting (or waiting for a connection) failed.
        raise ExchangeError("connect_error", outcome_unknown=False) from None
    except httpx.TimeoutException:
        raise ExchangeError("timeout", outcome_unknown=sent) from None
    except (httpx.TransportError, httpx.DecodingError):
        raise ExchangeError("connection_lost", outcome_unknown=sent) from None


def retry_after(headers: httpx.Headers) -> float | None:
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
