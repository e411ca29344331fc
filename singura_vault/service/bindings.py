"""The bytes that bind a ciphertext to its row: the AES-GCM associated data of every
value sealed under an organization's data key.

The bytes that seal and the bytes that open must agree, so nothing else builds them:
:func:`binding` is the one builder, and each function below names what one kind of
sealed value binds (a credential version, an OAuth client or signing secret, a PKCE
verifier, a webhook signing secret). Each non-credential kind names a credential type
no credential has, so no ciphertext ever opens as another kind. Used by the sealing
gateway (service/sealing.py) and the rewrap (service/rewrap.py), the only modules
that seal and open.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from singura_vault import keys
from singura_vault.domain.credentials import CredentialType


def binding(
    organization_id: UUID,
    connection_id: UUID,
    credential_id: UUID,
    credential_type: str,
    version: int,
    key_version: int,
) -> keys.CredentialBinding:
    """The associated data of a ciphertext: where it belongs and which key sealed it.
    The one builder of a binding; the functions below name what each kind binds."""
    return keys.CredentialBinding(
        organization_id=organization_id,
        connection_id=connection_id,
        credential_id=credential_id,
        credential_type=credential_type,
        version=version,
        key_version=key_version,
    )


class CredentialRow(Protocol):
    """The row facts a credential's ciphertext is bound to (a Credential, or a
    SealedCredential of the rewrap and repair jobs)."""

    @property
    def id(self) -> UUID: ...
    @property
    def connection_id(self) -> UUID: ...
    @property
    def type(self) -> CredentialType: ...
    @property
    def version(self) -> int: ...


def credential_binding(
    organization_id: UUID, row: CredentialRow, key_version: int
) -> keys.CredentialBinding:
    """The associated data of a credential version's ciphertext under ``key_version``."""
    return binding(
        organization_id, row.connection_id, row.id, row.type.value, row.version, key_version
    )


# The credential type an OAuth client secret's binding names: no credential has it,
# so a client secret's ciphertext never opens as a credential, nor the reverse.
OAUTH_CLIENT_SECRET = "oauth_client_secret"  # noqa: S105 - a type's name, not a secret


def client_secret_binding(
    organization_id: UUID, client_row_id: UUID, key_version: int
) -> keys.CredentialBinding:
    """The associated data of an OAuth client secret (migration 016): its organization,
    the client row's id (new on every SetOAuthClient) and the data-key version."""
    return binding(
        organization_id, client_row_id, client_row_id, OAUTH_CLIENT_SECRET, 1, key_version
    )


# The credential type a Slack signing secret's binding names (migration 027): sealed
# beside the client secret of the same row, it never opens as that secret, nor the reverse.
OAUTH_SIGNING_SECRET = "oauth_signing_secret"  # noqa: S105 - a type's name, not a secret


def signing_secret_binding(
    organization_id: UUID, client_row_id: UUID, key_version: int
) -> keys.CredentialBinding:
    """The associated data of an OAuth client's signing secret (migration 027): its
    organization, the client row's id and the data-key version, like the client secret's."""
    return binding(
        organization_id, client_row_id, client_row_id, OAUTH_SIGNING_SECRET, 1, key_version
    )


# The credential type a PKCE verifier's binding names (migration 019): like a client
# secret's, no credential has it, so the ciphertexts never open as one another.
OAUTH_PKCE_VERIFIER = "oauth_pkce_verifier"


def pkce_verifier_binding(
    organization_id: UUID, authorization_id: UUID, key_version: int
) -> keys.CredentialBinding:
    """The associated data of a sealed PKCE verifier: its organization, the
    authorization row's id and the data-key version."""
    return binding(
        organization_id, authorization_id, authorization_id, OAUTH_PKCE_VERIFIER, 1, key_version
    )


# The credential type a webhook signing secret's binding names (migration 026): like a
# client secret's, no credential has it, so the ciphertexts never open as one another.
WEBHOOK_SIGNING_SECRET = "webhook_signing_secret"  # noqa: S105 - a type's name, not a secret


def webhook_secret_binding(
    organization_id: UUID, endpoint_id: UUID, secret_id: UUID, key_version: int
) -> keys.CredentialBinding:
    """The associated data of a webhook signing secret: its organization, its endpoint,
    the secret's own id (new on every rotation) and the data-key version."""
    return binding(organization_id, endpoint_id, secret_id, WEBHOOK_SIGNING_SECRET, 1, key_version)
