"""singura-vault-client: a typed Python client for singura-vault (gRPC).

    from singura_vault_client import Vault

    with Vault("127.0.0.1:50051", api_key=key) as vault:
        org = vault.organizations.create(name="Acme", slug="acme", domain="acme.com", plan="FREE")

``Vault`` is synchronous, ``AsyncVault`` the same API for asyncio. Results are the
generated protobuf messages (re-exported from ``singura_vault_client.types``); a value the
vault reveals comes back as a ``Secret``; every failure is a ``VaultError`` subclass.
"""

from ._aio import AsyncVault
from ._messages import (
    AccessToken,
    BatchRevealItem,
    BatchRevealResult,
    CreatedApiKey,
    EnumArg,
    Page,
    RevealedCredential,
)
from ._policy import Keepalive, RetryPolicy, TlsConfig, is_idempotent
from ._secret import Secret
from ._sync import Vault
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PreconditionViolation,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    VaultError,
)

__version__ = "0.1.0"

__all__ = [
    "Aborted",
    "AccessToken",
    "AlreadyExists",
    "AsyncVault",
    "BatchRevealItem",
    "BatchRevealResult",
    "Cancelled",
    "CreatedApiKey",
    "DataLoss",
    "DeadlineExceeded",
    "EnumArg",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "Keepalive",
    "NotFound",
    "OutOfRange",
    "Page",
    "PermissionDenied",
    "PreconditionViolation",
    "ResourceExhausted",
    "RetryPolicy",
    "RevealedCredential",
    "Secret",
    "TlsConfig",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "Vault",
    "VaultError",
    "__version__",
    "is_idempotent",
]
