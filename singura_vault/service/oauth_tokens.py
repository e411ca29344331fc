"""Access-token use cases: GetAccessToken and RefreshConnection.

GetAccessToken reads the current access token's expiry first (metadata, no
plaintext), refreshes only when it is due, and then reveals through the credential
path, so that every token handed out is audited as a reveal of that version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from singura_vault.domain.connections import Connection
from singura_vault.domain.credentials import (
    Credential,
    CredentialState,
    CredentialType,
    CredentialVersionState,
)
from singura_vault.errors import InvalidArgument
from singura_vault.repositories.connections import ConnectionRepository
from singura_vault.repositories.credentials import CredentialRepository
from singura_vault.service import validation
from singura_vault.service.authz import REVEAL, WRITE, Authorizer
from singura_vault.service.credentials import CredentialService
from singura_vault.service.oauth_refresh import TokenRefresher
from singura_vault.service.oauth_token_lifetime import is_fresh

DEFAULT_MIN_VALID_FOR = timedelta(minutes=5)
MAX_MIN_VALID_FOR = timedelta(hours=24)


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    credential: Credential
    refreshed: bool


@dataclass(frozen=True)
class RefreshResult:
    connection: Connection
    access_token: Credential | None
    refreshed: bool


class AccessTokenService:
    def __init__(
        self,
        refresher: TokenRefresher,
        credentials: CredentialService,
        credential_repository: CredentialRepository,
        connections: ConnectionRepository,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._refresher = refresher
        self._credentials = credentials
        self._credential_repository = credential_repository
        self._connections = connections
        self._authz = authorizer or Authorizer()

    async def get(
        self, organization_id: str, connection_id: str, min_valid_for: timedelta | None
    ) -> AccessToken:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, REVEAL, "get access tokens")
        conn_id = validation.parse_uuid("connection_id", connection_id)
        window = _window(min_valid_for)
        now = datetime.now(UTC)

        def fresh(current: Credential) -> bool:
            return (
                current.state is not CredentialState.REVOKED
                # Only when no version is enabled does the read return a disabled one
                # (migration 029): refresh rather than be refused.
                and current.version_state is CredentialVersionState.ENABLED
                and is_fresh(current, now, window)
            )

        # The fresh path, a reveal's two statements: read the current token and, only
        # if it is fresh, decrypt and audit it. Otherwise refresh first (nothing was
        # revealed or audited), then reveal what the refresh left current.
        revealed = await self._credentials.reveal_if(
            org_id, conn_id, CredentialType.ACCESS_TOKEN, fresh
        )
        if revealed is not None:
            credential, value = revealed
            return AccessToken(value, credential, refreshed=False)
        refreshed = await self._refresher.ensure_fresh(org_id, conn_id, window, force=False)
        credential, value = await self._credentials.reveal(
            organization_id, connection_id, CredentialType.ACCESS_TOKEN, 0
        )
        return AccessToken(value, credential, refreshed)

    async def refresh(
        self, organization_id: str, connection_id: str, *, force: bool
    ) -> RefreshResult:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "refresh connections")
        conn_id = validation.parse_uuid("connection_id", connection_id)
        refreshed = await self._refresher.ensure_fresh(
            org_id, conn_id, self._refresher.policy.margin, force=force
        )
        return RefreshResult(
            await self._connections.get(org_id, conn_id),
            await self._current_access_token(org_id, conn_id),
            refreshed,
        )

    async def _current_access_token(
        self, organization_id: UUID, connection_id: UUID
    ) -> Credential | None:
        newest = await self._credential_repository.versions(
            organization_id, connection_id, CredentialType.ACCESS_TOKEN, None, 1
        )
        if not newest or newest[0].state is CredentialState.REVOKED:
            return None
        return newest[0]


def _window(min_valid_for: timedelta | None) -> timedelta:
    if min_valid_for is None or min_valid_for == timedelta(0):
        return DEFAULT_MIN_VALID_FOR
    if min_valid_for < timedelta(0) or min_valid_for > MAX_MIN_VALID_FOR:
        raise InvalidArgument("min_valid_for", "must be a duration from 0 to 24 hours")
    return min_valid_for
