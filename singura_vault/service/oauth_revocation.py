"""Revoking a grant at the platform before the vault forgets it (revoke_at_provider).

DeleteConnection and RevokeCredential may first ask the platform to revoke the
token (RFC 7009 or the platform's own call). Whatever the platform answers, and
after at most SINGURA_REVOKE_TIMEOUT, the local delete or revocation goes on: a
provider that is down must not keep a user from disconnecting. The outcome is
returned and audited as connection.provider_revocation, committed before the local
change.
"""

from __future__ import annotations

from dataclasses import dataclass

from singura_vault.domain.connections import Connection
from singura_vault.domain.credentials import CredentialType, EncryptedCredential
from singura_vault.errors import (
    InvalidArgument,
    NotFound,
    VaultError,
    check_etag,
    connection_deleted,
)
from singura_vault.logs import get_logger
from singura_vault.providers import RevocationOutcome, TokenEndpointClient
from singura_vault.repositories.connections import ConnectionRepository
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.service import validation
from singura_vault.service.authz import WRITE, Authorizer
from singura_vault.service.oauth_clients import client_config
from singura_vault.service.sealing import SealingService

log = get_logger(__name__)

SKIPPED = "skipped"
_TOKENS = (CredentialType.ACCESS_TOKEN, CredentialType.REFRESH_TOKEN)


@dataclass(frozen=True)
class ProviderRevocation:
    """What revoking at the provider came to: revoked, not_supported, failed or skipped."""

    outcome: str
    detail: str

    @property
    def revoked(self) -> bool:
        """The platform confirmed it: tokens recovered later are refused there."""
        return self.outcome == RevocationOutcome.REVOKED.value


class ProviderRevoker:
    def __init__(
        self,
        repository: OAuthRepository,
        sealing: SealingService,
        connections: ConnectionRepository,
        endpoint: TokenEndpointClient,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._repository = repository
        self._sealing = sealing
        self._connections = connections
        self._endpoint = endpoint
        self._authz = authorizer or Authorizer()

    async def before_connection_delete(
        self, organization_id: str, connection_id: str, etag: str, *, force: bool = False
    ) -> ProviderRevocation:
        """Revoke the connection's grant with its refresh token (else its access token).
        A stale etag, or a connection already deleted when the delete is not forced,
        is refused first: the grant is not revoked for a delete that would then fail."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "delete connections")
        conn_id = validation.parse_uuid("connection_id", connection_id)
        expected = validation.parse_etag(etag)
        connection = await self._connections.get(org_id, conn_id)
        check_etag(f"connection {conn_id}", expected, connection.version)
        if connection.deleted and not force:
            raise connection_deleted(
                conn_id, "delete it again (delete it with force to purge it now)"
            )
        tokens = await self._repository.current_tokens(org_id, conn_id)
        target = tokens.get(CredentialType.REFRESH_TOKEN) or tokens.get(CredentialType.ACCESS_TOKEN)
        return await self._revoke(
            connection, target, tokens.get(CredentialType.ACCESS_TOKEN), all_grant=True
        )

    async def before_credential_revoke(
        self, organization_id: str, credential_id: str
    ) -> ProviderRevocation:
        """Revoke the named token version at the provider."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "revoke credentials")
        cred_id = validation.parse_uuid("credential_id", credential_id)
        target = await self._repository.sealed_credential(org_id, cred_id)
        if target is None:
            raise NotFound(f"credential {cred_id} not found in organization {org_id}")
        if target.credential.type not in _TOKENS:
            raise InvalidArgument(
                "revoke_at_provider",
                "applies to access and refresh tokens only, not "
                f"{target.credential.type.value} credentials",
            )
        connection = await self._connections.get(org_id, target.credential.connection_id)
        access = (
            target
            if target.credential.type is CredentialType.ACCESS_TOKEN
            else (await self._repository.current_tokens(org_id, connection.id)).get(
                CredentialType.ACCESS_TOKEN
            )
        )
        return await self._revoke(connection, target, access, all_grant=False)

    async def _revoke(
        self,
        connection: Connection,
        target: EncryptedCredential | None,
        access: EncryptedCredential | None,
        *,
        all_grant: bool,
    ) -> ProviderRevocation:
        outcome = await self._ask_provider(connection, target, access)
        await self._repository.record_provider_revocation(
            connection.organization_id,
            connection.id,
            "failure" if outcome.outcome == RevocationOutcome.FAILED.value else "success",
            {
                "platform": connection.platform.value,
                "outcome": outcome.outcome,
                "detail": outcome.detail,
                "credential_id": str(target.credential.id) if target is not None else None,
                "whole_grant": all_grant,
            },
        )
        log.info(
            "oauth_provider_revocation",
            connection_id=str(connection.id),
            platform=connection.platform.value,
            outcome=outcome.outcome,
            detail=outcome.detail,
        )
        return outcome

    async def _ask_provider(
        self,
        connection: Connection,
        target: EncryptedCredential | None,
        access: EncryptedCredential | None,
    ) -> ProviderRevocation:
        client = await self._repository.find_client(connection.organization_id, connection.platform)
        if client is None:
            return ProviderRevocation(
                SKIPPED,
                f"the organization has no OAuth client for {connection.platform.value}",
            )
        if target is None:
            return ProviderRevocation(SKIPPED, "the connection has no token to revoke with")
        try:
            config = await client_config(self._sealing, client)
            token = await self._sealing.open_stored(target)
            access_token = await self._sealing.open_stored(access) if access is not None else None
        except VaultError as exc:  # e.g. a destroyed data key: the delete still goes on
            return ProviderRevocation(RevocationOutcome.FAILED.value, exc.message)
        result = await self._endpoint.revoke(
            config,
            token,
            token_type_hint=target.credential.type.value,
            access_token=access_token,
            workspace_id=connection.platform_workspace_id,
        )
        return ProviderRevocation(result.outcome.value, result.detail)
