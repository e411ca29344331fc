"""Webhook endpoint use cases: create, list, update, delete, rotate the signing secret,
list deliveries, redeliver an event, send a test message.

Managing needs the writer role, listing the reader or writer role (service/authz.py).
A signing secret is generated here, sealed through the sealing gateway and returned
once; it is never logged, never put in an error and never returned again. Deliveries
themselves are created by the database (migration 026's trigger on the outbox) and
sent by service/webhook_worker.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID, uuid4

from singura_vault.context import Role
from singura_vault.domain.paging import PageCursor
from singura_vault.errors import InvalidArgument
from singura_vault.providers import UnsafeEndpoint, check_webhook_url
from singura_vault.repositories.webhooks import (
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
    WebhookRepository,
)
from singura_vault.service import pagination, validation, webhook_signing
from singura_vault.service.authz import READ, WRITE, Authorizer
from singura_vault.service.events import EVENT_TYPES
from singura_vault.service.sealing import SealingService

MAX_TYPES = 100
MAX_DESCRIPTION = 500
UPDATABLE = ("url", "types", "enabled")
DELIVERY_STATES = ("pending", "delivered", "failed")


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpointRecord
    signing_secret: str = field(repr=False)


@dataclass(frozen=True)
class EndpointPage:
    endpoints: tuple[WebhookEndpointRecord, ...]
    next_page_token: str


@dataclass(frozen=True)
class DeliveryPage:
    deliveries: tuple[WebhookDeliveryRecord, ...]
    next_page_token: str


class WebhookService:
    def __init__(
        self,
        repository: WebhookRepository,
        sealing: SealingService,
        *,
        production: bool,
        secret_overlap: timedelta,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._repository = repository
        self._sealing = sealing
        self._production = production
        self._overlap = secret_overlap
        self._authz = authorizer or Authorizer()

    async def create(
        self, organization_id: str, url: str, types: Sequence[str], description: str
    ) -> CreatedEndpoint:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "manage webhook endpoints")
        checked_url = self._url("url", url)
        wanted = _types("types", types)
        text = validation.text("description", description, min_length=0, max_length=MAX_DESCRIPTION)
        endpoint_id, secret_id = uuid4(), uuid4()
        key, shown = webhook_signing.new_secret()
        sealed = await self._sealing.seal_webhook_secret(org_id, endpoint_id, secret_id, key)
        record = await self._repository.create(
            org_id, endpoint_id, checked_url, text, wanted, secret_id, sealed
        )
        return CreatedEndpoint(record, shown)

    async def list(self, organization_id: str, page_size: int, page_token: str) -> EndpointPage:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "list webhook endpoints")
        size = pagination.page_size(page_size)
        filters = ("webhook_endpoints", str(org_id))
        after = pagination.decode_token(page_token, filters)
        rows = await self._repository.endpoints(
            org_id, (after.at, after.id) if after else None, size + 1
        )
        items, token = pagination.next_page(
            rows, size, filters, lambda e: PageCursor(e.created_at, e.id)
        )
        return EndpointPage(items, token)

    async def update(
        self,
        organization_id: str,
        endpoint_id: str,
        paths: Sequence[str],
        *,
        url: str,
        types: Sequence[str],
        enabled: bool,
    ) -> WebhookEndpointRecord:
        org_id = validation.parse_uuid("endpoint.organization_id", organization_id)
        self._authz.require(org_id, WRITE, "manage webhook endpoints")
        ep_id = validation.parse_uuid("endpoint.id", endpoint_id)
        mask = validation.update_mask(paths, UPDATABLE)
        return await self._repository.update(
            org_id,
            ep_id,
            url=self._url("endpoint.url", url) if "url" in mask else None,
            types=_types("endpoint.types", types) if "types" in mask else None,
            enabled=enabled if "enabled" in mask else None,
        )

    async def delete(self, organization_id: str, endpoint_id: str) -> None:
        org_id, ep_id = self._ids(organization_id, endpoint_id, WRITE)
        await self._repository.delete(org_id, ep_id)

    async def rotate(self, organization_id: str, endpoint_id: str) -> CreatedEndpoint:
        org_id, ep_id = self._ids(organization_id, endpoint_id, WRITE)
        await self._repository.get(org_id, ep_id)  # NOT_FOUND before sealing anything
        secret_id = uuid4()
        key, shown = webhook_signing.new_secret()
        sealed = await self._sealing.seal_webhook_secret(org_id, ep_id, secret_id, key)
        record = await self._repository.rotate(org_id, ep_id, secret_id, sealed, self._overlap)
        return CreatedEndpoint(record, shown)

    async def deliveries(
        self,
        organization_id: str,
        endpoint_id: str,
        state: str | None,
        page_size: int,
        page_token: str,
    ) -> DeliveryPage:
        org_id, ep_id = self._ids(organization_id, endpoint_id, READ)
        if state is not None and state not in DELIVERY_STATES:
            raise InvalidArgument("state", "is not a delivery state")
        size = pagination.page_size(page_size)
        filters = ("webhook_deliveries", str(org_id), str(ep_id), state or "")
        before = pagination.decode_token(page_token, filters)
        rows = await self._repository.deliveries(
            org_id, ep_id, state, (before.at, before.id) if before else None, size + 1
        )
        items, token = pagination.next_page(
            rows, size, filters, lambda d: PageCursor(d.created_at, d.id)
        )
        return DeliveryPage(items, token)

    async def redeliver(
        self, organization_id: str, endpoint_id: str, cursor: int
    ) -> WebhookDeliveryRecord:
        org_id, ep_id = self._ids(organization_id, endpoint_id, WRITE)
        if cursor <= 0:
            raise InvalidArgument("cursor", "is required: the cursor of an event (1 or more)")
        return await self._repository.redeliver(org_id, ep_id, cursor)

    async def send_test(self, organization_id: str, endpoint_id: str) -> WebhookDeliveryRecord:
        org_id, ep_id = self._ids(organization_id, endpoint_id, WRITE)
        return await self._repository.send_test(org_id, ep_id)

    def _ids(
        self, organization_id: str, endpoint_id: str, roles: tuple[Role, ...]
    ) -> tuple[UUID, UUID]:
        org_id = validation.parse_uuid("organization_id", organization_id)
        action = "manage webhook endpoints" if roles == WRITE else "list webhook deliveries"
        self._authz.require(org_id, roles, action)
        return org_id, validation.parse_uuid("endpoint_id", endpoint_id)

    def _url(self, field_path: str, url: str) -> str:
        if not url:
            raise InvalidArgument(field_path, "is required: the https URL events are POSTed to")
        try:
            return check_webhook_url(url, production=self._production)
        except UnsafeEndpoint as exc:
            raise InvalidArgument(field_path, str(exc)) from None


def _types(field_path: str, types: Sequence[str]) -> tuple[str, ...]:
    if len(types) > MAX_TYPES:
        raise InvalidArgument(field_path, f"has more than {MAX_TYPES} entries")
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidArgument(
            field_path,
            f"{unknown[0][:64]!r} is not an event type the vault emits; "
            f"known types: {', '.join(EVENT_TYPES)}",
        )
    return tuple(dict.fromkeys(types))
