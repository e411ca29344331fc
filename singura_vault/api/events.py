"""gRPC servicer for EventService: protobuf <-> domain mapping only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from singura_vault.api._convert import struct, timestamp
from singura_vault.proto.singura.vault.v1 import events_pb2 as pb
from singura_vault.proto.singura.vault.v1 import events_pb2_grpc as pb_grpc
from singura_vault.service.events import Event, EventService

Context = grpc.aio.ServicerContext[Any, Any]


def event_to_proto(event: Event) -> pb.Event:
    return pb.Event(
        organization_id=str(event.organization_id),
        cursor=event.cursor,
        type=event.type,
        connection_id=str(event.connection_id) if event.connection_id else "",
        credential_id=str(event.credential_id) if event.credential_id else "",
        data=struct(event.data),
        create_time=timestamp(event.created_at),
        position=event.position or 0,
    )


class EventServicer(pb_grpc.EventServiceServicer):
    def __init__(self, service: EventService) -> None:
        self._service = service

    async def ListEvents(
        self, request: pb.ListEventsRequest, context: Context
    ) -> pb.ListEventsResponse:
        page = await self._service.list_events(
            request.organization_id, request.types, request.after, request.page_size
        )
        return pb.ListEventsResponse(
            events=[event_to_proto(e) for e in page.events],
            next_after=page.next_after,
            more=page.more,
        )

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        async for event in self._service.watch(
            request.organization_id, request.types, request.after
        ):
            yield pb.WatchEventsResponse(event=event_to_proto(event))
