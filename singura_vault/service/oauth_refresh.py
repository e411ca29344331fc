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

When a token is due is oauth_token_lifetime.py's to say; what a refusal or a failed
refresh does to the connection, oauth_refresh_failures.py's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from singura_vault import metrics
from singura_vault.domain.credentials import CredentialType
from singura_vault.domain.sealed import StoredDataKey
from singura_vault.errors import FailedPrecondition, InvariantBroken, VaultError
from singura_vault.logs import get_logger
from singura_vault.providers import (
    RefreshFailed,
    TokenEndpointClient,
    TokenGrant,
    UnsafeEndpoint,
)
from singura_vault.repositories.oauth import OAuthRepository, RefreshTransaction
from singura_vault.service.oauth_clients import client_config
from singura_vault.service.oauth_refresh_failures import failed, refusal
from singura_vault.service.oauth_token_lifetime import effective_margin, is_fresh, token_lifetime
from singura_vault.service.sealing import SealingService

log = get_logger(__name__)


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
        refused = refusal(tx, refresh is not None, now, skip_cooldown)
        if refused is not None:
            return refused
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
            return await failed(tx, failure, lost_before, used_version, now, self._policy.cooldown)
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

        access = await tx.store(
            data_key,
            CredentialType.ACCESS_TOKEN,
            expires_at,
            self._sealing.sealer_of(grant.access_token),
        )
        rotated = grant.refresh_token is not None and grant.refresh_token != old_refresh_token
        refresh_version = None
        if rotated:
            if grant.refresh_token is None:
                raise InvariantBroken("sealer: grant.refresh_token is None")
            stored = await tx.store(
                data_key,
                CredentialType.REFRESH_TOKEN,
                None,
                self._sealing.sealer_of(grant.refresh_token),
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
