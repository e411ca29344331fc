"""Checking what providers sign: Slack request signatures and RISC security event tokens.

The vault takes in revocation signals that a platform's backend forwards unchanged
(service/signals.py). This module decides only whether a forwarded request really
comes from the provider: Slack's ``X-Slack-Signature`` (HMAC-SHA256 with the app's
signing secret, over ``v0:{timestamp}:{body}``), and a Google RISC security event
token (a JWT signed by a key in the issuer's JWKS, which is fetched through the egress
rules of egress.py and cached). It never decides what a signal does, never logs a
secret, a signature or a token, and raises only :class:`SignalRejected` (with an
outcome for the metrics and a message a person can act on) or, for the JWKS fetch,
:class:`JwksUnavailable`.

Time comes from the caller (an injected clock), so the windows are tested without
sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from singura_vault.providers.egress import (
    EgressSettings,
    UnsafeEndpoint,
    build_http_client,
    check_endpoint_url,
)
from singura_vault.providers.exchange import ExchangeError, exchange, phase_timeouts

# Slack refuses requests older than five minutes, in either direction; so do we.
SLACK_TOLERANCE_S = 300
# A RISC token may be this far off in its times (clock skew between Google and us).
RISC_LEEWAY_S = 60
# A RISC token issued longer ago than this is refused as stale (its jti is forgotten
# after this, so it could otherwise be replayed).
RISC_MAX_AGE_S = 86400
# A JWKS document larger than this is not a key set.
_MAX_JWKS_BYTES = 256 * 1024
# An unknown key id refetches the JWKS (a rotation), at most this often.
_REFETCH_AFTER_S = 30.0


class SignalRejected(Exception):  # noqa: N818 -- the name is the contract
    """The request is not a genuine, fresh provider signal. ``outcome`` is one of
    bad_signature, stale, malformed (metrics label); the message names what is wrong
    and never repeats a secret, signature or token."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


class JwksUnavailable(Exception):  # noqa: N818 -- the name is the contract
    """The issuer's JWKS could not be fetched (or is not a key set); try again later."""


def slack_timestamp(value: str, now: float) -> int:
    """The request's X-Slack-Request-Timestamp, if within SLACK_TOLERANCE_S of now."""
    if not value.isdigit() or len(value) > 12:
        raise SignalRejected(
            "malformed", "X-Slack-Request-Timestamp must be a Unix time in seconds"
        )
    timestamp = int(value)
    if abs(now - timestamp) > SLACK_TOLERANCE_S:
        raise SignalRejected(
            "stale",
            f"the Slack request's timestamp is {int(abs(now - timestamp))} s away from the "
            f"vault's clock; requests older than {SLACK_TOLERANCE_S} s (either way) are "
            "refused as possible replays",
        )
    return timestamp


def slack_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of a request: ``v0=`` + hex HMAC-SHA256 of ``v0:ts:body``."""
    mac = hmac.new(secret, b"v0:" + timestamp.encode("ascii") + b":" + body, hashlib.sha256)
    return "v0=" + mac.hexdigest()


def slack_signature_matches(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is the request's v0 signature under ``secret`` (constant time)."""
    expected = slack_signature(secret, timestamp, body)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


@dataclass(frozen=True)
class RiscSettings:
    """Where RISC tokens come from (SINGURA_RISC_ISSUER, SINGURA_RISC_JWKS_URL) and how
    long the fetched key set is trusted before it is fetched again."""

    issuer: str = "https://accounts.google.com"
    jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    jwks_ttl_s: float = 3600.0


class JwksCache:
    """The issuer's key set, fetched through the egress rules and kept for a TTL.

    One fetch at a time per process (a lock): a burst of tokens after the TTL makes one
    request. An unknown key id refetches early (key rotation), at most every 30 s.
    """

    def __init__(
        self,
        settings: RiscSettings,
        egress: EgressSettings,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._egress = egress
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key with this id, fetching the set when it is old or lacks it."""
        async with self._lock:
            now = self._clock()
            if (
                self._fetched_at is None
                or now - self._fetched_at >= self._settings.jwks_ttl_s
                or (kid not in self._keys and now - self._fetched_at >= _REFETCH_AFTER_S)
            ):
                await self._fetch(now)
            return self._keys.get(kid)

    async def _fetch(self, now: float) -> None:
        try:
            url = check_endpoint_url(
                self._settings.jwks_url, allow_loopback_http=self._egress.allow_loopback_http
            )
        except UnsafeEndpoint as exc:
            raise JwksUnavailable(f"SINGURA_RISC_JWKS_URL is not usable: {exc}") from None
        if self._http is None:
            self._http = build_http_client(self._egress)
        request = self._http.build_request(
            "GET",
            url,
            headers={"Accept": "application/json"},
            timeout=phase_timeouts(self._egress, self._egress.total_timeout_s),
        )
        try:
            answer = await exchange(
                self._http,
                request,
                deadline_s=self._egress.total_timeout_s,
                limit=_MAX_JWKS_BYTES,
            )
        except ExchangeError as exc:
            raise JwksUnavailable(f"fetching the RISC issuer's JWKS failed ({exc.code})") from None
        document = answer.json_object() if answer.status == 200 else None
        if document is None:
            raise JwksUnavailable(
                f"the RISC issuer's JWKS answered HTTP {answer.status} without a key set"
            )
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", ()) if isinstance(document.get("keys"), list) else ():
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type we cannot use; the others still count
        self._keys = keys
        self._fetched_at = now


def _issuers(issuer: str) -> list[str]:
    # Google's discovery document spells its issuer with a trailing slash, its ID
    # tokens without; either spelling of the configured issuer is accepted.
    bare = issuer.rstrip("/")
    return [bare, bare + "/"]


async def _signing_key(text: str, jwks: JwksCache) -> jwt.PyJWK:
    """The issuer's key that the token's header names (RS256 only)."""
    try:
        header = jwt.get_unverified_header(text)
    except jwt.PyJWTError:
        raise SignalRejected(
            "malformed", "the body is not a JWT (a RISC security event token)"
        ) from None
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise SignalRejected("malformed", "the token's header names no key (kid)")
    if header.get("alg") != "RS256":
        raise SignalRejected("bad_signature", "the token is not signed with RS256")
    key = await jwks.key(kid)
    if key is None:
        raise SignalRejected(
            "bad_signature", "the token is signed with a key the issuer's JWKS does not publish"
        )
    return key


async def verify_security_event_token(
    token: bytes,
    jwks: JwksCache,
    *,
    issuer: str,
    audiences: Sequence[str],
    now: float,
) -> dict[str, Any]:
    """The claims of a RISC security event token, once its signature (RS256, a key of
    the issuer's JWKS), issuer, audience (one of ``audiences``), times and jti hold."""
    try:
        text = token.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SignalRejected(
            "malformed", "the body is not a JWT (a RISC security event token)"
        ) from None
    key = await _signing_key(text, jwks)
    if not audiences:
        raise SignalRejected(
            "bad_signature",
            "no Google OAuth client is registered in the vault, so no token audience is expected",
        )
    try:
        claims: dict[str, Any] = jwt.decode(
            text,
            key=key,
            algorithms=["RS256"],
            audience=list(audiences),
            issuer=_issuers(issuer),
            # Times are checked below against the injected clock.
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["iss", "aud", "iat", "jti"],
            },
        )
    except jwt.InvalidSignatureError:
        raise SignalRejected("bad_signature", "the token's signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise SignalRejected(
            "bad_signature", "the token's audience is none of the vault's Google OAuth clients"
        ) from None
    except jwt.InvalidIssuerError:
        raise SignalRejected(
            "bad_signature", "the token's issuer is not SINGURA_RISC_ISSUER"
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise SignalRejected("malformed", f"the token has no {exc.claim!r} claim") from None
    except jwt.PyJWTError:
        raise SignalRejected("malformed", "the token cannot be decoded") from None
    _check_times(claims, now)
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise SignalRejected("malformed", "the token's jti is not a non-empty string")
    if not isinstance(claims.get("events"), dict) or not claims["events"]:
        raise SignalRejected("malformed", "the token carries no events")
    return claims


def _check_times(claims: dict[str, Any], now: float) -> None:
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise SignalRejected("malformed", "the token's iat is not a number")
    if iat > now + RISC_LEEWAY_S:
        raise SignalRejected("stale", "the token was issued in the future (iat)")
    if iat < now - RISC_MAX_AGE_S:
        raise SignalRejected(
            "stale", f"the token was issued more than {RISC_MAX_AGE_S} s ago (iat)"
        )
    exp = claims.get("exp")
    if exp is not None:
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise SignalRejected("malformed", "the token's exp is not a number")
        if exp < now - RISC_LEEWAY_S:
            raise SignalRejected("stale", "the token has expired (exp)")


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """A request body that must be a JSON object."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SignalRejected("malformed", f"the {what} body is not JSON") from None
    if not isinstance(document, dict):
        raise SignalRejected("malformed", f"the {what} body is not a JSON object")
    return document
