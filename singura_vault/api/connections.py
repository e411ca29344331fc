"""gRPC servicer for ConnectionService: protobuf <-> domain mapping only."""

from __future__ import annotations

from typing import Any

import grpc

from singura_vault.api._convert import (
    enum_from_proto,
    enum_to_proto_name,
    from_struct,
    struct,
    timestamp,
)
from singura_vault.domain.connections import Connection, ConnectionStatus, Platform, ScopeDrift
from singura_vault.proto.singura.vault.v1 import connections_pb2 as pb
from singura_vault.proto.singura.vault.v1 import connections_pb2_grpc as pb_grpc
from singura_vault.service.connections import ConnectionInput, ConnectionService
from singura_vault.service.oauth_revocation import ProviderRevocation, ProviderRevoker
from singura_vault.service.validation import etag_for

Context = grpc.aio.ServicerContext[Any, Any]


def platform_from_proto(value: pb.Platform.ValueType, field: str) -> Platform | None:
    return enum_from_proto(Platform, pb.Platform.Name, value, "PLATFORM_", field)


def _status(value: pb.ConnectionStatus.ValueType, field: str) -> ConnectionStatus | None:
    return enum_from_proto(
        ConnectionStatus, pb.ConnectionStatus.Name, value, "CONNECTION_STATUS_", field
    )


def connection_to_proto(conn: Connection) -> pb.Connection:
    return pb.Connection(
        id=str(conn.id),
        organization_id=str(conn.organization_id),
        platform=pb.Platform.Value(enum_to_proto_name(conn.platform, "PLATFORM_")),
        platform_user_id=conn.platform_user_id,
        platform_workspace_id=conn.platform_workspace_id,
        display_name=conn.display_name,
        permissions_granted=list(conn.permissions_granted),
        requested_scopes=list(conn.requested_scopes),
        granted_user_scopes=list(conn.granted_user_scopes),
        metadata=struct(conn.metadata),
        status=pb.ConnectionStatus.Value(enum_to_proto_name(conn.status, "CONNECTION_STATUS_")),
        status_reason=conn.status_reason,
        last_sync_time=timestamp(conn.last_sync_at),
        create_time=timestamp(conn.created_at),
        update_time=timestamp(conn.updated_at),
        etag=etag_for(conn.version),
        last_refresh_time=timestamp(conn.last_refresh_at),
        refresh_failure_count=conn.refresh_failure_count,
        last_refresh_error=conn.last_refresh_error,
        next_refresh_time=timestamp(conn.next_refresh_at),
        expiry_source=pb.ExpirySource.Value(
            enum_to_proto_name(conn.expiry_source, "EXPIRY_SOURCE_")
            if conn.expiry_source is not None
            else "EXPIRY_SOURCE_UNSPECIFIED"
        ),
        delete_time=timestamp(conn.deleted_at),
        purge_time=timestamp(conn.purge_at),
        tokens_revoked_at_provider=conn.deleted_revoked_at_provider,
    )


def _input(message: pb.Connection) -> ConnectionInput:
    return ConnectionInput(
        organization_id=message.organization_id,
        id=message.id,
        platform=platform_from_proto(message.platform, "connection.platform"),
        platform_user_id=message.platform_user_id,
        platform_workspace_id=message.platform_workspace_id,
        display_name=message.display_name,
        permissions_granted=list(message.permissions_granted),
        metadata=from_struct(message.metadata),
    )


def revocation_to_proto(revocation: ProviderRevocation | None) -> pb.ProviderRevocation | None:
    if revocation is None:
        return None
    return pb.ProviderRevocation(
        outcome=pb.ProviderRevocationOutcome.Value(
            "PROVIDER_REVOCATION_OUTCOME_" + revocation.outcome.upper()
        ),
        detail=revocation.detail,
    )


class ConnectionServicer(pb_grpc.ConnectionServiceServicer):
    def __init__(self, service: ConnectionService, revoker: ProviderRevoker) -> None:
        self._service = service
        self._revoker = revoker

    async def CreateConnection(
        self, request: pb.CreateConnectionRequest, context: Context
    ) -> pb.CreateConnectionResponse:
        conn = await self._service.create(_input(request.connection), request.request_id)
        return pb.CreateConnectionResponse(connection=connection_to_proto(conn))

    async def GetConnection(
        self, request: pb.GetConnectionRequest, context: Context
    ) -> pb.GetConnectionResponse:
        conn = await self._service.get(request.organization_id, request.connection_id)
        return pb.GetConnectionResponse(connection=connection_to_proto(conn))

    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: Context
    ) -> pb.ListConnectionsResponse:
        page = await self._service.list(
            request.organization_id,
            platform_from_proto(request.platform, "platform"),
            _status(request.status, "status"),
            request.page_size,
            request.page_token,
            enum_from_proto(
                ScopeDrift, pb.ScopeDrift.Name, request.scope_drift, "SCOPE_DRIFT_", "scope_drift"
            ),
            show_deleted=request.show_deleted,
        )
        return pb.ListConnectionsResponse(
            connections=[connection_to_proto(c) for c in page.connections],
            next_page_token=page.next_page_token,
        )

    async def UpdateConnection(
        self, request: pb.UpdateConnectionRequest, context: Context
    ) -> pb.UpdateConnectionResponse:
        conn = await self._service.update(
            _input(request.connection), list(request.update_mask.paths), request.etag
        )
        return pb.UpdateConnectionResponse(connection=connection_to_proto(conn))

    async def UpdateConnectionStatus(
        self, request: pb.UpdateConnectionStatusRequest, context: Context
    ) -> pb.UpdateConnectionStatusResponse:
        conn = await self._service.update_status(
            request.organization_id,
            request.connection_id,
            _status(request.status, "status"),
            request.reason,
            request.etag,
        )
        return pb.UpdateConnectionStatusResponse(connection=connection_to_proto(conn))

    async def DeleteConnection(
        self, request: pb.DeleteConnectionRequest, context: Context
    ) -> pb.DeleteConnectionResponse:
        revocation = (
            await self._revoker.before_connection_delete(
                request.organization_id, request.connection_id, request.etag, force=request.force
            )
            if request.revoke_at_provider
            else None
        )
        revoked = revocation is not None and revocation.revoked
        recoverable_until = await self._service.delete(
            request.organization_id,
            request.connection_id,
            request.etag,
            force=request.force,
            revoked_at_provider=revoked,
        )
        return pb.DeleteConnectionResponse(
            provider_revocation=revocation_to_proto(revocation),
            recoverable_until=timestamp(recoverable_until),
            tokens_revoked_at_provider=revoked,
        )

    async def UndeleteConnection(
        self, request: pb.UndeleteConnectionRequest, context: Context
    ) -> pb.UndeleteConnectionResponse:
        conn = await self._service.undelete(request.organization_id, request.connection_id)
        return pb.UndeleteConnectionResponse(connection=connection_to_proto(conn))
