"""gRPC servicer for SignalService: protobuf <-> domain mapping only."""

from __future__ import annotations

from typing import Any

import grpc

from singura_vault.api._convert import enum_to_proto_name
from singura_vault.api.connections import platform_from_proto
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import signals_pb2 as pb
from singura_vault.proto.singura.vault.v1 import signals_pb2_grpc as pb_grpc
from singura_vault.service.signals import SignalService

Context = grpc.aio.ServicerContext[Any, Any]


class SignalServicer(pb_grpc.SignalServiceServicer):
    def __init__(self, service: SignalService) -> None:
        self._service = service

    async def IngestProviderSignal(
        self, request: pb.IngestProviderSignalRequest, context: Context
    ) -> pb.IngestProviderSignalResponse:
        result = await self._service.ingest(
            platform_from_proto(request.platform, "platform"),
            dict(request.headers),
            request.body,
        )
        return pb.IngestProviderSignalResponse(
            kind=result.kind,
            connections_affected=result.connections_affected,
            challenge=result.challenge,
            organization_ids=[str(o) for o in result.organization_ids],
            status=cpb.ConnectionStatus.Value(
                enum_to_proto_name(result.status, "CONNECTION_STATUS_")
            )
            if result.status is not None
            else cpb.CONNECTION_STATUS_UNSPECIFIED,
        )
