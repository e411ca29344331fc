"""Outbound OAuth 2.0: refresh and revoke tokens at SaaS providers' endpoints.

catalogue: what each platform's endpoints are and how they speak; egress: where
credentials may be sent and the HTTP client that sends them; exchange: one bounded
request and its answer; client_auth: how the OAuth client authenticates;
token_refresh and token_revocation: the two calls; refresh_errors: what a failed
refresh means; outcomes: the values the calls hand back; token_endpoint: the
TokenEndpointClient that makes the calls.
"""

from singura_vault.domain import ClientAuthMethod
from singura_vault.providers.catalogue import (
    CATALOGUE,
    OAuthClientConfig,
    PlatformEndpoints,
    RequestEncoding,
    ResponseDialect,
    RevocationStyle,
    ScopeOnRefresh,
    resolve_revocation_url,
    resolve_token_url,
    revocation_url_template,
    token_url_template,
)
from singura_vault.providers.egress import EgressSettings, UnsafeEndpoint, check_endpoint_url
from singura_vault.providers.token_endpoint import (
    FailureKind,
    RefreshFailed,
    RevocationOutcome,
    RevocationResult,
    TokenEndpointClient,
    TokenGrant,
    sanitize_error_code,
)

__all__ = [
    "CATALOGUE",
    "ClientAuthMethod",
    "EgressSettings",
    "FailureKind",
    "OAuthClientConfig",
    "PlatformEndpoints",
    "RefreshFailed",
    "RequestEncoding",
    "ResponseDialect",
    "RevocationOutcome",
    "RevocationResult",
    "RevocationStyle",
    "ScopeOnRefresh",
    "TokenEndpointClient",
    "TokenGrant",
    "UnsafeEndpoint",
    "check_endpoint_url",
    "resolve_revocation_url",
    "resolve_token_url",
    "revocation_url_template",
    "sanitize_error_code",
    "token_url_template",
]
