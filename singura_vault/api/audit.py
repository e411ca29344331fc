"""gRPC servicer for AuditService: protobuf <-> domain mapping only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import grpc

from singura_vault.api._convert import duration, struct, timestamp
from singura_vault.domain.audit import AuditEvent, AuditFilter, SignedCheckpoint
from singura_vault.errors import InvalidArgument
from singura_vault.proto.singura.vault.v1 import audit_pb2 as pb
from singura_vault.proto.singura.vault.v1 import audit_pb2_grpc as pb_grpc
from singura_vault.service.audit import AuditService
from singura_vault.service.audit_checkpoints import AuditCheckpointService

Context = grpc.aio.ServicerContext[Any, Any]


def event_to_proto(event: AuditEvent) -> pb.AuditEvent:
    return pb.AuditEvent(
        id=event.id,
        organization_id=str(event.organization_id) if event.organization_id else "",
        sequence=event.sequence,
        occur_time=timestamp(event.occurred_at),
        actor=event.actor,
        action=event.action,
        resource_type=event.resource_type,
        resource_id=event.resource_id or "",
        request_id=event.request_id or "",
        outcome=pb.AuditOutcome.Value(f"AUDIT_OUTCOME_{event.outcome.upper()}"),
        details=struct(event.details),
        prev_hash=event.prev_hash.hex(),
        hash=event.hash.hex(),
    )


def _filter(message: pb.AuditFilter) -> AuditFilter:
    try:
        outcome_name = pb.AuditOutcome.Name(message.outcome)
    except ValueError:
        raise InvalidArgument("filter.outcome", f"{message.outcome} is not a known value") from None
    outcome = outcome_name.removeprefix("AUDIT_OUTCOME_").lower()
    return AuditFilter(
        start=message.start_time.ToDatetime(tzinfo=UTC) if message.HasField("start_time") else None,
        end=message.end_time.ToDatetime(tzinfo=UTC) if message.HasField("end_time") else None,
        action=message.action or None,
        resource_type=message.resource_type or None,
        resource_id=message.resource_id or None,
        actor=message.actor or None,
        outcome=None if outcome == "unspecified" else outcome,
    )


def checkpoint_to_proto(checkpoint: SignedCheckpoint) -> pb.AuditCheckpoint:
    return pb.AuditCheckpoint(
        organization_id=str(checkpoint.organization_id) if checkpoint.organization_id else "",
        sequence=checkpoint.sequence,
        hash=checkpoint.head_hash.hex(),
        sign_time=timestamp(checkpoint.signed_at),
        key_id=checkpoint.key_id,
        previous_signature=(checkpoint.previous_signature or b"").hex(),
        signature=checkpoint.signature.hex(),
    )


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, service: AuditService, checkpoints: AuditCheckpointService) -> None:
        self._service = service
        self._checkpoints = checkpoints

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        page = await self._service.list_events(
            request.organization_id, _filter(request.filter), request.page_size, request.page_token
        )
        return pb.ListAuditEventsResponse(
            events=[event_to_proto(e) for e in page.events], next_page_token=page.next_page_token
        )

    async def ExportAuditEvents(
        self, request: pb.ExportAuditEventsRequest, context: Context
    ) -> AsyncIterator[pb.ExportAuditEventsResponse]:
        async for batch in self._service.export(request.organization_id, _filter(request.filter)):
            yield pb.ExportAuditEventsResponse(events=[event_to_proto(e) for e in batch])

    async def VerifyAuditChain(
        self, request: pb.VerifyAuditChainRequest, context: Context
    ) -> pb.VerifyAuditChainResponse:
        result = await self._service.verify(request.organization_id)
        return pb.VerifyAuditChainResponse(
            ok=result.ok,
            event_count=result.event_count,
            head_hash=result.head_hash.hex(),
            first_bad_event_id=result.first_bad_event_id,
            problem=result.problem,
            pruned_count=result.pruned_count,
            pending_event_count=result.pending_count,
            oldest_pending_age=duration(result.oldest_pending_age),
        )

    async def CreateAuditCheckpoint(
        self, request: pb.CreateAuditCheckpointRequest, context: Context
    ) -> pb.CreateAuditCheckpointResponse:
        checkpoint = await self._checkpoints.create(request.organization_id)
        return pb.CreateAuditCheckpointResponse(checkpoint=checkpoint_to_proto(checkpoint))

    async def ExportAuditCheckpoints(
        self, request: pb.ExportAuditCheckpointsRequest, context: Context
    ) -> AsyncIterator[pb.ExportAuditCheckpointsResponse]:
        async for batch in self._checkpoints.export(request.organization_id):
            yield pb.ExportAuditCheckpointsResponse(
                checkpoints=[checkpoint_to_proto(c) for c in batch]
            )

    async def GetAuditSigningKey(
        self, request: pb.GetAuditSigningKeyRequest, context: Context
    ) -> pb.GetAuditSigningKeyResponse:
        key_id, pem = self._checkpoints.public_key()
        return pb.GetAuditSigningKeyResponse(key_id=key_id, public_key_pem=pem)
