"""What a refresh, a code exchange or a revocation hands back: the grants, the failure,
the result.

A refresh either returns a TokenGrant or raises RefreshFailed with a FailureKind the
caller can act on: retry later (TRANSIENT), ask the user to reconnect (INVALID_GRANT,
REVOKED), or fix the OAuth client configuration (INVALID_CLIENT). Because providers
rotate refresh tokens, RefreshFailed also says whether the request may have reached
the provider with its answer lost (outcome_unknown): then the stored refresh token
may already be dead, and the caller must not treat a later invalid_grant as the
user's doing.

Secrets never leave the package in text: a failure carries only an error code passed
through sanitize_error_code and a sentence written in this package.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

_ERROR_CODE = re.compile(r"^[a-z0-9_.-]{1,64}$")
UNRECOGNIZED = "unrecognized"


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


@dataclass(frozen=True)
class CodeGrant:
    """A successful authorization-code exchange (RFC 6749 §4.1.3). Its repr shows no token."""

    access_token: str = field(repr=False)
    # None when the provider issued no refresh token (e.g. Slack without rotation).
    refresh_token: str | None = field(repr=False)
    # Seconds; the catalogue's default_expires_in_s when the answer has none.
    expires_in: int | None
    # Granted (for Slack: bot) scopes from the answer's "scope"; None if absent.
    scopes: tuple[str, ...] | None
    # Slack's authed_user.scope; None elsewhere.
    user_scopes: tuple[str, ...] | None
    # Slack team.id; Microsoft tid; Google hd; None if unknown.
    workspace_id: str | None
    # Slack authed_user.id; Microsoft oid; Google sub; None if unknown.
    user_id: str | None
    # True when the answer had no expires_in and expires_in is the catalogue's default
    # (the connection's expiry_source says so).
    expiry_from_catalogue: bool = False


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
