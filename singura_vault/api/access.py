"""gRPC servicer for AccessService: protobuf <-> domain mapping only.

The full key appears once, in CreateApiKeyResponse.secret; it is never logged.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc

from singura_vault.api._convert import enum_from_proto, timestamp
from singura_vault.context import Role
from singura_vault.domain.api_keys import ApiKey
from singura_vault.errors import InvalidArgument
from singura_vault.proto.singura.vault.v1 import access_pb2 as pb
from singura_vault.proto.singura.vault.v1 import access_pb2_grpc as pb_grpc
from singura_vault.service.access import AccessService

Context = grpc.aio.ServicerContext[Any, Any]


def api_key_to_proto(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        id=str(key.id),
        key_id=key.key_id,
        organization_id=str(key.organization_id) if key.organization_id else "",
        roles=[pb.ApiKeyRole.Value(f"API_KEY_ROLE_{r.upper()}") for r in key.roles],
        name=key.name,
        created_by=key.created_by,
        create_time=timestamp(key.created_at),
        expire_time=timestamp(key.expires_at),
        revoke_time=timestamp(key.revoked_at),
    )


def _roles(values: list[pb.ApiKeyRole.ValueType]) -> list[Role]:
    roles: list[Role] = []
    for value in values:
        role = enum_from_proto(Role, pb.ApiKeyRole.Name, value, "API_KEY_ROLE_", "roles")
        if role is None:
            raise InvalidArgument("roles", "API_KEY_ROLE_UNSPECIFIED is not a role")
        roles.append(role)
    return roles


class AccessServicer(pb_grpc.AccessServiceServicer):
    def __init__(self, service: AccessService) -> None:
        self._service = service

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        created = await self._service.create(
            request.organization_id,
            _roles(list(request.roles)),
            request.name,
            request.expire_time.ToDatetime(tzinfo=UTC) if request.HasField("expire_time") else None,
        )
        return pb.CreateApiKeyResponse(
            api_key=api_key_to_proto(created.api_key), secret=created.secret
        )

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        keys, token = await self._service.list(
            request.organization_id, request.page_size, request.page_token
        )
        return pb.ListApiKeysResponse(
            api_keys=[api_key_to_proto(k) for k in keys], next_page_token=token
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        revoked = await self._service.revoke(request.key_id)
        return pb.RevokeApiKeyResponse(api_key=api_key_to_proto(revoked))
