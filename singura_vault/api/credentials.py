"""gRPC servicer for CredentialService: protobuf <-> domain mapping only.

The secret value crosses this layer twice: inbound on StoreCredential and
outbound on RevealCredential. It is never logged here (the interceptor logs
method, status and timing only) and never part of an error message.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, timedelta
from typing import Any

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from singura_vault.api._convert import EnumWire, set_timestamp
from singura_vault.api.connections import revocation_to_proto
from singura_vault.api.error_details import client_message
from singura_vault.domain.credentials import (
    Credential,
    CredentialState,
    CredentialType,
    CredentialVersionState,
    VersionTransition,
)
from singura_vault.errors import InvalidArgument, VaultError
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as pb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as pb_grpc
from singura_vault.service.credentials import CredentialService
from singura_vault.service.oauth_revocation import ProviderRevoker

_VersionRequest = (
    pb.DisableCredentialVersionRequest
    | pb.EnableCredentialVersionRequest
    | pb.DestroyCredentialVersionRequest
    | pb.CancelCredentialDestroyRequest
)
Context = grpc.aio.ServicerContext[Any, Any]


_TYPES = EnumWire(CredentialType, pb.CredentialType, "CREDENTIAL_TYPE_")
_STATES = EnumWire(CredentialState, pb.CredentialState, "CREDENTIAL_STATE_")
_VERSION_STATES = EnumWire(
    CredentialVersionState, pb.CredentialVersionState, "CREDENTIAL_VERSION_STATE_"
)


def _type(value: pb.CredentialType.ValueType, field: str = "type") -> CredentialType | None:
    return _TYPES.from_proto(value, field)


def _state(value: pb.CredentialState.ValueType) -> CredentialState | None:
    return _STATES.from_proto(value, "state")


def credential_to_proto(credential: Credential) -> pb.Credential:
    message = pb.Credential()
    fill_credential(message, credential)
    return message


def fill_credential(message: pb.Credential, credential: Credential) -> None:
    """Write ``credential`` into a Credential field of a response in place (building
    a message and copying it in costs about a third more on every call)."""
    message.id = str(credential.id)
    message.organization_id = str(credential.organization_id)
    message.connection_id = str(credential.connection_id)
    message.type = _TYPES.to_proto(credential.type)
    message.version = credential.version
    message.state = _STATES.to_proto(credential.state)
    message.key_version = credential.key_version
    message.fingerprint = credential.fingerprint
    set_timestamp(message.create_time, credential.created_at)
    set_timestamp(message.expire_time, credential.expires_at)
    set_timestamp(message.state_change_time, credential.state_changed_at)
    message.version_state = _VERSION_STATES.to_proto(credential.version_state)
    set_timestamp(message.destroy_time, credential.destroy_at)


def _fill_credentials(
    field: RepeatedCompositeFieldContainer[pb.Credential], credentials: Iterable[Credential]
) -> None:
    for credential in credentials:
        fill_credential(field.add(), credential)


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
            request.expected_version if request.HasField("expected_version") else None,
        )
        response = pb.StoreCredentialResponse()
        fill_credential(response.credential, credential)
        return response

    async def GetCredential(
        self, request: pb.GetCredentialRequest, context: Context
    ) -> pb.GetCredentialResponse:
        credential = await self._service.get(request.organization_id, request.credential_id)
        response = pb.GetCredentialResponse()
        fill_credential(response.credential, credential)
        return response

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
        response = pb.ListCredentialsResponse(next_page_token=page.next_page_token)
        _fill_credentials(response.credentials, page.credentials)
        return response

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
        response = pb.ListCredentialVersionsResponse(next_page_token=page.next_page_token)
        _fill_credentials(response.credentials, page.credentials)
        return response

    async def RevealCredential(
        self, request: pb.RevealCredentialRequest, context: Context
    ) -> pb.RevealCredentialResponse:
        credential, value = await self._service.reveal(
            request.organization_id, request.connection_id, _type(request.type), request.version
        )
        response = pb.RevealCredentialResponse(value=value)
        fill_credential(response.credential, credential)
        return response

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
        response = pb.BatchRevealCredentialsResponse()
        for credential, outcome in outcomes:
            result = response.results.add()
            if credential is not None:
                fill_credential(result.credential, credential)
            if isinstance(outcome, VaultError):
                result.code = grpc.StatusCode[outcome.code.value].value[0]
                result.message = client_message(outcome)
            else:
                result.value = outcome
        return response

    async def ListExpiringCredentials(
        self, request: pb.ListExpiringCredentialsRequest, context: Context
    ) -> pb.ListExpiringCredentialsResponse:
        if not request.HasField("within"):
            raise InvalidArgument("within", "is required, e.g. 604800s for 7 days")
        within: timedelta = request.within.ToTimedelta()
        page = await self._service.expiring(
            request.organization_id, within, request.page_size, request.page_token
        )
        response = pb.ListExpiringCredentialsResponse(next_page_token=page.next_page_token)
        _fill_credentials(response.credentials, page.credentials)
        return response

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
        response = pb.RevokeCredentialResponse(provider_revocation=revocation_to_proto(revocation))
        _fill_credentials(response.credentials, revoked)
        return response

    async def DisableCredentialVersion(
        self, request: pb.DisableCredentialVersionRequest, context: Context
    ) -> pb.DisableCredentialVersionResponse:
        response = pb.DisableCredentialVersionResponse()
        await self._change_version(request, VersionTransition.DISABLE, response.credential)
        return response

    async def EnableCredentialVersion(
        self, request: pb.EnableCredentialVersionRequest, context: Context
    ) -> pb.EnableCredentialVersionResponse:
        response = pb.EnableCredentialVersionResponse()
        await self._change_version(request, VersionTransition.ENABLE, response.credential)
        return response

    async def DestroyCredentialVersion(
        self, request: pb.DestroyCredentialVersionRequest, context: Context
    ) -> pb.DestroyCredentialVersionResponse:
        response = pb.DestroyCredentialVersionResponse()
        await self._change_version(request, VersionTransition.DESTROY, response.credential)
        return response

    async def CancelCredentialDestroy(
        self, request: pb.CancelCredentialDestroyRequest, context: Context
    ) -> pb.CancelCredentialDestroyResponse:
        response = pb.CancelCredentialDestroyResponse()
        await self._change_version(request, VersionTransition.CANCEL_DESTROY, response.credential)
        return response

    async def _change_version(
        self, request: _VersionRequest, transition: VersionTransition, into: pb.Credential
    ) -> None:
        """The four version-state RPCs share their request fields and their answer."""
        credential = await self._service.change_version(
            request.organization_id,
            request.connection_id,
            _type(request.type),
            request.version,
            transition,
        )
        fill_credential(into, credential)
