"""AsyncVault: the asyncio facade (a grpc.aio channel; coroutines, async iterators).

The same API as Vault (_sync.py), method for method, and the same policy: the API key,
one deadline for all attempts, retries of UNAVAILABLE for idempotent calls only
(_policy.py), every failure raised as a VaultError (errors.py). Request building and
result shapes are _messages.py's; this module is the I/O around them and nothing else.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from . import _messages as m
from ._policy import (
    DEFAULT_TIMEOUT,
    Deadline,
    Keepalive,
    RetryPolicy,
    TlsConfig,
    auth_metadata,
    channel_settings,
    is_idempotent,
)
from ._proto.singura.vault.v1 import (
    access_pb2,
    access_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    connections_pb2,
    connections_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    oauth_pb2,
    oauth_pb2_grpc,
    organizations_pb2,
    organizations_pb2_grpc,
)
from ._secret import Secret
from .errors import VaultError, from_rpc_error

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_PACKAGE = "/singura.vault.v1."
#: Any grpc.aio client interceptor; it sees every attempt of a call.
AsyncClientInterceptor = grpc.aio.ClientInterceptor


class _Caller:
    """Runs one RPC under the client's policy."""

    def __init__(
        self, metadata: tuple[tuple[str, str], ...], timeout: float | None, retry: RetryPolicy
    ) -> None:
        self._metadata = metadata
        self._timeout = timeout
        self._retry = retry

    async def unary(
        self,
        call: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        method: str,
        request: Req,
        *,
        timeout: float | None,
        request_id: str | None = None,
    ) -> Resp:
        method = _PACKAGE + method
        deadline = Deadline(self._timeout if timeout is None else timeout)
        retries = self._retry.retries if is_idempotent(method, request_id) else 0
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call(request, timeout=deadline.remaining(), metadata=self._metadata)
            except grpc.RpcError as error:
                failure = from_rpc_error(error, method)
                cause: BaseException = error
            await self._give_up_or_wait(failure, cause, attempt, retries, deadline)

    async def stream(
        self,
        call: grpc.aio.UnaryStreamMultiCallable[Req, Resp],
        method: str,
        request: Req,
        *,
        timeout: float | None,
        no_deadline: bool = False,
    ) -> AsyncIterator[Resp]:
        method = _PACKAGE + method
        deadline = Deadline(None if no_deadline else self._timeout if timeout is None else timeout)
        retries = self._retry.retries if is_idempotent(method) else 0
        attempt = 0
        while True:
            attempt += 1
            received = False
            responses = call(request, timeout=deadline.remaining(), metadata=self._metadata)
            try:
                async for response in responses:
                    received = True
                    yield response
                return
            except grpc.RpcError as error:
                failure = from_rpc_error(error, method)
                cause: BaseException = error
            finally:
                # Stops the stream on the server when the caller leaves the loop early.
                responses.cancel()
            # Started over only while nothing of it arrived (see Vault's _Caller.stream).
            await self._give_up_or_wait(
                failure, cause, attempt, 0 if received else retries, deadline
            )

    async def _give_up_or_wait(
        self,
        failure: VaultError,
        cause: BaseException,
        attempt: int,
        retries: int,
        deadline: Deadline,
    ) -> None:
        delay = self._retry.delay(attempt)
        if failure.code != grpc.StatusCode.UNAVAILABLE or attempt > retries:
            raise failure from cause
        if not deadline.allows(delay):
            raise failure from cause
        await asyncio.sleep(delay)


def _request_id(request_id: str | None) -> str:
    """The caller's idempotency key, or a fresh one: with it, a retry is safe."""
    return request_id or str(uuid.uuid4())


class Organizations:
    """OrganizationService: the tenants."""

    def __init__(self, caller: _Caller, channel: grpc.aio.Channel) -> None:
        self._call = caller
        self._stub = organizations_pb2_grpc.OrganizationServiceStub(channel)

    async def create(
        self,
        *,
        name: str,
        slug: str,
        domain: str,
        plan: m.EnumArg,
        settings: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> organizations_pb2.Organization:
        request_id = _request_id(request_id)
        request = organizations_pb2.CreateOrganizationRequest(
            organization=organizations_pb2.Organization(
                name=name,
                slug=slug,
                domain=domain,
                plan=m.enum_value(organizations_pb2.Plan, plan, field="plan"),
                settings=m.struct(settings),
            ),
            request_id=request_id,
        )
        response = await self._call.unary(
            self._stub.CreateOrganization,
            "OrganizationService/CreateOrganization",
            request,
            timeout=timeout,
            request_id=request_id,
        )
        return response.organization

    async def get(
        self, *, organization_id: str, timeout: float | None = None
    ) -> organizations_pb2.Organization:
        request = organizations_pb2.GetOrganizationRequest(organization_id=organization_id)
        return (
            await self._call.unary(
                self._stub.GetOrganization,
                "OrganizationService/GetOrganization",
                request,
                timeout=timeout,
            )
        ).organization

    async def list(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> m.Page[organizations_pb2.Organization]:
        request = organizations_pb2.ListOrganizationsRequest(
            page_size=page_size, page_token=page_token
        )
        response = await self._call.unary(
            self._stub.ListOrganizations,
            "OrganizationService/ListOrganizations",
            request,
            timeout=timeout,
        )
        return m.Page(list(response.organizations), response.next_page_token)

    async def list_all(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[organizations_pb2.Organization]:
        """Every organization, page after page (each page its own call and deadline)."""
        page_token = ""
        while True:
            page = await self.list(page_size=page_size, page_token=page_token, timeout=timeout)
            for item in page.items:
                yield item
            page_token = page.next_page_token
            if not page_token:
                return

    async def delete(
        self, *, organization_id: str, etag: str = "", timeout: float | None = None
    ) -> None:
        request = organizations_pb2.DeleteOrganizationRequest(
            organization_id=organization_id, etag=etag
        )
        await self._call.unary(
            self._stub.DeleteOrganization,
            "OrganizationService/DeleteOrganization",
            request,
            timeout=timeout,
        )


class Connections:
    """ConnectionService: an organization's platform connections."""

    def __init__(self, caller: _Caller, channel: grpc.aio.Channel) -> None:
        self._call = caller
        self._stub = connections_pb2_grpc.ConnectionServiceStub(channel)

    async def create(
        self,
        *,
        organization_id: str,
        platform: m.EnumArg,
        platform_user_id: str,
        display_name: str,
        platform_workspace_id: str = "",
        permissions_granted: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> connections_pb2.Connection:
        request_id = _request_id(request_id)
        request = connections_pb2.CreateConnectionRequest(
            connection=connections_pb2.Connection(
                organization_id=organization_id,
                platform=m.platform(platform),
                platform_user_id=platform_user_id,
                platform_workspace_id=platform_workspace_id,
                display_name=display_name,
                permissions_granted=permissions_granted,
                metadata=m.struct(metadata),
            ),
            request_id=request_id,
        )
        return (
            await self._call.unary(
                self._stub.CreateConnection,
                "ConnectionService/CreateConnection",
                request,
                timeout=timeout,
                request_id=request_id,
            )
        ).connection

    async def get(
        self, *, organization_id: str, connection_id: str, timeout: float | None = None
    ) -> connections_pb2.Connection:
        request = connections_pb2.GetConnectionRequest(
            organization_id=organization_id, connection_id=connection_id
        )
        return (
            await self._call.unary(
                self._stub.GetConnection,
                "ConnectionService/GetConnection",
                request,
                timeout=timeout,
            )
        ).connection

    async def list(
        self,
        *,
        organization_id: str,
        platform: m.EnumArg = 0,
        status: m.EnumArg = 0,
        scope_drift: m.EnumArg = 0,
        page_size: int = 0,
        page_token: str = "",
        show_deleted: bool = False,
        timeout: float | None = None,
    ) -> m.Page[connections_pb2.Connection]:
        request = connections_pb2.ListConnectionsRequest(
            organization_id=organization_id,
            platform=m.platform(platform),
            status=m.enum_value(connections_pb2.ConnectionStatus, status, field="status"),
            scope_drift=m.enum_value(connections_pb2.ScopeDrift, scope_drift, field="scope_drift"),
            page_size=page_size,
            page_token=page_token,
            show_deleted=show_deleted,
        )
        response = await self._call.unary(
            self._stub.ListConnections,
            "ConnectionService/ListConnections",
            request,
            timeout=timeout,
        )
        return m.Page(list(response.connections), response.next_page_token)

    async def update_status(
        self,
        *,
        organization_id: str,
        connection_id: str,
        status: m.EnumArg,
        reason: str,
        etag: str = "",
        timeout: float | None = None,
    ) -> connections_pb2.Connection:
        request = connections_pb2.UpdateConnectionStatusRequest(
            organization_id=organization_id,
            connection_id=connection_id,
            status=m.enum_value(connections_pb2.ConnectionStatus, status, field="status"),
            reason=reason,
            etag=etag,
        )
        return (
            await self._call.unary(
                self._stub.UpdateConnectionStatus,
                "ConnectionService/UpdateConnectionStatus",
                request,
                timeout=timeout,
            )
        ).connection

    async def delete(
        self,
        *,
        organization_id: str,
        connection_id: str,
        etag: str = "",
        revoke_at_provider: bool = False,
        force: bool = False,
        timeout: float | None = None,
    ) -> connections_pb2.ProviderRevocation | None:
        """Deletes the connection: recoverable with ``undelete`` until its purge_time
        (the vault's recovery window), or at once with ``force``; what the platform said
        when revoke_at_provider was set."""
        request = connections_pb2.DeleteConnectionRequest(
            organization_id=organization_id,
            connection_id=connection_id,
            etag=etag,
            revoke_at_provider=revoke_at_provider,
            force=force,
        )
        response = await self._call.unary(
            self._stub.DeleteConnection,
            "ConnectionService/DeleteConnection",
            request,
            timeout=timeout,
        )
        return response.provider_revocation if response.HasField("provider_revocation") else None

    async def undelete(
        self, *, organization_id: str, connection_id: str, timeout: float | None = None
    ) -> connections_pb2.Connection:
        """Restores a deleted connection with its credentials, before it is purged."""
        request = connections_pb2.UndeleteConnectionRequest(
            organization_id=organization_id, connection_id=connection_id
        )
        return (
            await self._call.unary(
                self._stub.UndeleteConnection,
                "ConnectionService/UndeleteConnection",
                request,
                timeout=timeout,
            )
        ).connection


class Credentials:
    """CredentialService: encrypted secrets of connections, in immutable versions."""

    def __init__(self, caller: _Caller, channel: grpc.aio.Channel) -> None:
        self._call = caller
        self._stub = credentials_pb2_grpc.CredentialServiceStub(channel)

    async def store(
        self,
        *,
        organization_id: str,
        connection_id: str,
        type: m.EnumArg,
        value: str | Secret,
        expire_time: datetime | None = None,
        request_id: str | None = None,
        expected_version: int | None = None,
        timeout: float | None = None,
    ) -> credentials_pb2.Credential:
        """Stores a new version; returns its metadata (never the value). Retried after
        UNAVAILABLE with the same request_id (generated when not given), so it is stored once.
        With ``expected_version`` (0: none yet) it is a check-and-set: ABORTED (raised as
        its VaultError, reason CREDENTIAL_VERSION_MISMATCH) unless that version is current."""
        request_id = _request_id(request_id)
        request = credentials_pb2.StoreCredentialRequest(
            organization_id=organization_id,
            connection_id=connection_id,
            type=m.credential_type(type),
            value=m.plain(value),
            expire_time=m.timestamp(expire_time),
            request_id=request_id,
        )
        if expected_version is not None:
            request.expected_version = expected_version
        return (
            await self._call.unary(
                self._stub.StoreCredential,
                "CredentialService/StoreCredential",
                request,
                timeout=timeout,
                request_id=request_id,
            )
        ).credential

    async def reveal(
        self,
        *,
        organization_id: str,
        connection_id: str,
        type: m.EnumArg,
        version: int = 0,
        timeout: float | None = None,
    ) -> m.RevealedCredential:
        """The value of the current (or a named) version, as a Secret; audited."""
        request = credentials_pb2.RevealCredentialRequest(
            organization_id=organization_id,
            connection_id=connection_id,
            type=m.credential_type(type),
            version=version,
        )
        return m.revealed(
            await self._call.unary(
                self._stub.RevealCredential,
                "CredentialService/RevealCredential",
                request,
                timeout=timeout,
            )
        )

    async def batch_reveal(
        self,
        *,
        organization_id: str,
        items: Sequence[m.BatchRevealItem],
        timeout: float | None = None,
    ) -> list[m.BatchRevealResult]:
        """Up to 100 credentials in one call; one result per item, in order."""
        request = m.batch_items(organization_id, items)
        return m.batch_results(
            await self._call.unary(
                self._stub.BatchRevealCredentials,
                "CredentialService/BatchRevealCredentials",
                request,
                timeout=timeout,
            )
        )

    async def get(
        self, *, organization_id: str, credential_id: str, timeout: float | None = None
    ) -> credentials_pb2.Credential:
        request = credentials_pb2.GetCredentialRequest(
            organization_id=organization_id, credential_id=credential_id
        )
        return (
            await self._call.unary(
                self._stub.GetCredential,
                "CredentialService/GetCredential",
                request,
                timeout=timeout,
            )
        ).credential

    async def list(
        self,
        *,
        organization_id: str,
        connection_id: str,
        type: m.EnumArg = 0,
        state: m.EnumArg = 0,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> m.Page[credentials_pb2.Credential]:
        request = credentials_pb2.ListCredentialsRequest(
            organization_id=organization_id,
            connection_id=connection_id,
            type=m.credential_type(type),
            state=m.enum_value(credentials_pb2.CredentialState, state, field="state"),
            page_size=page_size,
            page_token=page_token,
        )
        response = await self._call.unary(
            self._stub.ListCredentials,
            "CredentialService/ListCredentials",
            request,
            timeout=timeout,
        )
        return m.Page(list(response.credentials), response.next_page_token)

    async def versions(
        self,
        *,
        organization_id: str,
        connection_id: str,
        type: m.EnumArg,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> m.Page[credentials_pb2.Credential]:
        """ListCredentialVersions: every version of one type, newest first."""
        request = credentials_pb2.ListCredentialVersionsRequest(
            organization_id=organization_id,
            connection_id=connection_id,
            type=m.credential_type(type),
            page_size=page_size,
            page_token=page_token,
        )
        response = await self._call.unary(
            self._stub.ListCredentialVersions,
            "CredentialService/ListCredentialVersions",
            request,
            timeout=timeout,
        )
        return m.Page(list(response.credentials), response.next_page_token)


class Access:
    """AccessService: API keys (admin keys only)."""

    def __init__(self, caller: _Caller, channel: grpc.aio.Channel) -> None:
        self._call = caller
        self._stub = access_pb2_grpc.AccessServiceStub(channel)

    async def create_api_key(
        self,
        *,
        organization_id: str = "",
        roles: Sequence[m.EnumArg] = (),
        name: str = "",
        expire_time: datetime | None = None,
        timeout: float | None = None,
    ) -> m.CreatedApiKey:
        """A new key; its secret (the full key) comes back once, as a Secret. Never retried."""
        request = access_pb2.CreateApiKeyRequest(
            organization_id=organization_id,
            roles=[
                m.enum_value(access_pb2.ApiKeyRole, role, field=f"roles[{i}]")
                for i, role in enumerate(roles)
            ],
            name=name,
            expire_time=m.timestamp(expire_time),
        )
        return m.created_api_key(
            await self._call.unary(
                self._stub.CreateApiKey, "AccessService/CreateApiKey", request, timeout=timeout
            )
        )

    async def list_api_keys(
        self,
        *,
        organization_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> m.Page[access_pb2.ApiKey]:
        request = access_pb2.ListApiKeysRequest(
            organization_id=organization_id, page_size=page_size, page_token=page_token
        )
        response = await self._call.unary(
            self._stub.ListApiKeys, "AccessService/ListApiKeys", request, timeout=timeout
        )
        return m.Page(list(response.api_keys), response.next_page_token)

    async def revoke_api_key(
        self, *, key_id: str, timeout: float | None = None
    ) -> access_pb2.ApiKey:
        request = access_pb2.RevokeApiKeyRequest(key_id=key_id)
        return (
            await self._call.unary(
                self._stub.RevokeApiKey, "AccessService/RevokeApiKey", request, timeout=timeout
            )
        ).api_key


class OAuth:
    """OAuthService: OAuth clients, fresh access tokens, the authorization-code flow."""

    def __init__(self, caller: _Caller, channel: grpc.aio.Channel) -> None:
        self._call = caller
        self._stub = oauth_pb2_grpc.OAuthServiceStub(channel)

    async def set_client(
        self,
        *,
        organization_id: str,
        platform: m.EnumArg,
        client_id: str,
        client_secret: str | Secret,
        token_url: str = "",
        revocation_url: str = "",
        scopes: Sequence[str] = (),
        auth_method: m.EnumArg = 0,
        redirect_uris: Sequence[str] = (),
        authorization_url: str = "",
        timeout: float | None = None,
    ) -> oauth_pb2.OAuthClient:
        """Registers (or replaces) the organization's OAuth client for a platform."""
        client = oauth_pb2.OAuthClient(
            organization_id=organization_id,
            platform=m.platform(platform),
            client_id=client_id,
            client_secret=m.plain(client_secret),
            token_url=token_url,
            revocation_url=revocation_url,
            scopes=scopes,
            auth_method=m.enum_value(oauth_pb2.ClientAuthMethod, auth_method, field="auth_method"),
            redirect_uris=redirect_uris,
            authorization_url=authorization_url,
        )
        request = oauth_pb2.SetOAuthClientRequest(client=client)
        return (
            await self._call.unary(
                self._stub.SetOAuthClient, "OAuthService/SetOAuthClient", request, timeout=timeout
            )
        ).client

    async def get_client(
        self, *, organization_id: str, platform: m.EnumArg, timeout: float | None = None
    ) -> oauth_pb2.OAuthClient:
        request = oauth_pb2.GetOAuthClientRequest(
            organization_id=organization_id, platform=m.platform(platform)
        )
        return (
            await self._call.unary(
                self._stub.GetOAuthClient, "OAuthService/GetOAuthClient", request, timeout=timeout
            )
        ).client

    async def get_access_token(
        self,
        *,
        organization_id: str,
        connection_id: str,
        min_valid_for: timedelta | None = None,
        timeout: float | None = None,
    ) -> m.AccessToken:
        """The connection's access token (as a Secret), refreshed first when it is due."""
        request = oauth_pb2.GetAccessTokenRequest(
            organization_id=organization_id,
            connection_id=connection_id,
            min_valid_for=m.duration(min_valid_for),
        )
        return m.access_token(
            await self._call.unary(
                self._stub.GetAccessToken, "OAuthService/GetAccessToken", request, timeout=timeout
            )
        )

    async def refresh_connection(
        self,
        *,
        organization_id: str,
        connection_id: str,
        force: bool = False,
        timeout: float | None = None,
    ) -> oauth_pb2.RefreshConnectionResponse:
        request = oauth_pb2.RefreshConnectionRequest(
            organization_id=organization_id, connection_id=connection_id, force=force
        )
        return await self._call.unary(
            self._stub.RefreshConnection, "OAuthService/RefreshConnection", request, timeout=timeout
        )

    async def start_authorization(
        self,
        *,
        organization_id: str,
        platform: m.EnumArg,
        redirect_uri: str,
        scopes: Sequence[str] = (),
        connection_id: str = "",
        display_name: str = "",
        login_hint: str = "",
        extra_params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> oauth_pb2.StartAuthorizationResponse:
        """The URL to send the user's browser to, and the state to expect back."""
        request = oauth_pb2.StartAuthorizationRequest(
            organization_id=organization_id,
            platform=m.platform(platform),
            redirect_uri=redirect_uri,
            scopes=scopes,
            connection_id=connection_id,
            display_name=display_name,
            login_hint=login_hint,
            extra_params=extra_params,
        )
        return await self._call.unary(
            self._stub.StartAuthorization,
            "OAuthService/StartAuthorization",
            request,
            timeout=timeout,
        )

    async def complete_authorization(
        self,
        *,
        organization_id: str,
        state: str,
        code: str | Secret = "",
        error: str = "",
        error_description: str = "",
        allow_identity_change: bool = False,
        timeout: float | None = None,
    ) -> oauth_pb2.CompleteAuthorizationResponse:
        """Exchanges what the provider sent to the redirect URI; stores the tokens."""
        request = oauth_pb2.CompleteAuthorizationRequest(
            organization_id=organization_id,
            state=state,
            code=m.plain(code),
            error=error,
            error_description=error_description,
            allow_identity_change=allow_identity_change,
        )
        return await self._call.unary(
            self._stub.CompleteAuthorization,
            "OAuthService/CompleteAuthorization",
            request,
            timeout=timeout,
        )


class Audit:
    """AuditService: the hash-chained audit trail."""

    def __init__(self, caller: _Caller, channel: grpc.aio.Channel) -> None:
        self._call = caller
        self._stub = audit_pb2_grpc.AuditServiceStub(channel)

    async def export(
        self,
        *,
        organization_id: str,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        action: str = "",
        resource_type: str = "",
        resource_id: str = "",
        actor: str = "",
        outcome: m.EnumArg = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[audit_pb2.AuditEvent]:
        """Every matching event, oldest first, over one stream. The deadline covers the
        whole stream: pass a larger ``timeout`` for a large export."""
        request = audit_pb2.ExportAuditEventsRequest(
            organization_id=organization_id,
            filter=m.audit_filter(
                start_time=start_time,
                end_time=end_time,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                actor=actor,
                outcome=outcome,
            ),
        )
        async for batch in self._call.stream(
            self._stub.ExportAuditEvents, "AuditService/ExportAuditEvents", request, timeout=timeout
        ):
            for event in batch.events:
                yield event

    async def list(
        self,
        *,
        organization_id: str,
        action: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> m.Page[audit_pb2.AuditEvent]:
        request = audit_pb2.ListAuditEventsRequest(
            organization_id=organization_id,
            filter=audit_pb2.AuditFilter(action=action),
            page_size=page_size,
            page_token=page_token,
        )
        response = await self._call.unary(
            self._stub.ListAuditEvents, "AuditService/ListAuditEvents", request, timeout=timeout
        )
        return m.Page(list(response.events), response.next_page_token)

    async def verify(
        self, *, organization_id: str, timeout: float | None = None
    ) -> audit_pb2.VerifyAuditChainResponse:
        request = audit_pb2.VerifyAuditChainRequest(organization_id=organization_id)
        return await self._call.unary(
            self._stub.VerifyAuditChain, "AuditService/VerifyAuditChain", request, timeout=timeout
        )


class Events:
    """EventService: what changed, in each organization's commit order (docs/events.md)."""

    def __init__(self, caller: _Caller, channel: grpc.aio.Channel) -> None:
        self._call = caller
        self._stub = events_pb2_grpc.EventServiceStub(channel)

    async def list(
        self,
        *,
        organization_id: str,
        types: Sequence[str] = (),
        after: int = 0,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> events_pb2.ListEventsResponse:
        """One page of events after the cursor ``after``, oldest first; ask again with
        ``after=response.next_after`` while ``response.more``."""
        request = events_pb2.ListEventsRequest(
            organization_id=organization_id, types=list(types), after=after, page_size=page_size
        )
        return await self._call.unary(
            self._stub.ListEvents, "EventService/ListEvents", request, timeout=timeout
        )

    async def watch(
        self,
        *,
        organization_id: str,
        types: Sequence[str] = (),
        after: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[events_pb2.Event]:
        """The events after the cursor ``after``, then each new one as it commits, until
        the caller stops iterating (``timeout`` None: no deadline). After a broken stream,
        watch again with the last event's ``cursor``: no gap, no duplicate."""
        request = events_pb2.WatchEventsRequest(
            organization_id=organization_id, types=list(types), after=after
        )
        async for response in self._call.stream(
            self._stub.WatchEvents,
            "EventService/WatchEvents",
            request,
            timeout=timeout,
            no_deadline=timeout is None,
        ):
            yield response.event


class AsyncVault:
    """An asyncio client of one singura-vault (one grpc.aio channel, bound to the event
    loop it is first used on). The same arguments as Vault; ``interceptors`` are
    grpc.aio client interceptors. ``await vault.close()`` (or ``async with``) when done.
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: str,
        tls: bool | TlsConfig = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        keepalive: Keepalive | None = Keepalive(),  # noqa: B008 - frozen, shared safely
        options: Sequence[tuple[str, str | int]] = (),
        interceptors: Sequence[AsyncClientInterceptor] = (),
    ) -> None:
        metadata = auth_metadata(api_key)
        settings = channel_settings(address, tls, keepalive, options)
        if settings.credentials is None:
            channel = grpc.aio.insecure_channel(
                settings.address, options=settings.options, interceptors=interceptors
            )
        else:
            channel = grpc.aio.secure_channel(
                settings.address,
                settings.credentials,
                options=settings.options,
                interceptors=interceptors,
            )
        self._channel = channel
        self._address = settings.address
        caller = _Caller(metadata, timeout, retry or RetryPolicy())
        self.organizations = Organizations(caller, channel)
        self.connections = Connections(caller, channel)
        self.credentials = Credentials(caller, channel)
        self.access = Access(caller, channel)
        self.oauth = OAuth(caller, channel)
        self.audit = Audit(caller, channel)
        self.events = Events(caller, channel)

    def __repr__(self) -> str:
        return f"<AsyncVault {self._address}>"  # never the API key

    async def close(self, grace: float | None = None) -> None:
        """Closes the channel; after ``grace`` seconds, calls still running are cancelled."""
        await self._channel.close(grace)

    async def __aenter__(self) -> AsyncVault:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
