"""Storing what a code exchange granted, under the authorization's lock: the new
connection (or the reconnected one, made ACTIVE with its new scopes and identity), its
access and refresh token as credential versions sealed under the organization's data
key, the state consumed as authorized or reauthorized, and the audit event, all in the
completion's transaction (oauth_complete.py).

A reconnect that would change the connection's workspace or user is refused unless
the caller allows it. Every refusal after the state was found goes through
``record_failure``: the state is used up and the failure audited, without the
provider's tokens or words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from singura_vault.domain.connections import Connection, ExpirySource
from singura_vault.domain.credentials import CredentialType
from singura_vault.domain.oauth import PendingAuthorization
from singura_vault.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvariantBroken,
    ResourceExhausted,
    VaultError,
)
from singura_vault.logs import get_logger
from singura_vault.providers import CATALOGUE, CodeGrant
from singura_vault.repositories.oauth_authorizations import CompletionTransaction
from singura_vault.service.oauth_token_lifetime import effective_margin
from singura_vault.service.sealing import SealingService

log = get_logger(__name__)


@dataclass(frozen=True)
class StoredGrant:
    """The stored connection, and the reconnected one's old refresh token to revoke."""

    connection: Connection
    granted_scopes: tuple[str, ...]
    reauthorized: bool
    old_refresh_token: str | None = field(default=None, repr=False)


class GrantWriter:
    """Writes a code grant's connection and tokens in the completion's transaction."""

    def __init__(self, sealing: SealingService, *, refresh_margin: timedelta) -> None:
        self._sealing = sealing
        self._refresh_margin = refresh_margin

    async def store(
        self,
        tx: CompletionTransaction,
        pending: PendingAuthorization,
        current: Connection | None,
        grant: CodeGrant,
        code_hash: bytes,
        *,
        allow_identity_change: bool,
    ) -> StoredGrant | VaultError:
        """Write the connection and its tokens, consume the state as authorized (or
        reauthorized) and audit it; a refusal is recorded and returned."""
        granted = grant.scopes if grant.scopes is not None else pending.requested_scopes
        identity_changed = current is not None and _identity_differs(current, grant)
        if identity_changed and not allow_identity_change:
            if current is None:
                raise InvariantBroken("store: current is None")
            return await record_failure(
                tx,
                pending,
                "identity_changed",
                None,
                FailedPrecondition(
                    f"the provider's tokens are for another workspace or user than connection "
                    f"{current.id}'s; the connection was left as it was. Set "
                    "allow_identity_change to accept it, or connect it as a new connection",
                    reason="OAUTH_IDENTITY_CHANGED",
                ),
            )
        data_key = await tx.lock_data_key()
        if data_key is None:
            return await record_failure(
                tx,
                pending,
                "no_data_key",
                None,
                FailedPrecondition(
                    f"organization {tx.organization_id} has no live data key to seal the "
                    "tokens with"
                ),
            )
        try:
            connection_id, old_refresh = await self._write_connection(
                tx, pending, current, grant, granted
            )
        except (ResourceExhausted, AlreadyExists) as refused:
            # The code is spent at the provider: the state is used up with it, and the
            # refusal (plan limit, account already connected) is audited.
            return await record_failure(tx, pending, "connection_refused", None, refused)
        now = datetime.now(UTC)
        expires_at = now + timedelta(seconds=grant.expires_in) if grant.expires_in else None
        expiry_source = _expiry_source(grant)
        access = await tx.store(
            data_key,
            connection_id,
            CredentialType.ACCESS_TOKEN,
            expires_at,
            self._sealing.sealer_of(grant.access_token),
        )
        refresh_version = None
        if grant.refresh_token is not None:
            stored = await tx.store(
                data_key,
                connection_id,
                CredentialType.REFRESH_TOKEN,
                None,
                self._sealing.sealer_of(grant.refresh_token),
            )
            refresh_version = stored.version
        next_at = (
            expires_at - effective_margin(access, self._refresh_margin) if expires_at else None
        )
        await tx.refreshed(connection_id, next_at, expiry_source)
        reauthorized = current is not None
        outcome = "reauthorized" if reauthorized else "authorized"
        await tx.consume(
            pending.id,
            outcome,
            code_hash=code_hash,
            connection_id=connection_id,
            reauthorized=reauthorized,
            granted_scopes=granted,
        )
        details = {
            "platform": pending.platform.value,
            "authorization_id": str(pending.id),
            "requested_scopes": list(pending.requested_scopes),
            "granted_scopes": list(granted),
            "granted_user_scopes": list(grant.user_scopes) if grant.user_scopes else None,
            "access_token_version": access.version,
            "refresh_token_version": refresh_version,
            "expire_time": expires_at.isoformat() if expires_at else None,
            "expiry_source": expiry_source.value,
            "identity_changed": identity_changed,
        }
        await tx.audit(f"connection.{outcome}", "success", str(connection_id), details)
        connection = await tx.connection(connection_id)
        if connection is None:
            raise InvariantBroken("store: connection is None")
        log.info(
            "oauth_authorization_completed",
            authorization_id=str(pending.id),
            connection_id=str(connection_id),
            platform=pending.platform.value,
            reauthorized=reauthorized,
            access_token_version=access.version,
            refresh_token_version=refresh_version,
        )
        return StoredGrant(connection, tuple(granted), reauthorized, old_refresh)

    async def _write_connection(
        self,
        tx: CompletionTransaction,
        pending: PendingAuthorization,
        current: Connection | None,
        grant: CodeGrant,
        granted: Sequence[str],
    ) -> tuple[UUID, str | None]:
        """Create the connection, or make the reconnected one ACTIVE with its new scopes
        (Slack's user scopes apart from the bot ones, replaced on a reconnect) and
        identity; its id, and the old refresh token to revoke afterwards, if any."""
        if current is None:
            connection_id = await tx.create_connection(
                pending.platform,
                grant.user_id or "",
                grant.workspace_id or "",
                pending.display_name or f"{pending.platform.value} connection",
                granted,
                pending.requested_scopes,
                grant.user_scopes or (),
            )
            return connection_id, None
        old_refresh: str | None = None
        old = (await tx.current_tokens(current.id)).get(CredentialType.REFRESH_TOKEN)
        if (
            old is not None
            and grant.refresh_token is not None
            # Revoking it elsewhere would end the new grant too (catalogue).
            and CATALOGUE[current.platform].revokes_only_the_token
        ):
            try:
                old_refresh = await self._sealing.open_stored(old)
            except VaultError:
                old_refresh = None  # nothing to revoke with; the reconnect goes on
            if old_refresh == grant.refresh_token:
                old_refresh = None
        await tx.reauthorize_connection(
            current,
            grant.user_id or current.platform_user_id,
            grant.workspace_id if grant.workspace_id is not None else current.platform_workspace_id,
            granted,
            pending.requested_scopes,
            grant.user_scopes or (),
        )
        return current.id, old_refresh


async def record_failure(
    tx: CompletionTransaction,
    pending: PendingAuthorization,
    kind: str,
    oauth_error: str | None,
    error: VaultError,
) -> VaultError:
    """A completion that failed after the state was found: the state is used up, the
    failure audited (connection.authorization_failed) and logged; returns ``error``."""
    await tx.consume(pending.id, "failed")
    await tx.audit(
        "connection.authorization_failed",
        "failure",
        str(pending.reconnect_connection_id or pending.id),
        failure_details(pending, kind, oauth_error),
    )
    log.warning(
        "oauth_authorization_failed",
        authorization_id=str(pending.id),
        platform=pending.platform.value,
        kind=kind,
        oauth_error=oauth_error,
    )
    return error


def failure_details(
    pending: PendingAuthorization, kind: str, oauth_error: str | None
) -> dict[str, object]:
    return {
        "platform": pending.platform.value,
        "authorization_id": str(pending.id),
        "reconnect_connection_id": str(pending.reconnect_connection_id)
        if pending.reconnect_connection_id
        else None,
        "kind": kind,
        "oauth_error": oauth_error,
    }


def _identity_differs(current: Connection, grant: CodeGrant) -> bool:
    """Whether the grant names another workspace or user than the connection (only what
    the provider reported is compared: an identity it does not tell cannot differ)."""
    if grant.workspace_id is not None and grant.workspace_id != current.platform_workspace_id:
        return True
    return grant.user_id is not None and grant.user_id != current.platform_user_id


def _expiry_source(grant: CodeGrant) -> ExpirySource:
    """Where the code answer's access-token expiry came from (the exchange has already
    put the catalogue's default lifetime in expires_in when the provider sent none)."""
    if grant.expiry_from_catalogue:
        return ExpirySource.CATALOGUE
    return ExpirySource.PROVIDER if grant.expires_in else ExpirySource.NONE
