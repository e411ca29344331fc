"""gRPC servicer for OAuthService: protobuf <-> domain mapping only.

Secrets cross this layer: the client secret inbound on SetOAuthClient, the access
token outbound on GetAccessToken, the state outbound on StartAuthorization and the
state and code inbound on CompleteAuthorization. None is logged here or put into an
error; the client secret is never returned.
"""

from __future__ import annotations

from typing import Any

import grpc

from singura_vault.api._convert import enum_from_proto, enum_to_proto_name, timestamp
from singura_vault.api.connections import (
    connection_to_proto,
    platform_from_proto,
    revocation_to_proto,
)
from singura_vault.api.credentials import credential_to_proto
from singura_vault.domain.oauth import ClientAuthMethod, OAuthClientRecord
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as pb
from singura_vault.proto.singura.vault.v1 import oauth_pb2_grpc as pb_grpc
from singura_vault.providers import (
    authorization_url_template,
    revocation_url_template,
    token_url_template,
)
from singura_vault.service.oauth_clients import OAuthClientInput, OAuthClientService
from singura_vault.service.oauth_complete import CompleteInput
from singura_vault.service.oauth_connect import ConnectService
from singura_vault.service.oauth_start import StartInput
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
        redirect_uris=list(settings.redirect_uris),
        authorization_url=settings.authorization_url,
        effective_authorization_url=authorization_url_template(
            settings.platform, settings.authorization_url
        ),
        has_signing_secret=record.signing_secret is not None,
    )


class OAuthServicer(pb_grpc.OAuthServiceServicer):
    def __init__(
        self, clients: OAuthClientService, tokens: AccessTokenService, connect: ConnectService
    ) -> None:
        self._clients = clients
        self._tokens = tokens
        self._connect = connect

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
                redirect_uris=list(client.redirect_uris),
                authorization_url=client.authorization_url,
                signing_secret=client.signing_secret,
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

    async def StartAuthorization(
        self, request: pb.StartAuthorizationRequest, context: Context
    ) -> pb.StartAuthorizationResponse:
        started = await self._connect.start(
            StartInput(
                organization_id=request.organization_id,
                platform=platform_from_proto(request.platform, "platform"),
                redirect_uri=request.redirect_uri,
                scopes=list(request.scopes),
                connection_id=request.connection_id,
                display_name=request.display_name,
                login_hint=request.login_hint,
                extra_params=dict(request.extra_params),
            )
        )
        return pb.StartAuthorizationResponse(
            authorization_url=started.authorization_url,
            state=started.state,
            expire_time=timestamp(started.expires_at),
        )

    async def CompleteAuthorization(
        self, request: pb.CompleteAuthorizationRequest, context: Context
    ) -> pb.CompleteAuthorizationResponse:
        result = await self._connect.complete(
            CompleteInput(
                organization_id=request.organization_id,
                state=request.state,
                code=request.code,
                error=request.error,
                error_description=request.error_description,
                allow_identity_change=request.allow_identity_change,
            )
        )
        return pb.CompleteAuthorizationResponse(
            connection=connection_to_proto(result.connection),
            requested_scopes=list(result.requested_scopes),
            granted_scopes=list(result.granted_scopes),
            reauthorized=result.reauthorized,
            previous_refresh_token_revocation=revocation_to_proto(
                result.previous_refresh_token_revocation
            ),
            granted_user_scopes=list(result.granted_user_scopes),
        )
