"""gRPC servicer for CredentialService: protobuf <-> domain mapping only.

The secret value crosses this layer twice: inbound on StoreCredential and
outbound on RevealCredential. It is never logged here (the interceptor logs
method, status and timing only) and never part of an error message.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import grpc

from singura_vault.api._convert import enum_from_proto, enum_to_proto_name, timestamp
from singura_vault.api.connections import revocation_to_proto
from singura_vault.api.error_details import client_message
from singura_vault.domain import Credential, CredentialState, CredentialType
from singura_vault.errors import InvalidArgument, VaultError
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as pb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as pb_grpc
from singura_vault.service.credentials import CredentialService
from singura_vault.service.oauth_revocation import ProviderRevoker

Context = grpc.aio.ServicerContext[Any, Any]


def _type(value: pb.CredentialType.ValueType, field: str = "type") -> CredentialType | None:
    return enum_from_proto(CredentialType, pb.CredentialType.Name, value, "CREDENTIAL_TYPE_", field)


def _state(value: pb.CredentialState.ValueType) -> CredentialState | None:
    return enum_from_proto(
        CredentialState, pb.CredentialState.Name, value, "CREDENTIAL_STATE_", "state"
    )


def credential_to_proto(credential: Credential) -> pb.Credential:
    return pb.Credential(
        id=str(credential.id),
        organization_id=str(credential.organization_id),
        connection_id=str(credential.connection_id),
        type=pb.CredentialType.Value(enum_to_proto_name(credential.type, "CREDENTIAL_TYPE_")),
        version=credential.version,
        state=pb.CredentialState.Value(enum_to_proto_name(credential.state, "CREDENTIAL_STATE_")),
        key_version=credential.key_version,
        fingerprint=credential.fingerprint,
        create_time=timestamp(credential.created_at),
        expire_time=timestamp(credential.expires_at),
        state_change_time=timestamp(credential.state_changed_at),
    )


class CredentialServicer(pb_grpc.CredentialServiceServicer):
    def __init__(self, service: CredentialService, revoker: ProviderRevoker) -> None:
        self._service = service
        self._revoker = revoker

    async def StoreCredential(
        self, request: pb.StoreCredentialRequest, context: Context
    ) -> pb.StoreCredentialResponse:
        expires_at = (
            request.expire_time.ToDatetime(tzinfo=UTC) if request.HasField("expire_time") else None
        )
        credential = await self._service.store(
            request.organization_id,
            request.connection_id,
            _type(request.type),
            request.value,
            expires_at,
            request.request_id,
        )
        return pb.StoreCredentialResponse(credential=credential_to_proto(credential))

    async def GetCredential(
        self, request: pb.GetCredentialRequest, context: Context
    ) -> pb.GetCredentialResponse:
        credential = await self._service.get(request.organization_id, request.credential_id)
        return pb.GetCredentialResponse(credential=credential_to_proto(credential))

    async def ListCredentials(
        self, request: pb.ListCredentialsRequest, context: Context
    ) -> pb.ListCredentialsResponse:
        page = await self._service.list(
            request.organization_id,
            request.connection_id,
            _type(request.type),
            _state(request.state),
            request.page_size,
            request.page_token,
        )
        return pb.ListCredentialsResponse(
            credentials=[credential_to_proto(c) for c in page.credentials],
            next_page_token=page.next_page_token,
        )

    async def ListCredentialVersions(
        self, request: pb.ListCredentialVersionsRequest, context: Context
    ) -> pb.ListCredentialVersionsResponse:
        page = await self._service.versions(
            request.organization_id,
            request.connection_id,
            _type(request.type),
            request.page_size,
            request.page_token,
        )
        return pb.ListCredentialVersionsResponse(
            credentials=[credential_to_proto(c) for c in page.credentials],
            next_page_token=page.next_page_token,
        )

    async def RevealCredential(
        self, request: pb.RevealCredentialRequest, context: Context
    ) -> pb.RevealCredentialResponse:
        credential, value = await self._service.reveal(
            request.organization_id, request.connection_id, _type(request.type), request.version
        )
        return pb.RevealCredentialResponse(credential=credential_to_proto(credential), value=value)

    async def BatchRevealCredentials(
        self, request: pb.BatchRevealCredentialsRequest, context: Context
    ) -> pb.BatchRevealCredentialsResponse:
        outcomes = await self._service.reveal_many(
            request.organization_id,
            [
                (item.connection_id, _type(item.type, f"items[{i}].type"), item.version)
                for i, item in enumerate(request.items)
            ],
        )
        results = []
        for credential, outcome in outcomes:
            result = pb.BatchRevealResult()
            if credential is not None:
                result.credential.CopyFrom(credential_to_proto(credential))
            if isinstance(outcome, VaultError):
                result.code = grpc.StatusCode[outcome.code.value].value[0]
                result.message = client_message(outcome)
            else:
                result.value = outcome
            results.append(result)
        return pb.BatchRevealCredentialsResponse(results=results)

    async def ListExpiringCredentials(
        self, request: pb.ListExpiringCredentialsRequest, context: Context
    ) -> pb.ListExpiringCredentialsResponse:
        if not request.HasField("within"):
            raise InvalidArgument("within", "is required, e.g. 604800s for 7 days")
        within: timedelta = request.within.ToTimedelta()
        page = await self._service.expiring(
            request.organization_id, within, request.page_size, request.page_token
        )
        return pb.ListExpiringCredentialsResponse(
            credentials=[credential_to_proto(c) for c in page.credentials],
            next_page_token=page.next_page_token,
        )

    async def RevokeCredential(
        self, request: pb.RevokeCredentialRequest, context: Context
    ) -> pb.RevokeCredentialResponse:
        revocation = (
            await self._revoker.before_credential_revoke(
                request.organization_id, request.credential_id
            )
            if request.revoke_at_provider
            else None
        )
        revoked = await self._service.revoke(
            request.organization_id, request.credential_id, request.all_versions
        )
        return pb.RevokeCredentialResponse(
            credentials=[credential_to_proto(c) for c in revoked],
            provider_revocation=revocation_to_proto(revocation),
        )
