"""gRPC servicer for WebhookService: protobuf <-> domain mapping only."""

from __future__ import annotations

from typing import Any

import grpc

from singura_vault.api._convert import timestamp
from singura_vault.proto.singura.vault.v1 import webhooks_pb2 as pb
from singura_vault.proto.singura.vault.v1 import webhooks_pb2_grpc as pb_grpc
from singura_vault.repositories.webhooks import WebhookDeliveryRecord, WebhookEndpointRecord
from singura_vault.service.webhook_signing import message_id
from singura_vault.service.webhooks import WebhookService

Context = grpc.aio.ServicerContext[Any, Any]

_STATES = {
    "pending": pb.WEBHOOK_DELIVERY_STATE_PENDING,
    "delivered": pb.WEBHOOK_DELIVERY_STATE_DELIVERED,
    "failed": pb.WEBHOOK_DELIVERY_STATE_FAILED,
}
_STATE_NAMES = {v: k for k, v in _STATES.items()}


def endpoint_to_proto(endpoint: WebhookEndpointRecord) -> pb.WebhookEndpoint:
    return pb.WebhookEndpoint(
        id=str(endpoint.id),
        organization_id=str(endpoint.organization_id),
        url=endpoint.url,
        types=list(endpoint.types),
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        failing_since=timestamp(endpoint.failing_since),
        previous_secret_expire_time=timestamp(endpoint.previous_expires_at),
        create_time=timestamp(endpoint.created_at),
        update_time=timestamp(endpoint.updated_at),
    )


def delivery_to_proto(delivery: WebhookDeliveryRecord) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        id=str(delivery.id),
        endpoint_id=str(delivery.endpoint_id),
        message_id=message_id(delivery.id),
        event_cursor=delivery.event_cursor or 0,
        event_type=delivery.event_type,
        state=_STATES[delivery.state],
        attempt_count=delivery.attempts,
        next_attempt_time=timestamp(delivery.next_attempt_at)
        if delivery.state == "pending"
        else None,
        create_time=timestamp(delivery.created_at),
        finish_time=timestamp(delivery.finished_at),
        attempts=[
            pb.WebhookAttempt(
                attempt=a.attempt,
                attempt_time=timestamp(a.attempted_at),
                outcome=a.outcome,
                response_code=a.response_code or 0,
                latency_ms=a.latency_ms,
                response_body=a.response_body,
                error=a.error,
            )
            for a in delivery.attempt_list
        ],
    )


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    def __init__(self, service: WebhookService) -> None:
        self._service = service

    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: Context
    ) -> pb.CreateWebhookEndpointResponse:
        created = await self._service.create(
            request.organization_id, request.url, request.types, request.description
        )
        return pb.CreateWebhookEndpointResponse(
            endpoint=endpoint_to_proto(created.endpoint), signing_secret=created.signing_secret
        )

    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: Context
    ) -> pb.ListWebhookEndpointsResponse:
        page = await self._service.list(
            request.organization_id, request.page_size, request.page_token
        )
        return pb.ListWebhookEndpointsResponse(
            endpoints=[endpoint_to_proto(e) for e in page.endpoints],
            next_page_token=page.next_page_token,
        )

    async def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: Context
    ) -> pb.UpdateWebhookEndpointResponse:
        endpoint = request.endpoint
        updated = await self._service.update(
            endpoint.organization_id,
            endpoint.id,
            list(request.update_mask.paths),
            url=endpoint.url,
            types=endpoint.types,
            enabled=endpoint.enabled,
        )
        return pb.UpdateWebhookEndpointResponse(endpoint=endpoint_to_proto(updated))

    async def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: Context
    ) -> pb.DeleteWebhookEndpointResponse:
        await self._service.delete(request.organization_id, request.endpoint_id)
        return pb.DeleteWebhookEndpointResponse()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: Context
    ) -> pb.RotateWebhookSecretResponse:
        rotated = await self._service.rotate(request.organization_id, request.endpoint_id)
        return pb.RotateWebhookSecretResponse(
            endpoint=endpoint_to_proto(rotated.endpoint), signing_secret=rotated.signing_secret
        )

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Context
    ) -> pb.ListWebhookDeliveriesResponse:
        page = await self._service.deliveries(
            request.organization_id,
            request.endpoint_id,
            _STATE_NAMES.get(request.state),
            request.page_size,
            request.page_token,
        )
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in page.deliveries],
            next_page_token=page.next_page_token,
        )

    async def RedeliverEvent(
        self, request: pb.RedeliverEventRequest, context: Context
    ) -> pb.RedeliverEventResponse:
        delivery = await self._service.redeliver(
            request.organization_id, request.endpoint_id, request.cursor
        )
        return pb.RedeliverEventResponse(delivery=delivery_to_proto(delivery))

    async def SendTestEvent(
        self, request: pb.SendTestEventRequest, context: Context
    ) -> pb.SendTestEventResponse:
        delivery = await self._service.send_test(request.organization_id, request.endpoint_id)
        return pb.SendTestEventResponse(delivery=delivery_to_proto(delivery))
