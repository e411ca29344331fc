"""The EventService as a client reads it: a stub (with another key or the admin's), a
reader key, stored credentials that make events, and the events of a tenant."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as kpb
from singura_vault.proto.singura.vault.v1 import events_pb2 as pb
from singura_vault.proto.singura.vault.v1 import events_pb2_grpc as pb_grpc
from tests.support.auth import bearer
from tests.support.credentials import ACCESS
from tests.support.vault import Vault

# A guard against a hung stream, not a synchronisation: every read below is of an
# event already committed (or committed by the test right before it).
READ_GUARD_S = 30.0


def events_stub(vault: Vault, key: str | None = None) -> pb_grpc.EventServiceStub:
    if key is None:
        return pb_grpc.EventServiceStub(vault.channel)
    channel = grpc.aio.insecure_channel(vault.address, interceptors=bearer(key))
    vault._channels.append(channel)
    return pb_grpc.EventServiceStub(channel)


async def store(vault: Vault, org: str, conn: str, value: str) -> None:
    await vault.credentials.StoreCredential(
        kpb.StoreCredentialRequest(
            organization_id=org, connection_id=conn, type=ACCESS, value=value
        )
    )


async def reader_key(vault: Vault, org: str) -> str:
    response = await vault.access.CreateApiKey(
        apb.CreateApiKeyRequest(organization_id=org, roles=[apb.API_KEY_ROLE_READER], name="events")
    )
    return response.secret


async def all_events(stub: pb_grpc.EventServiceStub, org: str, **extra: Any) -> list[pb.Event]:
    response = await stub.ListEvents(
        pb.ListEventsRequest(organization_id=org, page_size=1000, **extra)
    )
    return list(response.events)


def data(event: pb.Event) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(event.data)


async def read_event(call: Any) -> pb.Event:
    message = await asyncio.wait_for(call.read(), READ_GUARD_S)
    assert message is not grpc.aio.EOF
    event: pb.Event = message.event
    return event
