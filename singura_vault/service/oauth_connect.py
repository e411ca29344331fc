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

The flow lives by job: oauth_start.py (StartAuthorization), oauth_authorization_url.py
(the URL it returns), oauth_complete.py (CompleteAuthorization: the state, the lock and
the code exchange) and oauth_grant.py (storing the grant). ``ConnectService`` puts
them together for the servicer and the composition root.
"""

from __future__ import annotations

from datetime import timedelta

from singura_vault.providers import TokenEndpointClient
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.repositories.oauth_authorizations import AuthorizationRepository
from singura_vault.service.authz import Authorizer
from singura_vault.service.oauth_complete import (
    AuthorizationCompleter,
    CompletedAuthorization,
    CompleteInput,
)
from singura_vault.service.oauth_grant import GrantWriter
from singura_vault.service.oauth_start import AuthorizationStarter, StartedAuthorization, StartInput
from singura_vault.service.sealing import SealingService


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
        authz = authorizer or Authorizer()
        self._starter = AuthorizationStarter(
            authorizations,
            oauth,
            sealing,
            authz,
            allow_loopback_http=allow_loopback_http,
            state_ttl=state_ttl,
        )
        self._completer = AuthorizationCompleter(
            authorizations,
            oauth,
            sealing,
            endpoint,
            GrantWriter(sealing, refresh_margin=refresh_margin),
            authz,
            lock_wait_s=lock_wait_s,
        )

    async def start(self, data: StartInput) -> StartedAuthorization:
        return await self._starter.start(data)

    async def complete(self, data: CompleteInput) -> CompletedAuthorization:
        return await self._completer.complete(data)
