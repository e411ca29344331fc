"""CompleteAuthorization: the second half of the connect flow (oauth_connect.py).

It takes what the provider sent to the app's redirect URI (the state and a single-use
code, or an error), and under the pending authorization's row lock: refuses an
unknown, expired or foreign state; answers a retry of a used state with the stored
result (same code) or refuses it; records a provider's refusal; else exchanges the
code at the token endpoint with the client secret and the PKCE verifier, which stay
in the vault, and stores the grant (oauth_grant.py). The lock is held from before the
exchange until the tokens commit, so a state is exchanged once. After the commit, a
reconnect's previous refresh token is revoked at the provider, best effort.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field

from singura_vault.domain.connections import Connection
from singura_vault.domain.oauth import PendingAuthorization
from singura_vault.errors import (
    FailedPrecondition,
    InvalidArgument,
    InvariantBroken,
    Unavailable,
    VaultError,
)
from singura_vault.logs import get_logger
from singura_vault.providers import (
    FailureKind,
    RefreshFailed,
    TokenEndpointClient,
    UnsafeEndpoint,
    sanitize_error_code,
)
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.repositories.oauth_authorizations import (
    AuthorizationRepository,
    CompletionTransaction,
)
from singura_vault.service import validation
from singura_vault.service.authz import WRITE, Authorizer
from singura_vault.service.oauth_clients import client_config
from singura_vault.service.oauth_grant import GrantWriter, failure_details, record_failure
from singura_vault.service.oauth_revocation import ProviderRevocation
from singura_vault.service.oauth_start import STATE_LENGTH, state_hash
from singura_vault.service.sealing import SealingService

log = get_logger(__name__)

_STATE = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_CODE_BYTES = 4096


@dataclass(frozen=True)
class CompleteInput:
    """The client-supplied fields of CompleteAuthorization."""

    organization_id: str = ""
    state: str = field(default="", repr=False)
    code: str = field(default="", repr=False)
    error: str = ""
    error_description: str = field(default="", repr=False)
    allow_identity_change: bool = False


@dataclass(frozen=True)
class CompletedAuthorization:
    connection: Connection
    requested_scopes: tuple[str, ...]
    granted_scopes: tuple[str, ...]
    reauthorized: bool
    # Revoking the reconnected connection's previous refresh token; None if not tried.
    previous_refresh_token_revocation: ProviderRevocation | None = None
    # Slack's user-token scopes, apart from the bot scopes in granted_scopes.
    granted_user_scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Stored:
    """The locked part's success: the answer, and an old refresh token to revoke."""

    result: CompletedAuthorization
    old_refresh_token: str | None = field(default=None, repr=False)


def _code_hash(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8")).digest()


class AuthorizationCompleter:
    """CompleteAuthorization."""

    def __init__(
        self,
        authorizations: AuthorizationRepository,
        oauth: OAuthRepository,
        sealing: SealingService,
        endpoint: TokenEndpointClient,
        grants: GrantWriter,
        authorizer: Authorizer,
        *,
        lock_wait_s: float,
    ) -> None:
        self._authorizations = authorizations
        self._oauth = oauth
        self._sealing = sealing
        self._endpoint = endpoint
        self._grants = grants
        self._authz = authorizer
        self._lock_wait_s = lock_wait_s

    async def complete(self, data: CompleteInput) -> CompletedAuthorization:
        org_id = validation.parse_uuid("organization_id", data.organization_id)
        self._authz.require(org_id, WRITE, "connect platform accounts")
        if not _STATE.fullmatch(data.state):
            raise InvalidArgument(
                "state",
                f"must be the {STATE_LENGTH}-character state StartAuthorization returned "
                f"(got {len(data.state)} characters"
                + ("" if len(data.state) != STATE_LENGTH else " outside base64url")
                + ")",
            )
        error = data.error
        if error:
            if len(error) > 200:
                raise InvalidArgument("error", "is longer than 200 characters")
        else:
            if not data.code:
                raise InvalidArgument(
                    "code", "is required (or error, when the provider sent one instead)"
                )
            if len(data.code.encode("utf-8")) > MAX_CODE_BYTES:
                raise InvalidArgument("code", f"is longer than the limit of {MAX_CODE_BYTES} bytes")
        code_hash = _code_hash(data.code) if not error else None
        async with self._authorizations.completion(
            org_id, state_hash(data.state), self._lock_wait_s
        ) as (tx, pending):
            outcome = await self._complete_locked(tx, pending, data, code_hash)
        if isinstance(outcome, VaultError):
            raise outcome
        result = outcome.result
        if outcome.old_refresh_token is not None:
            revocation = await self._revoke_previous(result.connection, outcome.old_refresh_token)
            result = CompletedAuthorization(
                result.connection,
                result.requested_scopes,
                result.granted_scopes,
                result.reauthorized,
                revocation,
                result.granted_user_scopes,
            )
        return result

    async def _complete_locked(
        self,
        tx: CompletionTransaction,
        pending: PendingAuthorization | None,
        data: CompleteInput,
        code_hash: bytes | None,
    ) -> _Stored | VaultError:
        """Under the state's row lock. An error is returned, not raised, so that the
        state's consumption commits with the transaction."""
        if pending is None:
            owner = await tx.consume_foreign(state_hash(data.state))
            if owner is not None:
                return FailedPrecondition(
                    "the state was started by another organization than "
                    f"{tx.organization_id}; it is now used up: start the authorization again "
                    "in the right organization",
                    reason="OAUTH_STATE_OTHER_ORGANIZATION",
                )
            return FailedPrecondition(
                "the state is unknown: it was not returned by StartAuthorization, or it was "
                "cleaned up after expiring; start the authorization again",
                reason="OAUTH_STATE_UNKNOWN",
            )
        if pending.consumed_at is not None:
            return await self._replay(tx, pending, code_hash)
        if pending.expired:
            await tx.consume(pending.id, "failed")
            return FailedPrecondition(
                f"the state expired at {pending.expires_at:%Y-%m-%dT%H:%M:%SZ} "
                "(SINGURA_OAUTH_STATE_TTL after it was started); start the authorization again",
                reason="OAUTH_STATE_EXPIRED",
            )
        if data.error:
            return await self._denied(tx, pending, sanitize_error_code(data.error))
        if code_hash is None:
            raise InvariantBroken("_complete_locked: code_hash is None")
        return await self._exchange(tx, pending, data, code_hash)

    async def _replay(
        self, tx: CompletionTransaction, pending: PendingAuthorization, code_hash: bytes | None
    ) -> _Stored | VaultError:
        """A used state: the stored answer for a retry with the same code, else refused."""
        succeeded = pending.outcome in ("authorized", "reauthorized")
        if (
            succeeded
            and code_hash is not None
            and pending.code_hash is not None
            and hmac.compare_digest(code_hash, pending.code_hash)
            and pending.result_connection_id is not None
        ):
            connection = await tx.connection(pending.result_connection_id)
            if connection is not None:
                return _Stored(
                    CompletedAuthorization(
                        connection,
                        pending.requested_scopes,
                        pending.result_granted_scopes or (),
                        bool(pending.result_reauthorized),
                        # Not kept on the authorization: the connection's, as stored.
                        granted_user_scopes=connection.granted_user_scopes,
                    )
                )
        return FailedPrecondition(
            "the state was already used by an earlier CompleteAuthorization (a state is "
            "single use); start the authorization again",
            reason="OAUTH_STATE_USED",
        )

    async def _denied(
        self, tx: CompletionTransaction, pending: PendingAuthorization, error: str
    ) -> VaultError:
        await tx.consume(pending.id, "denied")
        await tx.audit(
            "connection.authorization_failed",
            "failure",
            str(pending.reconnect_connection_id or pending.id),
            failure_details(pending, "provider_error", error),
        )
        log.info(
            "oauth_authorization_denied",
            authorization_id=str(pending.id),
            platform=pending.platform.value,
            oauth_error=error,
        )
        return FailedPrecondition(
            f"the provider did not authorize the connection: it answered {error!r} "
            "(access_denied: the user declined); nothing was stored"
            + ("; the connection keeps its tokens" if pending.reconnect_connection_id else ""),
            reason="OAUTH_AUTHORIZATION_DENIED",
            metadata={"oauth_error": error},
        )

    async def _exchange(
        self,
        tx: CompletionTransaction,
        pending: PendingAuthorization,
        data: CompleteInput,
        code_hash: bytes,
    ) -> _Stored | VaultError:
        current: Connection | None = None
        if pending.reconnect_connection_id is not None:
            current = await tx.lock_connection(pending.reconnect_connection_id)
            # A deleted connection (migration 030) is not reconnected: undelete it first.
            if current is None or current.deleted:
                return await record_failure(
                    tx,
                    pending,
                    "connection_deleted",
                    None,
                    FailedPrecondition(
                        f"connection {pending.reconnect_connection_id} was deleted after the "
                        "reconnect started; start a new authorization (undelete it first if "
                        "it is still recoverable)",
                        reason="OAUTH_RECONNECT_TARGET_GONE",
                    ),
                )
        client = await tx.client(pending.platform)
        if client is None:
            return await record_failure(
                tx,
                pending,
                "no_oauth_client",
                None,
                FailedPrecondition(
                    f"organization {tx.organization_id} no longer has an OAuth client for "
                    f"{pending.platform.value}; register one with SetOAuthClient and start again",
                    reason="NO_OAUTH_CLIENT",
                ),
            )
        try:
            config = await client_config(self._sealing, client)
            verifier = (
                await self._sealing.open_pkce_verifier(
                    tx.organization_id, pending.id, pending.verifier, pending.data_key
                )
                if pending.verifier is not None
                else None
            )
        except VaultError as exc:
            return await record_failure(tx, pending, "unusable_secret", None, exc)
        workspace = current.platform_workspace_id if current is not None else ""
        try:
            grant = await self._endpoint.exchange_code(
                config,
                code=data.code,
                redirect_uri=pending.redirect_uri,
                code_verifier=verifier,
                workspace_id=workspace,
            )
        except UnsafeEndpoint as exc:
            return await record_failure(
                tx,
                pending,
                "unsafe_endpoint",
                None,
                FailedPrecondition(
                    f"{exc}; correct it with SetOAuthClient", reason="OAUTH_CLIENT_MISCONFIGURED"
                ),
            )
        except RefreshFailed as failure:
            return await record_failure(
                tx, pending, failure.kind.value, failure.oauth_error, _exchange_error(failure)
            )
        stored = await self._grants.store(
            tx,
            pending,
            current,
            grant,
            code_hash,
            allow_identity_change=data.allow_identity_change,
        )
        if isinstance(stored, VaultError):
            return stored
        connection = stored.connection
        return _Stored(
            CompletedAuthorization(
                connection,
                pending.requested_scopes,
                stored.granted_scopes,
                stored.reauthorized,
                granted_user_scopes=connection.granted_user_scopes,
            ),
            stored.old_refresh_token,
        )

    async def _revoke_previous(
        self, connection: Connection, old_refresh_token: str
    ) -> ProviderRevocation:
        """Best effort, after the new tokens committed: the outcome is reported and
        audited (connection.provider_revocation), never raised."""
        client = await self._oauth.find_client(connection.organization_id, connection.platform)
        if client is None:
            outcome = ProviderRevocation("skipped", "the OAuth client was removed meanwhile")
        else:
            try:
                config = await client_config(self._sealing, client)
            except VaultError as exc:
                outcome = ProviderRevocation("failed", exc.message)
            else:
                result = await self._endpoint.revoke(
                    config,
                    old_refresh_token,
                    token_type_hint="refresh_token",  # noqa: S106 - a hint's name
                    workspace_id=connection.platform_workspace_id,
                )
                outcome = ProviderRevocation(result.outcome.value, result.detail)
        await self._oauth.record_provider_revocation(
            connection.organization_id,
            connection.id,
            "failure" if outcome.outcome == "failed" else "success",
            {
                "platform": connection.platform.value,
                "outcome": outcome.outcome,
                "detail": outcome.detail,
                "previous_refresh_token": True,
            },
        )
        return outcome


def _exchange_error(failure: RefreshFailed) -> VaultError:
    if failure.kind is FailureKind.TRANSIENT:
        return Unavailable(
            f"the code exchange failed: {failure.reason}", reason="PROVIDER_UNAVAILABLE"
        )
    return FailedPrecondition(
        f"the code exchange failed: {failure.reason}", reason="OAUTH_CODE_REJECTED"
    )
