"""What a failed refresh means: the FailureKind and the sentence for each way it fails.

Covers the provider's explicit OAuth error codes (RFC 6749 §5.2 and the providers'
own), HTTP statuses without a usable grant, and answers lost on the wire. Each
failure carries a sanitized code and a sentence written here, never the provider's
body text: error_description is never read, since providers echo request
parameters in it.
"""

from __future__ import annotations

from collections.abc import Mapping

from singura_vault.providers.egress import EgressSettings
from singura_vault.providers.exchange import Answer, ExchangeError, retry_after
from singura_vault.providers.outcomes import (
    UNRECOGNIZED,
    FailureKind,
    RefreshFailed,
    sanitize_error_code,
)

_ROTATION_HINT = "; the provider may have rotated the refresh token"
# The provider refused the client or the request, not the refresh token (that would be
# invalid_grant): the user's grant stands, and fixing the client is the whole remedy.
_CLIENT_NOT_GRANT = "; the refresh token was not refused, so the user need not reconnect"

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


def refusal(code: str, *, fallback: FailureKind) -> RefreshFailed:
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
            f"the provider rejected the OAuth client ({code}): correct the client_id and "
            f"client_secret with SetOAuthClient{_CLIENT_NOT_GRANT}"
        )
    elif kind is FailureKind.INVALID_CLIENT:
        reason = (
            f"the provider rejected the client configuration ({code}): correct the scopes, "
            f"auth method or token_url with SetOAuthClient{_CLIENT_NOT_GRANT}"
        )
    else:
        reason = f"the provider refused the refresh for now ({code}); retry later"
    return RefreshFailed(kind, code, reason)


def unparseable() -> RefreshFailed:
    """A 2xx without a usable grant: it may have carried a rotated refresh token."""
    return RefreshFailed(
        FailureKind.TRANSIENT,
        "unparseable",
        "the token endpoint answered success without a usable access_token" + _ROTATION_HINT,
        outcome_unknown=True,
    )


def http_failure(answer: Answer) -> RefreshFailed:
    """The failure a non-2xx answer from the token endpoint describes."""
    status = answer.status
    if 300 <= status < 400:
        return RefreshFailed(
            FailureKind.TRANSIENT,
            f"http_{status}",
            f"the token endpoint answered with a redirect (HTTP {status}), which is not "
            "followed: check the token_url given to SetOAuthClient",
        )
    if status == 429 or status >= 500:
        delay = retry_after(answer.headers) if status in (429, 503) else None
        what = "is rate limiting" if status == 429 else "failed"
        when = f"retry in {delay:.0f} s" if delay is not None else "retry later"
        return RefreshFailed(
            FailureKind.TRANSIENT,
            f"http_{status}",
            f"the token endpoint {what} (HTTP {status}); {when}",
            retry_after_s=delay,
        )
    if status in (400, 401):
        # RFC 6749 §5.2. An unexplained 4xx is deterministic: retrying the same
        # request gets the same answer, so it is the client's configuration.
        document = answer.json_object()
        code = sanitize_error_code(document.get("error")) if document else UNRECOGNIZED
        if code == UNRECOGNIZED and status == 401:
            code = "invalid_client"
        return refusal(code, fallback=FailureKind.INVALID_CLIENT)
    return RefreshFailed(
        FailureKind.TRANSIENT,
        f"http_{status}",
        f"the token endpoint answered HTTP {status}: check the token_url given to SetOAuthClient",
    )


def transport_failure(failure: ExchangeError, settings: EgressSettings) -> RefreshFailed:
    """The failure for a refresh whose answer never arrived whole."""
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
