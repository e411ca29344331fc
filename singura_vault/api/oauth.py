"""gRPC servicer for OAuthService: protobuf <-> domain mapping only.

Two secrets cross this layer: the client secret inbound on SetOAuthClient and the
access token outbound on GetAccessToken. Neither is logged here or put into an
error; the client secret is never returned.
"""

from __future__ import annotations

from typing import Any

import grpc

from singura_vault.api._convert import enum_from_proto, enum_to_proto_name, timestamp
from singura_vault.api.connections import connection_to_proto, platform_from_proto
from singura_vault.api.credentials import credential_to_proto
from singura_vault.domain import ClientAuthMethod, OAuthClientRecord
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as pb
from singura_vault.proto.singura.vault.v1 import oauth_pb2_grpc as pb_grpc
from singura_vault.providers import revocation_url_template, token_url_template
from singura_vault.service.oauth_clients import OAuthClientInput, OAuthClientService
from singura_vault.service.oauth_tokens import AccessTokenService

Context = grpc.aio.ServicerContext[Any, Any]


def _auth_method(value: pb.ClientAuthMethod.ValueType) -> ClientAuthMethod | None:
    return enum_from_proto(
        ClientAuthMethod,
        pb.ClientAuthMethod.Name,
        value,
        "CLIENT_AUTH_METHOD_",
        "client.auth_method",
    )


def client_to_proto(record: OAuthClientRecord) -> pb.OAuthClient:
    settings = record.settings
    return pb.OAuthClient(
        organization_id=str(settings.organization_id),
        platform=cpb.Platform.Value(enum_to_proto_name(settings.platform, "PLATFORM_")),
        client_id=settings.client_id,
        token_url=settings.token_url,
        revocation_url=settings.revocation_url,
        scopes=list(settings.scopes),
        auth_method=pb.ClientAuthMethod.Value(
            enum_to_proto_name(settings.auth_method, "CLIENT_AUTH_METHOD_")
        ),
        effective_token_url=token_url_template(settings.platform, settings.token_url),
        effective_revocation_url=revocation_url_template(settings.platform, settings.revocation_url)
        or "",
        create_time=timestamp(record.created_at),
        update_time=timestamp(record.updated_at),
    )


class OAuthServicer(pb_grpc.OAuthServiceServicer):
    def __init__(self, clients: OAuthClientService, tokens: AccessTokenService) -> None:
        self._clients = clients
        self._tokens = tokens

    async def SetOAuthClient(
        self, request: pb.SetOAuthClientRequest, context: Context
    ) -> pb.SetOAuthClientResponse:
        client = request.client
        record = await self._clients.set(
            OAuthClientInput(
                organization_id=client.organization_id,
                platform=platform_from_proto(client.platform, "client.platform"),
                client_id=client.client_id,
                client_secret=client.client_secret,
                token_url=client.token_url,
                revocation_url=client.revocation_url,
                scopes=list(client.scopes),
                auth_method=_auth_method(client.auth_method),
            )
        )
        return pb.SetOAuthClientResponse(client=client_to_proto(record))

    async def GetOAuthClient(
        self, request: pb.GetOAuthClientRequest, context: Context
    ) -> pb.GetOAuthClientResponse:
        record = await self._clients.get(
            request.organization_id, platform_from_proto(request.platform, "platform")
        )
        return pb.GetOAuthClientResponse(client=client_to_proto(record))

    async def DeleteOAuthClient(
        self, request: pb.DeleteOAuthClientRequest, context: Context
    ) -> pb.DeleteOAuthClientResponse:
        await self._clients.delete(
            request.organization_id, platform_from_proto(request.platform, "platform")
        )
        return pb.DeleteOAuthClientResponse()

    async def GetAccessToken(
        self, request: pb.GetAccessTokenRequest, context: Context
    ) -> pb.GetAccessTokenResponse:
        token = await self._tokens.get(
            request.organization_id,
            request.connection_id,
            request.min_valid_for.ToTimedelta() if request.HasField("min_valid_for") else None,
        )
        return pb.GetAccessTokenResponse(
            access_token=token.value,
            expire_time=timestamp(token.credential.expires_at),
            refreshed=token.refreshed,
            credential=credential_to_proto(token.credential),
        )

    async def RefreshConnection(
        self, request: pb.RefreshConnectionRequest, context: Context
    ) -> pb.RefreshConnectionResponse:
        result = await self._tokens.refresh(
            request.organization_id, request.connection_id, force=request.force
        )
        return pb.RefreshConnectionResponse(
            connection=connection_to_proto(result.connection),
            access_token=credential_to_proto(result.access_token)
            if result.access_token is not None
            else None,
            refreshed=result.refreshed,
        )
