"""Refresh an access token (RFC 6749 §6): the grant's parameters and the grant in the answer.

The request, its sending and the reading of the answer are token_request's; the
provider's body is parsed for the grant and, on a disguised refusal, its error code;
nothing else of it is kept. What a failure means is refresh_errors' job.
"""

from __future__ import annotations

import httpx

from singura_vault.providers.catalogue import CATALOGUE, OAuthClientConfig, ScopeOnRefresh
from singura_vault.providers.egress import EgressSettings
from singura_vault.providers.outcomes import TokenGrant
from singura_vault.providers.refresh_errors import unparseable
from singura_vault.providers.token_request import (
    expires_in,
    post_token_request,
    scopes,
    tokens,
)


async def refresh(
    http: httpx.AsyncClient,
    settings: EgressSettings,
    client: OAuthClientConfig,
    refresh_token: str,
    workspace_id: str,
) -> TokenGrant:
    """One refresh over http; see TokenEndpointClient.refresh for what it raises."""
    document = await post_token_request(
        http, settings, client, _params(client, refresh_token), workspace_id
    )
    pair = tokens(document)
    if pair is None:
        raise unparseable()
    return TokenGrant(
        access_token=pair[0],
        refresh_token=pair[1],
        expires_in=expires_in(document.get("expires_in")),
        scopes=scopes(document.get("scope")),
    )


def _params(client: OAuthClientConfig, refresh_token: str) -> dict[str, str]:
    entry = CATALOGUE[client.platform]
    params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    wanted = client.scopes
    if entry.scope_on_refresh is ScopeOnRefresh.REQUIRED and not wanted:
        wanted = entry.default_scopes
    if entry.scope_on_refresh is not ScopeOnRefresh.OMIT and wanted:
        params["scope"] = entry.scope_separator.join(wanted)
    return params
