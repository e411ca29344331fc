"""Outbound HTTP to webhook endpoints: which URLs may be called, and the client that calls.

A webhook URL is chosen by a tenant, so unlike an OAuth provider's it must never reach
the vault's own network. Rules (docs/events.md#webhooks, "Egress"):

- https only in production (plain http too outside it, for tests and development);
  no user:password@, no fragment;
- no redirects (a 3xx is an answer like any other: not delivered), no environment
  proxies, no cookies, connect and total timeouts, at most the first 1 KiB of an
  answer read;
- in production, the address the host name resolves to is checked **at connect
  time**, by the network backend that opens the socket, and the socket is opened to
  that very address (so a DNS answer that changes between a check and the connect
  cannot slip through): loopback, private, link-local (cloud metadata,
  169.254.169.254), CGNAT, multicast, reserved and unspecified addresses, and IPv6
  forms of them, are refused. Any refused address among the answers refuses the call.

Never put a URL into a log line or an error: its query string may carry a consumer's
token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from singura_vault.providers.egress import UnsafeEndpoint

MAX_URL_LENGTH = 2048
# What is kept of an answer's body (ListWebhookDeliveries shows it).
RESPONSE_PREFIX_BYTES = 1024
_USER_AGENT = "singura-vault-webhooks"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class WebhookEgressSettings:
    connect_timeout_s: float = 5.0
    timeout_s: float = 10.0
    # SINGURA_ENV=production: https only, and the address checks on.
    production: bool = False


class RefusedAddress(Exception):  # noqa: N818 -- an outcome, named as ListWebhookDeliveries shows it
    """The endpoint's host resolved to an address the vault does not call."""


def forbidden_address(address: IpAddress) -> bool:
    """True for an address a production webhook may not reach: anything that is not a
    public unicast address (loopback, RFC 1918, link-local and metadata, CGNAT, ULA,
    multicast, reserved, unspecified), including IPv4-mapped and NAT64-embedded forms."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return forbidden_address(mapped)
        if address in ipaddress.IPv6Network("64:ff9b::/96"):
            return forbidden_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return not address.is_global or address.is_multicast


def check_webhook_url(url: str, *, production: bool) -> str:
    """Return the URL if the vault may POST to it; UnsafeEndpoint says why not (never
    repeating the URL). In production a literal address must be a public one; a host
    name is checked when it is resolved, at every connect."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeEndpoint(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeEndpoint("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port is how urllib validates it
    except ValueError:
        raise UnsafeEndpoint("the URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeEndpoint("the URL must be absolute and use https")
    if scheme == "http" and production:
        raise UnsafeEndpoint("the URL must use https in production")
    if "@" in parts.netloc:
        raise UnsafeEndpoint("the URL must not contain credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise UnsafeEndpoint("the URL has no host")
    if parts.fragment or "#" in url:
        raise UnsafeEndpoint("the URL must not contain a fragment (#...)")
    if production:
        try:
            literal: IpAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and forbidden_address(literal):
            raise UnsafeEndpoint(
                f"the URL's address {host} is not a public address (loopback, private, "
                "link-local and metadata addresses are refused in production)"
            )
    return url


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses forbidden addresses, and connects to the
    address it checked (TLS still verifies the certificate for the host name)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"name resolution failed ({type(exc).__name__})") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses or any(forbidden_address(a) for a in addresses):
            raise RefusedAddress(
                "the host resolved to an address that is not public (loopback, private, "
                "link-local or metadata); the vault does not call it in production"
            )
        return await self._inner.connect_tcp(
            str(addresses[0]), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("webhooks are never sent over a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, settings: WebhookEgressSettings, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        if settings.production:
            # httpx builds its pool without a network-backend hook; the same pool with
            # the guarded backend (httpx maps its errors as for its own).
            self._pool = httpcore.AsyncConnectionPool(
                ssl_context=httpx.create_ssl_context(trust_env=False),
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                network_backend=_GuardedBackend(httpcore.AnyIOBackend()),
            )


@dataclass(frozen=True)
class SendResult:
    """One POST's outcome: delivered, gone, http_error, timeout, network_error or
    refused_address (docs/events.md#webhooks)."""

    outcome: str
    status_code: int | None
    body_prefix: str
    latency_ms: float
    error: str


class WebhookSender:
    """POSTs signed webhook bodies under the rules of the module docstring."""

    def __init__(self, settings: WebhookEgressSettings) -> None:
        self._settings = settings
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(
                settings,
                httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=30),
            ),
            follow_redirects=False,
            trust_env=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
        )

    def check_url(self, url: str) -> str:
        return check_webhook_url(url, production=self._settings.production)

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> SendResult:
        """POST ``body``; never raises for what the endpoint or the network does."""
        started = time.perf_counter()

        def result(outcome: str, code: int | None, prefix: bytes, error: str) -> SendResult:
            return SendResult(
                outcome,
                code,
                prefix[:RESPONSE_PREFIX_BYTES].decode("utf-8", errors="replace"),
                (time.perf_counter() - started) * 1000.0,
                error,
            )

        try:
            self.check_url(url)
            async with asyncio.timeout(self._settings.timeout_s):
                request = self._client.build_request(
                    "POST",
                    url,
                    content=body,
                    headers={**headers, "content-type": "application/json"},
                )
                response = await self._client.send(request, stream=True)
                try:
                    prefix = b""
                    async for chunk in response.aiter_raw():
                        prefix += chunk
                        if len(prefix) >= RESPONSE_PREFIX_BYTES:
                            break
                finally:
                    await response.aclose()
        except UnsafeEndpoint as exc:
            return result("refused_address", None, b"", str(exc))
        except RefusedAddress as exc:
            return result("refused_address", None, b"", str(exc))
        except (TimeoutError, httpx.TimeoutException):
            return result(
                "timeout", None, b"", f"no complete answer within {self._settings.timeout_s:g} s"
            )
        except (httpx.HTTPError, OSError) as exc:
            return result("network_error", None, b"", f"no answer ({type(exc).__name__})")
        code = response.status_code
        if 200 <= code < 300:
            return result("delivered", code, prefix, "")
        if code == 410:
            return result("gone", code, prefix, "the endpoint answered 410 Gone")
        return result("http_error", code, prefix, f"the endpoint answered {code}")

    async def aclose(self) -> None:
        await self._client.aclose()
