"""Connecting a platform account: the OAuth authorization-code flow, run by the vault.

StartAuthorization hands the app an authorization URL and an opaque state;
CompleteAuthorization takes what the provider sent to the app's redirect URI (the state
and a single-use code), exchanges the code at the token endpoint with the client
secret and the PKCE verifier -- both of which stay in the vault -- and stores the
tokens as credential versions of a new connection, or of the one being reconnected.
docs/oauth.md, "Connect a workspace (authorization code flow)".

Guarantees:
- The state has 256 bits from the CSPRNG, is stored only as its SHA-256, expires after
  SINGURA_OAUTH_STATE_TTL, and is single use: consumed by the first completion that
  presents it, whatever that completion comes to.
- One exchange per state. The completion holds the authorization row's lock from
  before the code exchange until the connection and its tokens commit; a concurrent
  or later completion with the same state and code gets the stored result, without a
  second provider call (codes are single use there too).
- Nothing secret (state, code, verifier, tokens, client secret) is logged, audited,
  put in an error or returned, other than the state and URL StartAuthorization returns.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from singura_vault.domain import (
    Connection,
    CredentialSlot,
    CredentialType,
    EncryptedValue,
    ExpirySource,
    NewAuthorization,
    OAuthClientRecord,
    PendingAuthorization,
    Platform,
)
from singura_vault.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantBroken,
    NotFound,
    ResourceExhausted,
    Unavailable,
    VaultError,
)
from singura_vault.logs import get_logger
from singura_vault.providers import (
    CATALOGUE,
    CodeGrant,
    ExtraParamNotAllowed,
    FailureKind,
    OAuthClientConfig,
    RefreshFailed,
    TokenEndpointClient,
    UnsafeEndpoint,
    authorization_url,
    check_extra_params,
    new_pkce,
    new_state,
    platform_uses_pkce,
    sanitize_error_code,
)
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.repositories.oauth_authorizations import (
    AuthorizationRepository,
    CompletionTransaction,
)
from singura_vault.service import validation
from singura_vault.service.authz import WRITE, Authorizer
from singura_vault.service.oauth_clients import check_redirect_uri
from singura_vault.service.oauth_refresh import client_config, effective_margin
from singura_vault.service.oauth_revocation import ProviderRevocation
from singura_vault.service.sealing import SealingService

log = get_logger(__name__)

# secrets.token_urlsafe(32): 32 bytes as unpadded base64url.
STATE_LENGTH = 43
_STATE = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_CODE_BYTES = 4096
MAX_EXTRA_PARAMS = 20
MAX_LOGIN_HINT = 255

_Sealer = Callable[[CredentialSlot], Awaitable[EncryptedValue]]


@dataclass(frozen=True)
class StartInput:
    """The client-supplied fields of StartAuthorization."""

    organization_id: str = ""
    platform: Platform | None = None
    redirect_uri: str = ""
    scopes: Sequence[str] = ()
    connection_id: str = ""
    display_name: str = ""
    login_hint: str = field(default="", repr=False)
    extra_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StartedAuthorization:
    """What the app needs: where to send the browser, and the state to expect back."""

    authorization_url: str = field(repr=False)
    state: str = field(repr=False)
    expires_at: datetime


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


def state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode("ascii")).digest()


def _code_hash(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8")).digest()


class ConnectService:
    """StartAuthorization and CompleteAuthorization."""

    def __init__(
        self,
        authorizations: AuthorizationRepository,
        oauth: OAuthRepository,
        sealing: SealingService,
        endpoint: TokenEndpointClient,
        *,
        allow_loopback_http: bool,
        state_ttl: timedelta = timedelta(minutes=10),
        refresh_margin: timedelta = timedelta(minutes=5),
        lock_wait_s: float = 25.0,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._authorizations = authorizations
        self._oauth = oauth
        self._sealing = sealing
        self._endpoint = endpoint
        self._allow_loopback_http = allow_loopback_http
        self._state_ttl = state_ttl
        self._refresh_margin = refresh_margin
        self._lock_wait_s = lock_wait_s
        self._authz = authorizer or Authorizer()

    # -- StartAuthorization -----------------------------------------------------------

    async def start(self, data: StartInput) -> StartedAuthorization:
        org_id = validation.parse_uuid("organization_id", data.organization_id)
        principal = self._authz.require(org_id, WRITE, "connect platform accounts")
        if data.platform is None:
            raise InvalidArgument("platform", "is required", example=Platform.SLACK)
        platform = data.platform
        redirect_uri = check_redirect_uri(
            "redirect_uri", data.redirect_uri, allow_loopback_http=self._allow_loopback_http
        )
        scopes = validation.string_list("scopes", data.scopes, max_items=100, max_length=255)
        reconnect = validation.parse_optional_uuid("connection_id", data.connection_id)
        display_name = validation.text(
            "display_name", data.display_name, min_length=0, max_length=200
        )
        login_hint = validation.text(
            "login_hint", data.login_hint, min_length=0, max_length=MAX_LOGIN_HINT
        )
        extra = self._extra_params(platform, data.extra_params)
        client = await self._oauth.get_client(org_id, platform)
        if redirect_uri not in client.settings.redirect_uris:
            raise InvalidArgument(
                "redirect_uri",
                "is not one of the OAuth client's registered redirect_uris (matched exactly); "
                "register it with SetOAuthClient",
            )
        if reconnect is not None:
            await self._check_reconnect_target(org_id, reconnect, platform)
        requested = scopes or client.settings.scopes
        state = new_state()
        pkce = new_pkce() if platform_uses_pkce(platform) else None
        config = _url_config(client)
        try:
            url = authorization_url(
                config,
                redirect_uri=redirect_uri,
                scopes=requested,
                state=state,
                pkce=pkce,
                login_hint=login_hint,
                extra_params=extra,
                allow_loopback_http=self._allow_loopback_http,
            )
        except UnsafeEndpoint as exc:
            raise FailedPrecondition(
                f"the OAuth client's authorization endpoint is not usable: {exc}; correct it "
                "with SetOAuthClient",
                reason="OAUTH_CLIENT_MISCONFIGURED",
            ) from None
        row_id = uuid4()
        verifier = (
            await self._sealing.seal_pkce_verifier(org_id, row_id, pkce.verifier)
            if pkce is not None
            else None
        )
        expires_at = await self._authorizations.insert(
            NewAuthorization(
                organization_id=org_id,
                id=row_id,
                state_hash=state_hash(state),
                platform=platform,
                redirect_uri=redirect_uri,
                requested_scopes=tuple(requested),
                reconnect_connection_id=reconnect,
                display_name=display_name,
                started_by=principal.key_id,
                verifier=verifier,
            ),
            self._state_ttl,
        )
        log.info(
            "oauth_authorization_started",
            authorization_id=str(row_id),
            platform=platform.value,
            reconnect_connection_id=str(reconnect) if reconnect else None,
            pkce=pkce is not None,
        )
        return StartedAuthorization(url, state, expires_at)

    def _extra_params(self, platform: Platform, extra: Mapping[str, str]) -> dict[str, str]:
        if len(extra) > MAX_EXTRA_PARAMS:
            raise InvalidArgument("extra_params", f"has more than {MAX_EXTRA_PARAMS} entries")
        try:
            check_extra_params(platform, extra)
        except ExtraParamNotAllowed as exc:
            raise InvalidArgument(f"extra_params[{_printable_key(exc.key)}]", str(exc)) from None
        for key, value in extra.items():
            if len(value) > 1024:
                raise InvalidArgument(f"extra_params[{key}]", "is longer than 1024 characters")
        return dict(extra)

    async def _check_reconnect_target(
        self, org_id: UUID, connection_id: UUID, platform: Platform
    ) -> None:
        found = await self._authorizations.connection_platform(org_id, connection_id)
        if found is None:
            raise NotFound(f"connection {connection_id} not found in organization {org_id}")
        if found is not platform:
            raise InvalidArgument(
                "connection_id",
                f"names a {found.value} connection; a reconnect keeps the platform "
                f"(platform is {platform.value})",
            )

    # -- CompleteAuthorization --------------------------------------------------------

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
            _failure_details(pending, "provider_error", error),
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

    async def _failed(
        self,
        tx: CompletionTransaction,
        pending: PendingAuthorization,
        kind: str,
        oauth_error: str | None,
        error: VaultError,
    ) -> VaultError:
        await tx.consume(pending.id, "failed")
        await tx.audit(
            "connection.authorization_failed",
            "failure",
            str(pending.reconnect_connection_id or pending.id),
            _failure_details(pending, kind, oauth_error),
        )
        log.warning(
            "oauth_authorization_failed",
            authorization_id=str(pending.id),
            platform=pending.platform.value,
            kind=kind,
            oauth_error=oauth_error,
        )
        return error

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
                return await self._failed(
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
            return await self._failed(
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
            return await self._failed(tx, pending, "unusable_secret", None, exc)
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
            return await self._failed(
                tx,
                pending,
                "unsafe_endpoint",
                None,
                FailedPrecondition(
                    f"{exc}; correct it with SetOAuthClient", reason="OAUTH_CLIENT_MISCONFIGURED"
                ),
            )
        except RefreshFailed as failure:
            return await self._failed(
                tx, pending, failure.kind.value, failure.oauth_error, _exchange_error(failure)
            )
        return await self._store(tx, pending, current, client, grant, data, code_hash)

    async def _store(
        self,
        tx: CompletionTransaction,
        pending: PendingAuthorization,
        current: Connection | None,
        client: OAuthClientRecord,
        grant: CodeGrant,
        data: CompleteInput,
        code_hash: bytes,
    ) -> _Stored | VaultError:
        granted = grant.scopes if grant.scopes is not None else pending.requested_scopes
        identity_changed = current is not None and _identity_differs(current, grant)
        if identity_changed and not data.allow_identity_change:
            if current is None:
                raise InvariantBroken("_store: current is None")
            return await self._failed(
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
            return await self._failed(
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
            return await self._failed(tx, pending, "connection_refused", None, refused)
        now = datetime.now(UTC)
        expires_at = now + timedelta(seconds=grant.expires_in) if grant.expires_in else None
        expiry_source = _expiry_source(grant)
        access = await tx.store(
            data_key,
            connection_id,
            CredentialType.ACCESS_TOKEN,
            expires_at,
            self._sealer(grant.access_token),
        )
        refresh_version = None
        if grant.refresh_token is not None:
            stored = await tx.store(
                data_key,
                connection_id,
                CredentialType.REFRESH_TOKEN,
                None,
                self._sealer(grant.refresh_token),
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
            raise InvariantBroken("_store: connection is None")
        log.info(
            "oauth_authorization_completed",
            authorization_id=str(pending.id),
            connection_id=str(connection_id),
            platform=pending.platform.value,
            reauthorized=reauthorized,
            access_token_version=access.version,
            refresh_token_version=refresh_version,
        )
        return _Stored(
            CompletedAuthorization(
                connection,
                pending.requested_scopes,
                tuple(granted),
                reauthorized,
                granted_user_scopes=connection.granted_user_scopes,
            ),
            old_refresh,
        )

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

    def _sealer(self, value: str) -> _Sealer:
        async def seal(slot: CredentialSlot) -> EncryptedValue:
            return await self._sealing.seal_for(slot, value.encode("utf-8"))

        return seal

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


def _url_config(client: OAuthClientRecord) -> OAuthClientConfig:
    """What building an authorization URL needs of the client: never its secret."""
    settings = client.settings
    return OAuthClientConfig(
        platform=settings.platform,
        client_id=settings.client_id,
        client_secret="",
        token_url=settings.token_url,
        revocation_url=settings.revocation_url,
        scopes=settings.scopes,
        auth_method=settings.auth_method,
        authorization_url=settings.authorization_url,
        redirect_uris=settings.redirect_uris,
    )


def _identity_differs(current: Connection, grant: CodeGrant) -> bool:
    """Whether the grant names another workspace or user than the connection (only what
    the provider reported is compared: an identity it does not tell cannot differ)."""
    if grant.workspace_id is not None and grant.workspace_id != current.platform_workspace_id:
        return True
    return grant.user_id is not None and grant.user_id != current.platform_user_id


def _failure_details(
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


def _exchange_error(failure: RefreshFailed) -> VaultError:
    if failure.kind is FailureKind.TRANSIENT:
        return Unavailable(
            f"the code exchange failed: {failure.reason}", reason="PROVIDER_UNAVAILABLE"
        )
    return FailedPrecondition(
        f"the code exchange failed: {failure.reason}", reason="OAUTH_CODE_REJECTED"
    )


def _printable_key(key: str) -> str:
    return key if key.isidentifier() and len(key) <= 64 else "?"


def _expiry_source(grant: CodeGrant) -> ExpirySource:
    """Where the code answer's access-token expiry came from (the exchange has already
    put the catalogue's default lifetime in expires_in when the provider sent none)."""
    if grant.expiry_from_catalogue:
        return ExpirySource.CATALOGUE
    return ExpirySource.PROVIDER if grant.expires_in else ExpirySource.NONE
