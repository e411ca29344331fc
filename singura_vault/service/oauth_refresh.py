"""Refreshing a connection's OAuth tokens: once, whoever asks, and never losing one.

Guarantees (docs/oauth.md):
- Single flight. Callers in one process share one refresh (an in-process task, for
  economy); processes share one through the connection's row lock in PostgreSQL,
  which the refresh transaction holds from before it reads the refresh token until
  the new tokens commit. A peer that waited finds fresh tokens and uses them.
- Rotated refresh tokens are never lost silently. The new access and refresh token
  commit together. An intent, committed before the provider is called, survives a
  vault that dies before that commit; the next refresh then knows that the
  provider's invalid_grant means a lost rotation, and says so, instead of looping.
- Failure states. Transient failures leave the connection ACTIVE and start a
  cooldown; permanent ones move it to EXPIRED, REVOKED or ERROR with the reason,
  through the connection's audited status lifecycle.

The refresh itself runs in a task of its own and is shielded from its callers: a
caller that gives up (deadline, cancellation) does not roll back a refresh whose
provider may already have rotated the token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from singura_vault import metrics
from singura_vault.domain import (
    ConnectionStatus,
    Credential,
    CredentialSlot,
    CredentialType,
    EncryptedValue,
    ExpirySource,
    OAuthClientRecord,
    Platform,
    StoredDataKey,
)
from singura_vault.errors import FailedPrecondition, InvariantBroken, Unavailable, VaultError
from singura_vault.logs import get_logger
from singura_vault.providers import (
    CATALOGUE,
    FailureKind,
    OAuthClientConfig,
    RefreshFailed,
    TokenEndpointClient,
    TokenGrant,
    UnsafeEndpoint,
)
from singura_vault.repositories.oauth import OAuthRepository, RefreshTransaction
from singura_vault.service.sealing import SealingService

log = get_logger(__name__)

_Sealer = Callable[[CredentialSlot], Awaitable[EncryptedValue]]

LOST_ROTATION = (
    "refresh token was rotated by a refresh whose result was lost; the user must reconnect"
)


@dataclass(frozen=True)
class RefreshPolicy:
    cooldown: timedelta = timedelta(seconds=60)
    margin: timedelta = timedelta(minutes=5)
    # How long a refresh waits for another one of the same connection: longer than
    # the provider call it waits for may take.
    lock_wait_s: float = 25.0
    # Refreshes at once in one process: each holds a database connection while the
    # provider answers, and needs a second one for its intent.
    max_concurrent: int = 8


async def client_config(sealing: SealingService, client: OAuthClientRecord) -> OAuthClientConfig:
    """What the token endpoint client needs of a stored OAuth client, secret opened."""
    settings = client.settings
    return OAuthClientConfig(
        platform=settings.platform,
        client_id=settings.client_id,
        client_secret=await sealing.open_client_secret(client),
        token_url=settings.token_url,
        revocation_url=settings.revocation_url,
        scopes=settings.scopes,
        auth_method=settings.auth_method,
    )


# A caller's min_valid_for (or SINGURA_REFRESH_MARGIN) longer than the provider's
# tokens live can never be met: every token would be due as soon as it was issued,
# and every call would refresh and rotate the refresh token. So the margin is capped
# at this fraction of the token's own lifetime. One half: a token is handed out while
# at least half its life remains, and is refreshed once when half of it is spent, so
# the provider sees at most two refreshes per token lifetime, however often callers
# ask. (A smaller fraction would hand out tokens closer to expiry; a larger one, up to
# 1, would bring back the refresh on every call.)
MAX_MARGIN_FRACTION = 0.5


def token_lifetime(expires_in: int | None, platform: Platform) -> tuple[int | None, ExpirySource]:
    """The access token's lifetime in seconds, and where it came from: the answer's
    expires_in, else the catalogue's documented lifetime (Salesforce sends none), else
    none known. Without the fallback a token of such a provider would look valid
    forever, and the vault would refresh it only on keep-alive (Nango #6775)."""
    if expires_in:
        return expires_in, ExpirySource.PROVIDER
    default = CATALOGUE[platform].default_expires_in_s
    if default:
        return default, ExpirySource.CATALOGUE
    return None, ExpirySource.NONE


async def _record_scope_change(tx: RefreshTransaction, reported: Sequence[str] | None) -> None:
    """A refresh answer that reports other scopes than the connection's granted ones
    updates them, in the refresh's transaction, and appends connection.scopes_changed
    (the lists only). An answer without scope says nothing about them: kept as they are."""
    if reported is None:
        return
    before = tx.connection.permissions_granted
    after = tuple(dict.fromkeys(reported))  # the provider's order, without repeats
    if set(after) == set(before):
        return
    await tx.set_granted_scopes(after)
    await tx.audit(
        "connection.scopes_changed",
        "success",
        {
            "platform": tx.connection.platform.value,
            "before": list(before),
            "after": list(after),
            "added": sorted(set(after) - set(before)),
            "removed": sorted(set(before) - set(after)),
            "requested_scopes": list(tx.connection.requested_scopes),
        },
    )
    log.info(
        "oauth_scopes_changed",
        connection_id=str(tx.connection.id),
        platform=tx.connection.platform.value,
        added=sorted(set(after) - set(before)),
        removed=sorted(set(before) - set(after)),
    )


def valid_for(credential: Credential, now: datetime) -> timedelta | None:
    """How much longer a token is valid; None if its expiry is unknown (never stale)."""
    if credential.expires_at is None:
        return None
    return credential.expires_at - now


def effective_margin(credential: Credential, window: timedelta) -> timedelta:
    """window, capped at MAX_MARGIN_FRACTION of the token's lifetime: from when its
    version was stored (for a refresh: issued) to its expiry."""
    if credential.expires_at is None:
        return window
    lifetime = max(credential.expires_at - credential.created_at, timedelta(0))
    return min(window, lifetime * MAX_MARGIN_FRACTION)


def is_fresh(credential: Credential, now: datetime, window: timedelta) -> bool:
    """True unless the token expires within window (capped: effective_margin)."""
    remaining = valid_for(credential, now)
    return remaining is None or remaining > effective_margin(credential, window)


class TokenRefresher:
    """Refreshes connections' tokens with their stored refresh token."""

    def __init__(
        self,
        repository: OAuthRepository,
        sealing: SealingService,
        endpoint: TokenEndpointClient,
        policy: RefreshPolicy | None = None,
    ) -> None:
        self._repository = repository
        self._sealing = sealing
        self._endpoint = endpoint
        self._policy = policy or RefreshPolicy()
        # Refreshes callers may join (not forced ones), and every refresh running.
        self._inflight: dict[tuple[UUID, UUID], asyncio.Task[bool]] = {}
        self._running: set[asyncio.Task[bool]] = set()
        self._slots = asyncio.Semaphore(self._policy.max_concurrent)

    @property
    def policy(self) -> RefreshPolicy:
        return self._policy

    async def ensure_fresh(
        self,
        organization_id: UUID,
        connection_id: UUID,
        window: timedelta,
        *,
        force: bool,
        respect_cooldown: bool = True,
    ) -> bool:
        """Refresh unless the access token stays valid beyond window (force: always,
        cooldown or not); True if a refresh happened for this call or one it joined.
        The background worker passes respect_cooldown=False: its claim already waited
        out the cooldown, and leased the connection by moving next_refresh_at."""
        key = (organization_id, connection_id)
        task = None if force else self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(
                self._refresh(
                    organization_id, connection_id, window, force or not respect_cooldown, force
                ),
                name=f"oauth-refresh-{connection_id}",
            )
            self._running.add(task)
            if not force:
                self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    async def drain(self) -> None:
        """Wait for the refreshes in flight (at shutdown: none is cut off mid-way)."""
        if self._running:
            await asyncio.wait(set(self._running))

    def _forget(self, key: tuple[UUID, UUID], done: asyncio.Task[bool]) -> None:
        self._running.discard(done)
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failure is its callers' to report

    async def _refresh(
        self,
        organization_id: UUID,
        connection_id: UUID,
        window: timedelta,
        skip_cooldown: bool,
        force: bool,
    ) -> bool:
        async with self._slots:
            started = time.monotonic()
            async with self._repository.refresh_transaction(
                organization_id, connection_id, self._policy.lock_wait_s
            ) as tx:
                metrics.OAUTH_LOCK_WAIT.observe(time.monotonic() - started)
                outcome = await self._refresh_locked(tx, window, skip_cooldown, force)
        if isinstance(outcome, VaultError):
            raise outcome
        return outcome

    async def _refresh_locked(
        self, tx: RefreshTransaction, window: timedelta, skip_cooldown: bool, force: bool
    ) -> bool | VaultError:
        """The refresh under the connection's lock: an error is returned, not raised,
        so that what it recorded commits with the transaction."""
        connection = tx.connection
        now = datetime.now(UTC)
        access = tx.tokens.get(CredentialType.ACCESS_TOKEN)
        refresh = tx.tokens.get(CredentialType.REFRESH_TOKEN)
        if not force and access is not None and is_fresh(access.credential, now, window):
            return False  # refreshed by a peer while this one waited for the lock
        refusal = _refusal(tx, refresh is not None, now, skip_cooldown)
        if refusal is not None:
            return refusal
        if refresh is None:
            raise InvariantBroken("_refresh_locked: refresh is None")
        if tx.client is None:
            raise InvariantBroken("_refresh_locked: tx.client is None")
        data_key = await tx.lock_data_key()
        if data_key is None:
            return FailedPrecondition(
                f"organization {connection.organization_id} has no live data key to seal "
                "the new tokens with"
            )
        config = await client_config(self._sealing, tx.client)
        refresh_token = await self._sealing.open_stored(refresh)
        lost_before = tx.state.intent_started_at is not None
        used_version = refresh.credential.version
        await self._repository.record_intent(
            connection.organization_id, connection.id, used_version
        )
        started = time.monotonic()
        try:
            grant = await self._endpoint.refresh(
                config, refresh_token, workspace_id=connection.platform_workspace_id
            )
        except UnsafeEndpoint as exc:
            await tx.failed(str(exc), None, keep_intent=False, code="unsafe_endpoint")
            return FailedPrecondition(f"{exc}; correct it with SetOAuthClient")
        except RefreshFailed as failure:
            metrics.OAUTH_REFRESHES.labels(connection.platform.value, failure.kind.value).inc()
            return await self._failed(tx, failure, lost_before, used_version, now)
        finally:
            metrics.OAUTH_REFRESH_SECONDS.labels(connection.platform.value).observe(
                time.monotonic() - started
            )
        await self._store_grant(tx, data_key, grant, refresh_token, now)
        metrics.OAUTH_REFRESHES.labels(connection.platform.value, "success").inc()
        return True

    async def _store_grant(
        self,
        tx: RefreshTransaction,
        data_key: StoredDataKey,
        grant: TokenGrant,
        old_refresh_token: str,
        now: datetime,
    ) -> None:
        lifetime, expiry_source = token_lifetime(grant.expires_in, tx.connection.platform)
        expires_at = now + timedelta(seconds=lifetime) if lifetime else None

        def sealer(value: str) -> _Sealer:
            async def seal(slot: CredentialSlot) -> EncryptedValue:
                return await self._sealing.seal_for(slot, value.encode("utf-8"))

            return seal

        access = await tx.store(
            data_key, CredentialType.ACCESS_TOKEN, expires_at, sealer(grant.access_token)
        )
        rotated = grant.refresh_token is not None and grant.refresh_token != old_refresh_token
        refresh_version = None
        if rotated:
            if grant.refresh_token is None:
                raise InvariantBroken("sealer: grant.refresh_token is None")
            stored = await tx.store(
                data_key, CredentialType.REFRESH_TOKEN, None, sealer(grant.refresh_token)
            )
            refresh_version = stored.version
        # Due again a margin before it expires, the margin capped as GetAccessToken caps
        # it (effective_margin): at least half the token's lifetime from now, so a
        # provider whose tokens live shorter than the margin is not refreshed in a loop.
        next_at = expires_at - effective_margin(access, self._policy.margin) if expires_at else None
        await tx.succeeded(next_at, expiry_source)
        await tx.audit(
            "connection.token_refreshed",
            "success",
            {
                "platform": tx.connection.platform.value,
                "access_token_version": access.version,
                "refresh_token_rotated": rotated,
                "refresh_token_version": refresh_version,
                "expire_time": expires_at.isoformat() if expires_at else None,
                "expiry_source": expiry_source.value,
            },
        )
        await _record_scope_change(tx, grant.scopes)
        log.info(
            "oauth_token_refreshed",
            connection_id=str(tx.connection.id),
            platform=tx.connection.platform.value,
            access_token_version=access.version,
            refresh_token_rotated=rotated,
            expires_in=lifetime,
        )

    async def _failed(
        self,
        tx: RefreshTransaction,
        failure: RefreshFailed,
        lost_before: bool,
        used_version: int,
        now: datetime,
    ) -> bool | VaultError:
        connection = tx.connection
        if failure.kind is FailureKind.TRANSIENT:
            delay = self._policy.cooldown.total_seconds()
            if failure.retry_after_s is not None:
                delay = max(delay, failure.retry_after_s)
            next_at = now + timedelta(seconds=delay)
            await tx.failed(
                failure.reason,
                next_at,
                keep_intent=failure.outcome_unknown,
                code=failure.oauth_error,
            )
            await self._record_failure(tx, failure, None)
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
        status, reason = _permanent(failure, lost_before)
        await tx.failed(reason, None, keep_intent=False, code=failure.oauth_error)
        await tx.set_status(status, reason)
        await self._record_failure(tx, failure, status)
        return FailedPrecondition(
            f"connection {connection.id} cannot be refreshed and is now "
            f"{status.value.upper()}: {reason}; {_recovery(status)}",
            reason="REFRESH_REJECTED",
        )

    async def _record_failure(
        self, tx: RefreshTransaction, failure: RefreshFailed, status: ConnectionStatus | None
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


def _refusal(
    tx: RefreshTransaction, has_refresh_token: bool, now: datetime, skip_cooldown: bool
) -> VaultError | None:
    """Why this connection cannot be refreshed now, if it cannot."""
    connection = tx.connection
    if connection.status is not ConnectionStatus.ACTIVE:
        return FailedPrecondition(
            f"connection {connection.id} is {connection.status.value.upper()}"
            + (f" ({connection.status_reason})" if connection.status_reason else "")
            + f"; it is refreshed only while ACTIVE: {_recovery(connection.status)}",
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


def _recovery(status: ConnectionStatus) -> str:
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


def _permanent(failure: RefreshFailed, lost_before: bool) -> tuple[ConnectionStatus, str]:
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
