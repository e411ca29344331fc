"""Domain records shared by the service and repository layers, one module per area.

Plain frozen dataclasses and enums: no protobuf, no asyncpg. The API layer maps them to
and from messages; repositories build them from rows. Import a type from its area
module (``singura_vault.domain.credentials``, ``.connections``, ``.oauth``, ...).

The names below are re-exported only for the modules that another lane of issue #28
moves in the same change (service/sealing.py, service/credentials.py,
service/oauth_connect.py, service/oauth_refresh.py, repositories/credential_store.py);
once their import lines name the area modules this re-export goes.
"""

from __future__ import annotations

from singura_vault.domain.api_keys import (
    ApiKey,
    KeyLookup,
    NewApiKey,
)
from singura_vault.domain.audit import (
    AuditEvent,
    AuditFilter,
    ChainHead,
    ChainLink,
    ChainState,
    SignedCheckpoint,
)
from singura_vault.domain.connections import (
    Connection,
    ConnectionChanges,
    ConnectionStatus,
    ExpirySource,
    NewConnection,
    Platform,
    ScopeDrift,
)
from singura_vault.domain.credentials import (
    Credential,
    CredentialSlot,
    CredentialState,
    CredentialType,
    CredentialVersionState,
    EncryptedCredential,
    SealedCredential,
    VersionTransition,
)
from singura_vault.domain.key_management import (
    DataKeyInfo,
    KeyRepair,
    OrganizationKeyMigration,
    OrganizationKeyProviderRow,
    RepairPage,
    RewrapJob,
)
from singura_vault.domain.oauth import (
    ClientAuthMethod,
    NewAuthorization,
    OAuthClientRecord,
    OAuthClientSettings,
    PendingAuthorization,
    RefreshClaim,
    RefreshState,
)
from singura_vault.domain.organizations import (
    NewOrganization,
    Organization,
    OrganizationChanges,
    Plan,
)
from singura_vault.domain.paging import (
    PageCursor,
)
from singura_vault.domain.sealed import (
    EncryptedValue,
    StoredDataKey,
)

__all__ = [
    "ApiKey",
    "AuditEvent",
    "AuditFilter",
    "ChainHead",
    "ChainLink",
    "ChainState",
    "ClientAuthMethod",
    "Connection",
    "ConnectionChanges",
    "ConnectionStatus",
    "Credential",
    "CredentialSlot",
    "CredentialState",
    "CredentialType",
    "CredentialVersionState",
    "DataKeyInfo",
    "EncryptedCredential",
    "EncryptedValue",
    "ExpirySource",
    "KeyLookup",
    "KeyRepair",
    "NewApiKey",
    "NewAuthorization",
    "NewConnection",
    "NewOrganization",
    "OAuthClientRecord",
    "OAuthClientSettings",
    "Organization",
    "OrganizationChanges",
    "OrganizationKeyMigration",
    "OrganizationKeyProviderRow",
    "PageCursor",
    "PendingAuthorization",
    "Plan",
    "Platform",
    "RefreshClaim",
    "RefreshState",
    "RepairPage",
    "RewrapJob",
    "ScopeDrift",
    "SealedCredential",
    "SignedCheckpoint",
    "StoredDataKey",
    "VersionTransition",
]
