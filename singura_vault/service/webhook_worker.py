"""The webhook delivery worker: every vault process sends due deliveries, at least once.

Each pass claims due deliveries across organizations in PostgreSQL
(singura.webhook_claim, migration 026: FOR UPDATE SKIP LOCKED, then a lease), so two
processes never attempt one delivery at once; a process killed mid-delivery leaves its
lease to expire and another process attempts the delivery again. Each claimed delivery
is signed (Standard Webhooks, service/webhook_signing.py) with the endpoint's secret,
opened through the sealing gateway for this attempt only, POSTed through the
providers' webhook egress, and its attempt recorded with what follows: delivered (2xx),
retried later (exponential backoff with jitter, while SINGURA_WEBHOOK_RETRY_FOR lasts),
or given up; a 410, or SINGURA_WEBHOOK_DISABLE_AFTER of failures, disables the endpoint
(the database emits webhook.endpoint_disabled in the same transaction).

The schedule runs on an injected clock (tests move it; nothing here sleeps to wait for
time to pass). This module never logs a URL, a secret, a signature or a body.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from singura_vault import metrics
from singura_vault.clock import Clock, utc_now
from singura_vault.errors import VaultError
from singura_vault.logs import get_logger
from singura_vault.providers import SendResult, WebhookSender
from singura_vault.repositories.webhooks import (
    AttemptOutcome,
    SealedSecret,
    WebhookClaim,
    WebhookRepository,
)
from singura_vault.service import webhook_signing
from singura_vault.service.sealing import SealingService
from singura_vault.tasks import WokenLoop

log = get_logger(__name__)

CLAIM_BATCH = 32
# The backoff: the n-th retry waits between half and all of min(BASE * 2**(n-1), CAP).
RETRY_BASE = timedelta(seconds=15)
RETRY_CAP = timedelta(hours=2)
# How often the oldest-undelivered gauge is refreshed (monotonic seconds).
GAUGE_INTERVAL_S = 5.0


@dataclass(frozen=True)
class DeliveryPolicy:
    retry_for: timedelta = timedelta(hours=24)
    disable_after: timedelta = timedelta(days=3)
    # Longer than one attempt can take (the egress timeout bounds it): a live holder
    # always records before its lease ends.
    lease: timedelta = timedelta(seconds=30)


def retry_delay(failed_attempts: int, jitter: float) -> timedelta:
    """The wait after the ``failed_attempts``-th failure; ``jitter`` in [0, 1)."""
    exponent = min(failed_attempts - 1, 20)
    ceiling: timedelta = min(RETRY_BASE * (2**exponent), RETRY_CAP)
    return ceiling * (0.5 + 0.5 * jitter)


def payload(claim: WebhookClaim) -> bytes:
    """The JSON body (docs/events.md#webhooks): type, timestamp (the event's time),
    data = the event's data plus organization_id, cursor, connection_id, credential_id
    (endpoint_id too for a webhook.test message)."""
    data: dict[str, Any] = dict(claim.event_data)
    data.update(
        organization_id=str(claim.organization_id),
        cursor=claim.event_cursor,
        connection_id=str(claim.connection_id) if claim.connection_id else None,
        credential_id=str(claim.credential_id) if claim.credential_id else None,
    )
    if claim.event_cursor is None:
        data["endpoint_id"] = str(claim.endpoint_id)
    body = {
        "type": claim.event_type,
        "timestamp": claim.event_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")


class WebhookWorker(WokenLoop):
    def __init__(
        self,
        repository: WebhookRepository,
        sealing: SealingService,
        sender: WebhookSender,
        policy: DeliveryPolicy,
        *,
        interval_s: float = 1.0,
        clock: Clock = utc_now,
        jitter: Callable[[], float] = random.random,
        batch: int = CLAIM_BATCH,
    ) -> None:
        self._repository = repository
        self._sealing = sealing
        self._sender = sender
        self._policy = policy
        self._clock = clock
        self._jitter = jitter
        self._batch = batch
        # The first pass runs at once: deliveries may be due from before the start.
        super().__init__(interval_s, wait_first=False)
        self._gauge_at = 0.0

    async def _pass(self) -> bool:
        """One batch; a full batch means more may be due, so the next runs at once."""
        claimed = 0
        try:
            claimed = await self.run_once()
        except Exception as exc:  # the loop must outlive a failed pass; retried later
            log.warning("webhook_pass_failed", error_type=type(exc).__name__)
        return claimed >= self._batch

    async def run_once(self) -> int:
        """Claim the deliveries due now (one batch) and attempt each; returns how many."""
        claims = await self._repository.claim(self._clock(), self._policy.lease, self._batch)
        if claims:
            await asyncio.gather(*(self._deliver(claim) for claim in claims))
        await self._refresh_gauge()
        return len(claims)

    async def _deliver(self, claim: WebhookClaim) -> None:
        now = self._clock()
        body = payload(claim)
        msg_id = webhook_signing.message_id(claim.delivery_id)
        try:
            keys = await self._keys(claim)
        except VaultError as exc:
            result = SendResult("secret_unavailable", None, "", 0.0, exc.message[:500])
        else:
            signed = webhook_signing.headers(keys, msg_id, int(now.timestamp()), body)
            result = await self._sender.send(claim.url, signed, body)
            metrics.WEBHOOK_DELIVERY_SECONDS.observe(result.latency_ms / 1000.0)
        metrics.WEBHOOK_DELIVERIES.labels(result.outcome).inc()
        outcome = self._consequence(claim, now, result)
        try:
            disabled = await self._repository.record_attempt(
                claim, now, outcome, self._policy.disable_after
            )
        except VaultError as exc:
            # The lease runs out and the delivery is attempted again: at least once.
            log.warning(
                "webhook_record_failed",
                delivery_id=str(claim.delivery_id),
                error_type=type(exc).__name__,
            )
            return
        log.info(
            "webhook_attempt",
            organization_id=str(claim.organization_id),
            endpoint_id=str(claim.endpoint_id),
            delivery_id=str(claim.delivery_id),
            attempt=claim.attempts + 1,
            outcome=result.outcome,
            response_code=result.status_code,
            state=outcome.state,
        )
        if disabled:
            metrics.WEBHOOK_ENDPOINTS_DISABLED.labels(disabled).inc()
            log.warning(
                "webhook_endpoint_disabled",
                organization_id=str(claim.organization_id),
                endpoint_id=str(claim.endpoint_id),
                reason=disabled,
            )

    def _consequence(
        self, claim: WebhookClaim, now: datetime, result: SendResult
    ) -> AttemptOutcome:
        state, next_at = "pending", None
        if result.outcome == "delivered":
            state = "delivered"
        elif result.outcome == "gone":
            state = "failed"
        else:
            next_at = now + retry_delay(claim.attempts + 1, self._jitter())
            if next_at > claim.scheduled_at + self._policy.retry_for:
                state, next_at = "failed", None
        return AttemptOutcome(
            outcome=result.outcome,
            response_code=result.status_code,
            latency_ms=result.latency_ms,
            response_body=result.body_prefix,
            error=result.error,
            state=state,
            next_attempt_at=next_at,
            gone=result.outcome == "gone",
        )

    async def _keys(self, claim: WebhookClaim) -> list[bytes]:
        """The current secret (required) and the previous one while its overlap lasts
        (skipped, with a log line, if it cannot be opened)."""
        keys = [await self._open(claim, claim.secret)]
        if claim.previous_secret is not None:
            try:
                keys.append(await self._open(claim, claim.previous_secret))
            except VaultError as exc:
                log.warning(
                    "webhook_previous_secret_unavailable",
                    endpoint_id=str(claim.endpoint_id),
                    error_type=type(exc).__name__,
                )
        return keys

    async def _open(self, claim: WebhookClaim, secret: SealedSecret) -> bytes:
        return await self._sealing.open_webhook_secret(
            claim.organization_id,
            claim.endpoint_id,
            secret.secret_id,
            secret.value,
            secret.data_key,
        )

    async def _refresh_gauge(self) -> None:
        if time.monotonic() - self._gauge_at < GAUGE_INTERVAL_S:
            return
        self._gauge_at = time.monotonic()
        oldest = await self._repository.oldest_pending()
        age = (self._clock() - oldest).total_seconds() if oldest is not None else 0.0
        metrics.WEBHOOK_OLDEST_UNDELIVERED.set(max(age, 0.0))

    async def aclose(self) -> None:
        await self._sender.aclose()
