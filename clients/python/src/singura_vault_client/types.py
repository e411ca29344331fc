"""The generated message and enum types the client's results are made of, in one place:
``from singura_vault_client.types import Organization, Credential, AuditEvent``."""

from ._proto.singura.vault.v1.access_pb2 import ApiKey, ApiKeyRole
from ._proto.singura.vault.v1.audit_pb2 import AuditEvent, AuditOutcome, VerifyAuditChainResponse
from ._proto.singura.vault.v1.connections_pb2 import (
    Connection,
    ConnectionStatus,
    Platform,
    ProviderRevocation,
    ProviderRevocationOutcome,
)
from ._proto.singura.vault.v1.credentials_pb2 import Credential, CredentialState, CredentialType
from ._proto.singura.vault.v1.oauth_pb2 import (
    ClientAuthMethod,
    CompleteAuthorizationResponse,
    OAuthClient,
    RefreshConnectionResponse,
    StartAuthorizationResponse,
)
from ._proto.singura.vault.v1.organizations_pb2 import Organization, Plan

__all__ = [
    "ApiKey",
    "ApiKeyRole",
    "AuditEvent",
    "AuditOutcome",
    "ClientAuthMethod",
    "CompleteAuthorizationResponse",
    "Connection",
    "ConnectionStatus",
    "Credential",
    "CredentialState",
    "CredentialType",
    "OAuthClient",
    "Organization",
    "Plan",
    "Platform",
    "ProviderRevocation",
    "ProviderRevocationOutcome",
    "RefreshConnectionResponse",
    "StartAuthorizationResponse",
    "VerifyAuditChainResponse",
]
