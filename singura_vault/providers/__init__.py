"""Outbound OAuth 2.0: authorize, exchange codes, refresh and revoke tokens at SaaS providers.

catalogue: what each platform's endpoints are and how they speak; authorization: the
state, PKCE pair and URL that start the authorization-code flow; egress: where
credentials may be sent and the HTTP client that sends them; exchange: one bounded
request and its answer; client_auth: how the OAuth client authenticates;
token_request: one POST to a token endpoint, shared by code_exchange and
token_refresh; token_revocation: the revoke call; refresh_errors: what a failed
token request means; outcomes: the values the calls hand back; token_endpoint: the
TokenEndpointClient that makes the calls; webhook_egress: where webhooks may be sent
(no private addresses in production, checked at connect time) and the client that
sends them.
"""

from singura_vault.domain.oauth import ClientAuthMethod
from singura_vault.providers.authorization import (
    STATE_BYTES,
    ExtraParamNotAllowed,
    Pkce,
    authorization_url,
    check_extra_params,
    new_pkce,
    new_state,
    platform_uses_pkce,
)
from singura_vault.providers.catalogue import (
    CATALOGUE,
    OAuthClientConfig,
    PlatformEndpoints,
    RequestEncoding,
    ResponseDialect,
    RevocationStyle,
    ScopeOnRefresh,
    authorization_url_template,
    resolve_authorization_url,
    resolve_revocation_url,
    resolve_token_url,
    revocation_url_template,
    token_url_template,
)
from singura_vault.providers.egress import EgressSettings, UnsafeEndpoint, check_endpoint_url
from singura_vault.providers.token_endpoint import (
    CodeGrant,
    FailureKind,
    RefreshFailed,
    RevocationOutcome,
    RevocationResult,
    TokenEndpointClient,
    TokenGrant,
    sanitize_error_code,
)
from singura_vault.providers.webhook_egress import (
    RefusedAddress,
    SendResult,
    WebhookEgressSettings,
    WebhookSender,
    check_webhook_url,
    forbidden_address,
)

__all__ = [
    "CATALOGUE",
    "STATE_BYTES",
    "ClientAuthMethod",
    "CodeGrant",
    "EgressSettings",
    "ExtraParamNotAllowed",
    "FailureKind",
    "OAuthClientConfig",
    "Pkce",
    "PlatformEndpoints",
    "RefreshFailed",
    "RefusedAddress",
    "RequestEncoding",
    "ResponseDialect",
    "RevocationOutcome",
    "RevocationResult",
    "RevocationStyle",
    "ScopeOnRefresh",
    "SendResult",
    "TokenEndpointClient",
    "TokenGrant",
    "UnsafeEndpoint",
    "WebhookEgressSettings",
    "WebhookSender",
    "authorization_url",
    "authorization_url_template",
    "check_endpoint_url",
    "check_extra_params",
    "check_webhook_url",
    "forbidden_address",
    "new_pkce",
    "new_state",
    "platform_uses_pkce",
    "resolve_authorization_url",
    "resolve_revocation_url",
    "resolve_token_url",
    "revocation_url_template",
    "sanitize_error_code",
    "token_url_template",
]
