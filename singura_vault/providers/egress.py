"""Outbound HTTP to OAuth providers: which URLs may be called, and the one client that calls.

Token requests carry refresh tokens and client secrets, so where they may go is
checked before every call: TLS always, except plain HTTP to this machine's loopback
interface (test servers, development), which production turns off. The HTTP client
follows no redirects (a redirect would re-send credentials to a host nobody
configured) and ignores proxy environment variables (a stray HTTPS_PROXY must not
silently route secrets through another host); an explicit proxy setting is honoured.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import SplitResult, urlsplit

import httpx

from singura_vault.local import is_loopback

# Enough for the vault's refresh workers without letting one slow provider hold
# an unbounded number of sockets.
_MAX_CONNECTIONS = 32
_MAX_KEEPALIVE = 8
_KEEPALIVE_EXPIRY_S = 30.0
_USER_AGENT = "singura-vault"


@dataclass(frozen=True)
class EgressSettings:
    """Limits and routing for calls to OAuth providers."""

    connect_timeout_s: float = 5.0
    # The whole refresh request, including reading the body.
    total_timeout_s: float = 15.0
    # The whole revocation request.
    revoke_timeout_s: float = 5.0
    max_response_bytes: int = 64 * 1024
    # Used only when set; environment proxies are ignored.
    proxy: str | None = None
    # False when SINGURA_ENV=production.
    allow_loopback_http: bool = True


class UnsafeEndpoint(ValueError):  # noqa: N818 -- the name is the public contract
    """A configured OAuth endpoint URL the vault refuses to send credentials to.

    The message names the problem and never repeats the URL's credentials or query.
    """


def check_endpoint_url(url: str, *, allow_loopback_http: bool) -> str:
    """Return the URL if safe to send credentials to; raise UnsafeEndpoint otherwise.

    Safe: scheme https, or http only when the host is loopback (127.0.0.0/8, ::1,
    "localhost") and allow_loopback_http; no userinfo; a host; no fragment.
    """
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeEndpoint("the endpoint URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port is how urllib validates it
    except ValueError:
        raise UnsafeEndpoint("the endpoint URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeEndpoint(
            f"the endpoint URL must use https (got scheme {scheme!r})"
            if scheme
            else "the endpoint URL must be absolute and use https"
        )
    # Userinfo is checked on the raw netloc: urlsplit's hostname would hide it.
    if "@" in parts.netloc:
        raise UnsafeEndpoint(
            "the endpoint URL must not contain credentials (user:password@); "
            "the OAuth client's credentials are configured separately"
        )
    host = parts.hostname
    if not host:
        raise UnsafeEndpoint("the endpoint URL has no host")
    if parts.fragment or "#" in url:
        raise UnsafeEndpoint("the endpoint URL must not contain a fragment (#...)")
    if scheme == "http":
        _check_plain_http(parts, allow_loopback_http=allow_loopback_http)
    return url


def _check_plain_http(parts: SplitResult, *, allow_loopback_http: bool) -> None:
    host = parts.hostname or ""
    if not is_loopback(host):
        raise UnsafeEndpoint(
            f"the endpoint URL for host {host!r} must use https: plain http is allowed "
            "only to a loopback address, for testing"
        )
    if not allow_loopback_http:
        raise UnsafeEndpoint(
            f"the endpoint URL for loopback host {host!r} must use https: plain http "
            "to loopback is disabled in production"
        )


def build_http_client(settings: EgressSettings) -> httpx.AsyncClient:
    """The HTTP client for provider calls, configured as the module docstring explains.

    The timeout here is only a default: each call sets its own and enforces its whole
    duration with a deadline of its own (see exchange).
    """
    total = max(settings.total_timeout_s, settings.revoke_timeout_s)
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        proxy=settings.proxy or None,
        # One client serves every tenant's connections: a cookie a provider sets for
        # one must never ride along on another's request, so none are kept.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        timeout=httpx.Timeout(total, connect=settings.connect_timeout_s),
        limits=httpx.Limits(
            max_connections=_MAX_CONNECTIONS,
            max_keepalive_connections=_MAX_KEEPALIVE,
            keepalive_expiry=_KEEPALIVE_EXPIRY_S,
        ),
        headers={
            "User-Agent": _USER_AGENT,
            # Answers are counted against max_response_bytes as they arrive; an
            # uncompressed body keeps that count honest.
            "Accept-Encoding": "identity",
        },
    )
