"""Webhook endpoints created through the WebhookService, as a client does."""

from __future__ import annotations

import grpc

from singura_vault.proto.singura.vault.v1 import webhooks_pb2 as pb
from singura_vault.proto.singura.vault.v1 import webhooks_pb2_grpc as pb_grpc
from tests.support.auth import bearer
from tests.support.vault import Vault


def stub(vault: Vault, key: str | None = None) -> pb_grpc.WebhookServiceStub:
    channel = vault.channel
    if key is not None:
        channel = grpc.aio.insecure_channel(vault.address, interceptors=bearer(key))
        vault._channels.append(channel)
    return pb_grpc.WebhookServiceStub(channel)


async def create(
    vault: Vault, org: str, url: str, types: tuple[str, ...] = ()
) -> pb.CreateWebhookEndpointResponse:
    return await stub(vault).CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(organization_id=org, url=url, types=types)
    )
