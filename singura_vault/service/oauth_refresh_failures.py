"""Why a refresh does not happen, and what a failed one does to its connection.

``refusal``: a connection that cannot be refreshed now (not ACTIVE, no refresh token, no
OAuth client, cooling down after a failure). ``failed``: a provider's refusal, under the
connection's lock: a transient one starts a cooldown and leaves the connection ACTIVE;
a permanent one moves it to EXPIRED, REVOKED or ERROR with the reason, and an
invalid_grant after a lost rotation says so (``LOST_ROTATION``). Each failure is
audited (``connection.token_refresh_failed``) and logged with codes and ids, never the
provider's words. An error is returned, not raised, so that what was recorded commits
with the refresh's transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from singura_vault.domain.connections import ConnectionStatus
from singura_vault.errors import FailedPrecondition, Unavailable, VaultError
from singura_vault.logs import get_logger
from singura_vault.providers import FailureKind, RefreshFailed
from singura_vault.repositories.oauth import RefreshTransaction

log = get_logger(__name__)

LOST_ROTATION = (
    "refresh token was rotated by a refresh whose result was lost; the user must reconnect"
)


async def failed(
    tx: RefreshTransaction,
    failure: RefreshFailed,
    lost_before: bool,
    used_version: int,
    now: datetime,
    cooldown: timedelta,
) -> bool | VaultError:
    """A provider's refusal of the refresh: recorded on the connection and audited;
    False when a peer's rotation explains it (nothing failed), else the error."""
    connection = tx.connection
    if failure.kind is FailureKind.TRANSIENT:
        delay = cooldown.total_seconds()
        if failure.retry_after_s is not None:
            delay = max(delay, failure.retry_after_s)
        next_at = now + timedelta(seconds=delay)
        await tx.failed(
            failure.reason,
            next_at,
            keep_intent=failure.outcome_unknown,
            code=failure.oauth_error,
        )
        await _record_failure(tx, failure, None)
        return Unavailable(
            f"refreshing connection {connection.id} failed: {failure.reason}; the vault "
            f"tries again from {next_at:%Y-%m-%dT%H:%M:%SZ}",
            reason="PROVIDER_UNAVAILABLE",
        )
    if failure.kind is FailureKind.INVALID_GRANT:
        current = await tx.refresh_token_version()
        if current is not None and current != used_version:
            # A peer rotated it outside this lock and committed: not an error.
            await tx.clear_intent()
            return False
    status, reason = permanent(failure, lost_before)
    await tx.failed(reason, None, keep_intent=False, code=failure.oauth_error)
    await tx.set_status(status, reason)
    await _record_failure(tx, failure, status)
    return FailedPrecondition(
        f"connection {connection.id} cannot be refreshed and is now "
        f"{status.value.upper()}: {reason}; {recovery(status)}",
        reason="REFRESH_REJECTED",
    )


async def _record_failure(
    tx: RefreshTransaction, failure: RefreshFailed, status: ConnectionStatus | None
) -> None:
    """Audit and log a failed refresh: codes and ids, never the provider's words."""
    details = {
        "platform": tx.connection.platform.value,
        "kind": failure.kind.value,
        "oauth_error": failure.oauth_error,
        "outcome_unknown": failure.outcome_unknown,
        "new_status": status.value if status is not None else None,
    }
    await tx.audit("connection.token_refresh_failed", "failure", details)
    log.warning(
        "oauth_refresh_failed",
        connection_id=str(tx.connection.id),
        retry_after_s=failure.retry_after_s,
        **details,
    )


def refusal(
    tx: RefreshTransaction, has_refresh_token: bool, now: datetime, skip_cooldown: bool
) -> VaultError | None:
    """Why this connection cannot be refreshed now, if it cannot."""
    connection = tx.connection
    if connection.status is not ConnectionStatus.ACTIVE:
        return FailedPrecondition(
            f"connection {connection.id} is {connection.status.value.upper()}"
            + (f" ({connection.status_reason})" if connection.status_reason else "")
            + f"; it is refreshed only while ACTIVE: {recovery(connection.status)}",
            reason="CONNECTION_NOT_ACTIVE",
        )
    if not has_refresh_token:
        return FailedPrecondition(
            f"connection {connection.id} has no refresh token; store one with StoreCredential "
            "(credential type: refresh token)",
            reason="NO_REFRESH_TOKEN",
        )
    if tx.client is None:
        return FailedPrecondition(
            f"organization {connection.organization_id} has no OAuth client for "
            f"{connection.platform.value}; register one with SetOAuthClient",
            reason="NO_OAUTH_CLIENT",
        )
    state = tx.state
    if (
        not skip_cooldown
        and state.failure_count > 0
        and state.next_refresh_at is not None
        and now < state.next_refresh_at
    ):
        return Unavailable(
            f"refreshing connection {connection.id} failed {state.failure_count} time(s) "
            f"(last: {state.last_error or 'unknown'}); the next attempt is allowed from "
            f"{state.next_refresh_at:%Y-%m-%dT%H:%M:%SZ} (RefreshConnection with force "
            "tries now)",
            reason="REFRESH_COOLING_DOWN",
        )
    return None


def recovery(status: ConnectionStatus) -> str:
    """How a connection the vault will not refresh becomes refreshable again: the same
    words when the refresh fails and on every call after. The status reason says what to
    fix first where that is not the user's grant (the OAuth client, after invalid_client:
    fixed with SetOAuthClient, and the user need not reconnect)."""
    if status in (ConnectionStatus.EXPIRED, ConnectionStatus.REVOKED):
        return (
            "when the user has reconnected, store the new tokens with StoreCredential and "
            "set the connection ACTIVE with UpdateConnectionStatus"
        )
    return "once the cause is fixed, set the connection ACTIVE with UpdateConnectionStatus"


def permanent(failure: RefreshFailed, lost_before: bool) -> tuple[ConnectionStatus, str]:
    """The status a permanent failure moves the connection to, and why."""
    if failure.kind is FailureKind.INVALID_GRANT:
        if lost_before:
            return ConnectionStatus.ERROR, LOST_ROTATION
        return ConnectionStatus.EXPIRED, failure.reason
    if failure.kind is FailureKind.REVOKED:
        return ConnectionStatus.REVOKED, failure.reason
    # invalid_client and the like: the grant may be fine, the client is not. ERROR
    # rather than EXPIRED, so that fixing the client (SetOAuthClient) and setting the
    # connection ACTIVE again recovers it without the user reconnecting.
    return ConnectionStatus.ERROR, failure.reason
