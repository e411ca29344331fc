"""The start of the authorization-code flow (RFC 6749 §4.1): state, PKCE and the URL.

What the vault hands a platform to send its user's browser to: the provider's
authorization endpoint with the client id, the exact redirect URI, the requested
scopes in the platform's dialect, an unguessable ``state`` and, where the provider
takes it, a PKCE challenge (RFC 7636, S256) whose verifier never leaves the vault.
Pure computation: no I/O, nothing stored; the caller keeps the state's hash and seals
the verifier.

What it must never do: log, return or put into an exception message a secret. The
state and the URL are returned to the one caller that asked for them; the PKCE
verifier only inside a Pkce, whose repr hides it; the client secret is never read
here at all. Errors name the offending parameter, never a value.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from singura_vault.domain.connections import Platform
from singura_vault.providers.catalogue import (
    CATALOGUE,
    OAuthClientConfig,
    resolve_authorization_url,
)
from singura_vault.providers.egress import check_endpoint_url
from singura_vault.providers.outcomes import CodeGrant

__all__ = [
    "PKCE_METHOD",
    "STATE_BYTES",
    "CodeGrant",
    "ExtraParamNotAllowed",
    "Pkce",
    "authorization_url",
    "check_extra_params",
    "new_pkce",
    "new_state",
    "pkce_challenge",
    "platform_uses_pkce",
]

# 256 bits from the CSPRNG; base64url without padding: 43 characters.
STATE_BYTES = 32
# 64 random bytes make an 86-character verifier, inside RFC 7636's 43..128.
_VERIFIER_BYTES = 64
PKCE_METHOD = "S256"


def new_state() -> str:
    """A fresh state: STATE_BYTES from the CSPRNG, base64url without padding."""
    return secrets.token_urlsafe(STATE_BYTES)


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 S256: base64url(sha256(ascii(verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Pkce:
    """One PKCE pair; the verifier stays in the vault, the challenge goes in the URL."""

    verifier: str = field(repr=False)
    challenge: str
    method: str = PKCE_METHOD


def new_pkce() -> Pkce:
    """A fresh verifier (86 characters of RFC 7636's unreserved set) and its challenge."""
    verifier = secrets.token_urlsafe(_VERIFIER_BYTES)
    return Pkce(verifier=verifier, challenge=pkce_challenge(verifier))


def platform_uses_pkce(platform: Platform) -> bool:
    """Whether the platform's provider takes PKCE (then the vault always sends it)."""
    return CATALOGUE[platform].uses_pkce


class ExtraParamNotAllowed(ValueError):  # noqa: N818 -- the name is the shared interface
    """An extra authorization parameter the platform's catalogue entry does not allow."""

    def __init__(self, key: str, allowed: tuple[str, ...]) -> None:
        # The key is the caller's own input and is named so it can be fixed; a value is
        # never repeated. A key too long or odd to print is described, not echoed.
        shown = key if key.isidentifier() and len(key) <= 64 else "(an unprintable key)"
        choices = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"extra_params key {shown!r} is not accepted for this platform (allowed: {choices})"
        )
        self.key = key
        self.allowed = allowed


def check_extra_params(platform: Platform, extra_params: Mapping[str, str]) -> None:
    """Raise ExtraParamNotAllowed for the first key the platform does not allow."""
    allowed = CATALOGUE[platform].allowed_extra_params
    for key in sorted(extra_params):
        if key not in allowed:
            raise ExtraParamNotAllowed(key, tuple(sorted(allowed)))


def authorization_url(
    client: OAuthClientConfig,
    *,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    pkce: Pkce | None,
    login_hint: str,
    extra_params: Mapping[str, str],
    workspace_id: str = "",
    allow_loopback_http: bool,
) -> str:
    """The URL to send the user's browser to, with the parameters in this order:
    response_type, client_id, redirect_uri, state, scope, code_challenge(_method),
    the login hint, the platform's fixed parameters, then extra_params (which may
    override a fixed one they are allowed to, e.g. Google's access_type).

    Raises ExtraParamNotAllowed for an extra the platform does not take, and
    egress.UnsafeEndpoint when the (configured) authorization URL is not https (or
    loopback http where allowed). Checking redirect_uri against the client's registered
    URIs is the caller's job. "{tenant}" in the URL becomes workspace_id, or "common".
    """
    check_extra_params(client.platform, extra_params)
    entry = CATALOGUE[client.platform]
    base = check_endpoint_url(
        resolve_authorization_url(client, workspace_id), allow_loopback_http=allow_loopback_http
    )
    params: dict[str, str] = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
    }
    if scopes:
        params["scope"] = entry.scope_separator.join(scopes)
    if pkce is not None:
        params["code_challenge"] = pkce.challenge
        params["code_challenge_method"] = pkce.method
    # A hint the platform cannot take is dropped: it only pre-fills a form.
    if login_hint and entry.login_hint_param is not None:
        params[entry.login_hint_param] = login_hint
    params.update(entry.fixed_authorization_params)
    params.update(extra_params)
    parts = urlsplit(base)
    # A configured URL may carry a query of its own (a tenant selector, say): kept first.
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
