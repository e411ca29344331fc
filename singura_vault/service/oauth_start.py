"""StartAuthorization: the first half of the connect flow (oauth_connect.py).

It checks the request against the organization's OAuth client (a registered redirect
URI, matched exactly; a reconnect keeps the connection's platform), mints the state
(256 bits from the CSPRNG) and, where the platform takes it, a PKCE pair, and records
the pending authorization: the state only as its SHA-256 (``state_hash``), the PKCE
verifier sealed, both expiring after SINGURA_OAUTH_STATE_TTL. The state and the URL
are returned to the caller that asked, and to nobody else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from singura_vault.domain.connections import Platform
from singura_vault.domain.oauth import NewAuthorization
from singura_vault.errors import InvalidArgument, NotFound
from singura_vault.logs import get_logger
from singura_vault.providers import new_pkce, new_state, platform_uses_pkce
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.repositories.oauth_authorizations import AuthorizationRepository
from singura_vault.service import validation
from singura_vault.service.authz import WRITE, Authorizer
from singura_vault.service.oauth_authorization_url import build_url, checked_extra_params
from singura_vault.service.oauth_clients import check_redirect_uri
from singura_vault.service.sealing import SealingService

log = get_logger(__name__)

# secrets.token_urlsafe(32): 32 bytes as unpadded base64url.
STATE_LENGTH = 43
MAX_LOGIN_HINT = 255


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


def state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode("ascii")).digest()


class AuthorizationStarter:
    """StartAuthorization."""

    def __init__(
        self,
        authorizations: AuthorizationRepository,
        oauth: OAuthRepository,
        sealing: SealingService,
        authorizer: Authorizer,
        *,
        allow_loopback_http: bool,
        state_ttl: timedelta,
    ) -> None:
        self._authorizations = authorizations
        self._oauth = oauth
        self._sealing = sealing
        self._authz = authorizer
        self._allow_loopback_http = allow_loopback_http
        self._state_ttl = state_ttl

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
        extra = checked_extra_params(platform, data.extra_params)
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
        url = build_url(
            client,
            redirect_uri=redirect_uri,
            scopes=requested,
            state=state,
            pkce=pkce,
            login_hint=login_hint,
            extra_params=extra,
            allow_loopback_http=self._allow_loopback_http,
        )
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
