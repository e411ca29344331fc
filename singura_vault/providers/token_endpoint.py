"""The TokenEndpointClient: one HTTP client through which codes are exchanged and tokens
refreshed and revoked.

The calls themselves live in code_exchange, token_refresh and token_revocation, the
values they hand back in outcomes; those values are re-exported here, where callers
have always imported them from.
"""

from __future__ import annotations

from singura_vault.providers.catalogue import OAuthClientConfig
from singura_vault.providers.code_exchange import exchange_code
from singura_vault.providers.egress import EgressSettings, build_http_client
from singura_vault.providers.outcomes import (
    UNRECOGNIZED,
    CodeGrant,
    FailureKind,
    RefreshFailed,
    RevocationOutcome,
    RevocationResult,
    TokenGrant,
    sanitize_error_code,
)
from singura_vault.providers.token_refresh import refresh
from singura_vault.providers.token_revocation import revoke

__all__ = [
    "UNRECOGNIZED",
    "CodeGrant",
    "FailureKind",
    "RefreshFailed",
    "RevocationOutcome",
    "RevocationResult",
    "TokenEndpointClient",
    "TokenGrant",
    "sanitize_error_code",
]


class TokenEndpointClient:
    """Exchanges codes, refreshes and revokes tokens for any catalogued platform over one
    HTTP client."""

    def __init__(self, settings: EgressSettings) -> None:
        self._settings = settings
        self._http = build_http_client(settings)

    async def __aenter__(self) -> TokenEndpointClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def refresh(
        self, client: OAuthClientConfig, refresh_token: str, *, workspace_id: str = ""
    ) -> TokenGrant:
        """Exchange a refresh token for a new access token (and maybe a new refresh token).

        Raises RefreshFailed for anything the provider or the network did, and
        UnsafeEndpoint when the resolved token URL is not one credentials may go to.
        """
        return await refresh(self._http, self._settings, client, refresh_token, workspace_id)

    async def exchange_code(
        self,
        client: OAuthClientConfig,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str | None,
        workspace_id: str = "",
    ) -> CodeGrant:
        """Exchange an authorization code (with its PKCE verifier, if any) for tokens.

        redirect_uri must be the one the authorization request carried. Raises
        RefreshFailed (invalid_grant: a bad, expired or replayed code, or a mismatched
        redirect_uri or verifier) and UnsafeEndpoint exactly as refresh does.
        """
        return await exchange_code(
            self._http,
            self._settings,
            client,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            workspace_id=workspace_id,
        )

    async def revoke(
        self,
        client: OAuthClientConfig,
        token: str,
        *,
        token_type_hint: str = "refresh_token",  # noqa: S107 -- a hint's name, not a secret
        access_token: str | None = None,
        workspace_id: str = "",
    ) -> RevocationResult:
        """Ask the provider to revoke a token (or, for GitHub and Dropbox, the grant).

        Never raises for provider or network problems, nor for an unsafe configured
        URL: a disconnect should complete and report what it could not do. Bounded
        by revoke_timeout_s.
        """
        return await revoke(
            self._http,
            self._settings,
            client,
            token,
            token_type_hint=token_type_hint,
            access_token=access_token,
            workspace_id=workspace_id,
        )
