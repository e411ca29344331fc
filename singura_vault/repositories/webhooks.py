"""Webhook endpoints, deliveries and attempts: the only module that runs webhook SQL.

Endpoints and deliveries are read and changed in the caller's organization (row-level
security holds it even if a caller named another). The delivery worker, which is in
no organization, claims and records through migration 026's SECURITY DEFINER
functions only. Sealed secrets go in and come out as ciphertext; this module never
sees a secret in the clear.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from singura_vault.db.pool import Database
from singura_vault.domain.sealed import EncryptedValue, StoredDataKey
from singura_vault.errors import FailedPrecondition, InvariantBroken, NotFound
from singura_vault.repositories._rows import utc
from singura_vault.repositories.queries import query


@dataclass(frozen=True, slots=True)
class WebhookEndpointRecord:
    """An endpoint as stored, without its secrets."""

    organization_id: UUID
    id: UUID
    url: str
    description: str
    types: tuple[str, ...]
    enabled: bool
    disabled_reason: str
    failing_since: datetime | None
    previous_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookAttemptRecord:
    attempt: int
    attempted_at: datetime
    outcome: str
    response_code: int | None
    latency_ms: float
    response_body: str
    error: str


@dataclass(frozen=True, slots=True)
class WebhookDeliveryRecord:
    id: UUID
    endpoint_id: UUID
    event_cursor: int | None
    event_type: str
    state: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    finished_at: datetime | None
    last_response_code: int | None
    attempt_list: tuple[WebhookAttemptRecord, ...]


@dataclass(frozen=True)
class SealedSecret:
    """A signing secret as stored: its id (bound into the ciphertext), the ciphertext,
    and the wrapped data key that opens it (None if that key is no longer live)."""

    secret_id: UUID
    value: EncryptedValue = field(repr=False)
    data_key: StoredDataKey | None = field(repr=False)


@dataclass(frozen=True)
class WebhookClaim:
    """One delivery leased to this process: what it takes to sign and send it."""

    organization_id: UUID
    delivery_id: UUID
    endpoint_id: UUID
    claim_token: UUID
    url: str = field(repr=False)  # may carry a consumer's token in its query
    event_cursor: int | None
    event_type: str
    connection_id: UUID | None
    credential_id: UUID | None
    event_data: dict[str, Any]
    event_time: datetime
    attempts: int
    scheduled_at: datetime
    secret: SealedSecret
    previous_secret: SealedSecret | None


@dataclass(frozen=True)
class AttemptOutcome:
    """What webhook_record_attempt stores for one attempt."""

    outcome: str
    response_code: int | None
    latency_ms: float
    response_body: str
    error: str
    # 'pending' (with next_attempt_at), 'delivered' or 'failed'.
    state: str
    next_attempt_at: datetime | None
    gone: bool


def _endpoint(row: asyncpg.Record) -> WebhookEndpointRecord:
    return WebhookEndpointRecord(
        organization_id=row["organization_id"],
        id=row["id"],
        url=row["url"],
        description=row["description"],
        types=tuple(row["types"]),
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        failing_since=utc(row["failing_since"]),
        previous_expires_at=utc(row["previous_expires_at"]),
        created_at=utc(row["created_at"]) or row["created_at"],
        updated_at=utc(row["updated_at"]) or row["updated_at"],
    )


def _attempt(item: dict[str, Any]) -> WebhookAttemptRecord:
    return WebhookAttemptRecord(
        attempt=int(item["attempt"]),
        attempted_at=datetime.fromisoformat(item["attempted_at"]),
        outcome=item["outcome"],
        response_code=item["response_code"],
        latency_ms=float(item["latency_ms"]),
        response_body=item["response_body"],
        error=item["error"],
    )


def _delivery(row: asyncpg.Record) -> WebhookDeliveryRecord:
    attempts = row["attempt_list"]
    if isinstance(attempts, str):
        attempts = json.loads(attempts)
    return WebhookDeliveryRecord(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        event_cursor=row["event_cursor"],
        event_type=row["event_type"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=utc(row["next_attempt_at"]) or row["next_attempt_at"],
        created_at=utc(row["created_at"]) or row["created_at"],
        finished_at=utc(row["finished_at"]),
        last_response_code=row["last_response_code"],
        attempt_list=tuple(_attempt(a) for a in attempts),
    )


def _sealed(
    org: UUID,
    secret_id: UUID | None,
    ciphertext: bytes | None,
    nonce: bytes | None,
    key_version: int | None,
    root_key_id: str | None,
    wrapped_key: bytes | None,
) -> SealedSecret | None:
    if secret_id is None or ciphertext is None or nonce is None or key_version is None:
        return None
    data_key = (
        StoredDataKey(org, key_version, root_key_id, wrapped_key)
        if root_key_id is not None and wrapped_key is not None
        else None
    )
    return SealedSecret(secret_id, EncryptedValue(nonce, ciphertext, "", key_version), data_key)


def _claim(row: asyncpg.Record) -> WebhookClaim:
    org = row["organization_id"]
    secret = _sealed(
        org,
        row["secret_id"],
        row["secret_ciphertext"],
        row["secret_nonce"],
        row["key_version"],
        row["root_key_id"],
        row["wrapped_key"],
    )
    # NOT NULL columns
    if secret is None:
        raise InvariantBroken("_claim: secret is None")
    data = row["event_data"]
    return WebhookClaim(
        organization_id=org,
        delivery_id=row["delivery_id"],
        endpoint_id=row["endpoint_id"],
        claim_token=row["claim_token"],
        url=row["url"],
        event_cursor=row["event_cursor"],
        event_type=row["event_type"],
        connection_id=row["connection_id"],
        credential_id=row["credential_id"],
        event_data=json.loads(data) if isinstance(data, str) else dict(data),
        event_time=utc(row["event_time"]) or row["event_time"],
        attempts=row["attempts"],
        scheduled_at=utc(row["scheduled_at"]) or row["scheduled_at"],
        secret=secret,
        previous_secret=_sealed(
            org,
            row["previous_secret_id"],
            row["previous_secret_ciphertext"],
            row["previous_secret_nonce"],
            row["previous_key_version"],
            row["previous_root_key_id"],
            row["previous_wrapped_key"],
        ),
    )


def _not_found(endpoint_id: UUID) -> NotFound:
    return NotFound(
        f"webhook endpoint {endpoint_id} not found", reason="WEBHOOK_ENDPOINT_NOT_FOUND"
    )


class WebhookRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- endpoints (the caller's organization) -------------------------------------------

    async def create(
        self,
        organization_id: UUID,
        endpoint_id: UUID,
        url: str,
        description: str,
        types: Sequence[str],
        secret_id: UUID,
        sealed: EncryptedValue,
    ) -> WebhookEndpointRecord:
        async with self._db.tenant(organization_id) as conn:
            row = await conn.fetchrow(
                query("webhook_endpoint_insert"),
                organization_id,
                endpoint_id,
                url,
                description,
                list(types),
                secret_id,
                sealed.ciphertext,
                sealed.nonce,
                sealed.key_version,
            )
        if row is None:
            raise InvariantBroken("create: row is None")
        return _endpoint(row)

    async def get(self, organization_id: UUID, endpoint_id: UUID) -> WebhookEndpointRecord:
        async with self._db.tenant(organization_id, read_only=True) as conn:
            row = await conn.fetchrow(query("webhook_endpoint_get"), organization_id, endpoint_id)
        if row is None:
            raise _not_found(endpoint_id)
        return _endpoint(row)

    async def endpoints(
        self, organization_id: UUID, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[WebhookEndpointRecord]:
        rows = await self._db.fetch_scoped(
            organization_id,
            query("webhook_endpoints_list"),
            organization_id,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [_endpoint(r) for r in rows]

    async def update(
        self,
        organization_id: UUID,
        endpoint_id: UUID,
        *,
        url: str | None,
        types: Sequence[str] | None,
        enabled: bool | None,
    ) -> WebhookEndpointRecord:
        async with self._db.tenant(organization_id) as conn:
            row = await conn.fetchrow(
                query("webhook_endpoint_update"),
                organization_id,
                endpoint_id,
                url,
                list(types) if types is not None else None,
                enabled,
            )
        if row is None:
            raise _not_found(endpoint_id)
        return _endpoint(row)

    async def delete(self, organization_id: UUID, endpoint_id: UUID) -> None:
        async with self._db.tenant(organization_id) as conn:
            status = await conn.execute(
                query("webhook_endpoint_delete"), organization_id, endpoint_id
            )
        if status.endswith(" 0"):
            raise _not_found(endpoint_id)

    async def rotate(
        self,
        organization_id: UUID,
        endpoint_id: UUID,
        secret_id: UUID,
        sealed: EncryptedValue,
        overlap: timedelta,
    ) -> WebhookEndpointRecord:
        async with self._db.tenant(organization_id) as conn:
            row = await conn.fetchrow(
                query("webhook_endpoint_rotate"),
                organization_id,
                endpoint_id,
                secret_id,
                sealed.ciphertext,
                sealed.nonce,
                sealed.key_version,
                overlap,
            )
        if row is None:
            raise _not_found(endpoint_id)
        return _endpoint(row)

    # -- deliveries (the caller's organization) ------------------------------------------

    async def deliveries(
        self,
        organization_id: UUID,
        endpoint_id: UUID,
        state: str | None,
        before: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[WebhookDeliveryRecord]:
        rows = await self._db.fetch_scoped(
            organization_id,
            query("webhook_deliveries_list"),
            organization_id,
            endpoint_id,
            state,
            before[0] if before else None,
            before[1] if before else None,
            limit,
        )
        return [_delivery(r) for r in rows]

    async def redeliver(
        self, organization_id: UUID, endpoint_id: UUID, cursor: int
    ) -> WebhookDeliveryRecord:
        async with self._db.tenant(organization_id) as conn:
            await self._enabled_endpoint(conn, organization_id, endpoint_id)
            event_type = await conn.fetchval(query("webhook_event_exists"), organization_id, cursor)
            if event_type is None:
                raise NotFound(
                    f"organization {organization_id} has no event with cursor {cursor}",
                    reason="EVENT_NOT_FOUND",
                )
            row = await conn.fetchrow(
                query("webhook_redeliver"), organization_id, endpoint_id, cursor, event_type
            )
        if row is None:
            raise InvariantBroken("redeliver: row is None")
        return _delivery(row)

    async def send_test(self, organization_id: UUID, endpoint_id: UUID) -> WebhookDeliveryRecord:
        async with self._db.tenant(organization_id) as conn:
            await self._enabled_endpoint(conn, organization_id, endpoint_id)
            row = await conn.fetchrow(query("webhook_send_test"), organization_id, endpoint_id)
        if row is None:
            raise InvariantBroken("send_test: row is None")
        return _delivery(row)

    async def _enabled_endpoint(
        self, conn: asyncpg.Connection, organization_id: UUID, endpoint_id: UUID
    ) -> WebhookEndpointRecord:
        row = await conn.fetchrow(query("webhook_endpoint_get"), organization_id, endpoint_id)
        if row is None:
            raise _not_found(endpoint_id)
        endpoint = _endpoint(row)
        if not endpoint.enabled:
            raise FailedPrecondition(
                f"webhook endpoint {endpoint_id} is disabled ({endpoint.disabled_reason}); "
                'enable it with UpdateWebhookEndpoint (update_mask "enabled") first',
                reason="WEBHOOK_ENDPOINT_DISABLED",
            )
        return endpoint

    # -- the delivery worker (no organization: SECURITY DEFINER functions) ---------------

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> list[WebhookClaim]:
        rows = await self._db.fetch_unscoped(query("webhook_claim"), now, lease, limit)
        return [_claim(r) for r in rows]

    async def record_attempt(
        self,
        claim: WebhookClaim,
        now: datetime,
        outcome: AttemptOutcome,
        disable_after: timedelta,
    ) -> str:
        """Store one attempt and its consequences; the reason the endpoint was disabled
        by it ('gone', 'failing'), or ''."""
        row = await self._db.fetchrow_unscoped(
            query("webhook_record_attempt"),
            claim.organization_id,
            claim.delivery_id,
            claim.claim_token,
            now,
            outcome.outcome,
            outcome.response_code,
            outcome.latency_ms,
            outcome.response_body,
            outcome.error,
            outcome.state,
            outcome.next_attempt_at,
            outcome.gone,
            disable_after,
        )
        return str(row["disabled"]) if row is not None and row["disabled"] else ""

    async def oldest_pending(self) -> datetime | None:
        row = await self._db.fetchrow_unscoped(query("webhook_oldest_pending"))
        return utc(row["oldest"]) if row is not None else None
