"""The background refresh: every vault process keeps due tokens fresh.

Each pass claims due connections across organizations in PostgreSQL
(singura.oauth_refresh_claim, migration 016: FOR UPDATE SKIP LOCKED, then a lease),
so two processes never take the same connection, and refreshes each through the
same single-flight path as GetAccessToken. Due means: the access token expires
within SINGURA_REFRESH_MARGIN (or there is none), or the connection was not
refreshed for SINGURA_REFRESH_KEEPALIVE (Google drops refresh tokens unused for six
months). A failure is recorded by the refresh itself (cooldown, status change); the
pass goes on with the next connection.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from singura_vault.errors import VaultError
from singura_vault.logs import get_logger
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.service.oauth_refresh import TokenRefresher

log = get_logger(__name__)

CLAIM_BATCH = 20
# At most this many refreshes per pass; the rest wait for the next one (a pass must
# end, whatever the providers answer).
MAX_PER_PASS = 1000


class RefreshWorker:
    def __init__(
        self,
        repository: OAuthRepository,
        refresher: TokenRefresher,
        *,
        keepalive: timedelta,
        interval_s: float,
    ) -> None:
        self._repository = repository
        self._refresher = refresher
        self._keepalive = keepalive
        self._interval_s = interval_s
        # A claimed connection is not claimed again for this long, unless its refresh
        # records an outcome first: longer than one refresh can take.
        self._lease = timedelta(seconds=refresher.policy.lock_wait_s * 2)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the loop must outlive a failed pass; retried later
                log.warning("oauth_refresh_pass_failed", error_type=type(exc).__name__)
            await asyncio.sleep(self._interval_s)

    async def run_once(self) -> int:
        """Refresh every connection due now (claimed in batches); returns how many
        refreshes this pass attempted."""
        margin = self._refresher.policy.margin
        attempted = 0
        while attempted < MAX_PER_PASS and (
            claims := await self._repository.claim_due(
                margin, self._keepalive, self._lease, CLAIM_BATCH
            )
        ):
            for claim in claims:
                attempted += 1
                try:
                    await self._refresher.ensure_fresh(
                        claim.organization_id,
                        claim.connection_id,
                        margin,
                        force=claim.keepalive,
                        respect_cooldown=False,
                    )
                except VaultError as exc:
                    # Recorded (state, audit, log) by the refresh; nothing to add.
                    log.info(
                        "oauth_background_refresh_skipped",
                        connection_id=str(claim.connection_id),
                        code=exc.code.value,
                    )
        return attempted
