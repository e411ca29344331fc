"""Where sealed credentials meet data keys, for the credential path only.

One home for the bytes that bind a ciphertext to its row (the AES-GCM associated
data: organization, connection, credential id, type, version, data-key version) --
the bytes that seal and the bytes that open must agree, so nothing else builds
them -- and for unwrapping stored data keys and finding which live data-key
version opens a ciphertext whose record names the wrong one (authenticated
decryption proves it: a wrong key or a wrong binding never opens).

Like ``service/credentials.py``, it imports the sealed ``keys`` package; it returns
plaintext only to its caller and never logs or raises with key bytes or plaintext.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from singura_vault import keys
from singura_vault.domain import SealedCredential, StoredDataKey
from singura_vault.errors import DataLoss, FailedPrecondition, InvalidArgument
from singura_vault.logs import get_logger

log = get_logger(__name__)


def binding(
    organization_id: UUID,
    connection_id: UUID,
    credential_id: UUID,
    credential_type: str,
    version: int,
    key_version: int,
) -> keys.CredentialBinding:
    """The associated data of a credential's ciphertext: where it belongs and which key."""
    return keys.CredentialBinding(
        organization_id=organization_id,
        connection_id=connection_id,
        credential_id=credential_id,
        credential_type=credential_type,
        version=version,
        key_version=key_version,
    )


def sealed_binding(
    organization_id: UUID, credential: SealedCredential, key_version: int
) -> keys.CredentialBinding:
    return binding(
        organization_id,
        credential.connection_id,
        credential.id,
        credential.type.value,
        credential.version,
        key_version,
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


@dataclass(frozen=True)
class Opened:
    """A ciphertext opened: under which data-key version, and its plaintext."""

    key_version: int
    plaintext: bytes

    def __repr__(self) -> str:  # never the plaintext
        return f"<Opened under data key v{self.key_version}>"


async def unwrap(key_manager: keys.KeyManager, stored: StoredDataKey) -> keys.DataKey:
    """The data key of a stored (wrapped) one; DataLoss if the wrapped key was altered."""
    try:
        return await key_manager.data_key(
            stored.organization_id,
            stored.version,
            keys.WrappedDataKey(root_key_id=stored.root_key_id, blob=stored.wrapped_key),
        )
    except keys.IntegrityError:
        log.error(
            "data_key_integrity_failure",
            security_event=True,
            key_version=stored.version,
            root_key_id=stored.root_key_id,
        )
        raise DataLoss(
            f"data key version {stored.version} of organization {stored.organization_id} "
            "failed its integrity check (altered, moved, or wrapped by another root key "
            f"than {stored.root_key_id})"
        ) from None
    except keys.OrganizationKeyUnavailable as exc:
        raise organization_key_unavailable(exc) from None
    except keys.KeyConfigError as exc:
        raise FailedPrecondition(str(exc)) from None


ORGANIZATION_KEY_UNAVAILABLE = "ORGANIZATION_KEY_UNAVAILABLE"


def organization_key_unavailable(exc: keys.OrganizationKeyUnavailable) -> FailedPrecondition:
    """FAILED_PRECONDITION, reason ORGANIZATION_KEY_UNAVAILABLE: the organization's own
    root key refused (the tenant's kill switch). Names its address and key, never its
    token (the key package's messages never hold one)."""
    return FailedPrecondition(
        str(exc),
        reason=ORGANIZATION_KEY_UNAVAILABLE,
        metadata={"address": exc.address, "key_name": exc.key_name},
    )


async def create_data_key(
    key_manager: keys.KeyManager,
    organization_id: UUID,
    version: int,
    organization_key: keys.OrganizationKeyRecord | None,
) -> StoredDataKey:
    """A new data key for (organization, version), wrapped by the organization's own root
    key when it has one in force, else by the global one."""
    try:
        wrapped = await key_manager.create_data_key(organization_id, version, organization_key)
    except keys.OrganizationKeyUnavailable as exc:
        raise organization_key_unavailable(exc) from None
    except keys.KeyConfigError as exc:
        raise FailedPrecondition(str(exc)) from None
    return StoredDataKey(organization_id, version, wrapped.root_key_id, wrapped.blob)


async def migrate_data_key(
    key_manager: keys.KeyManager,
    stored: StoredDataKey,
    target: keys.OrganizationKeyRecord | None,
) -> StoredDataKey | None:
    """The data key wrapped by ``target`` (None: the global root key); None if it is."""
    try:
        moved = await key_manager.migrate_data_key(
            stored.organization_id,
            stored.version,
            keys.WrappedDataKey(root_key_id=stored.root_key_id, blob=stored.wrapped_key),
            target,
        )
    except keys.OrganizationKeyUnavailable as exc:
        raise organization_key_unavailable(exc) from None
    except keys.IntegrityError:
        raise DataLoss(
            f"data key version {stored.version} of organization {stored.organization_id} "
            "failed its integrity check while being moved to another root key"
        ) from None
    except keys.KeyConfigError as exc:
        raise FailedPrecondition(str(exc)) from None
    if moved is None:
        return None
    return StoredDataKey(stored.organization_id, stored.version, moved.root_key_id, moved.blob)


_SETTING_FIELDS = {"address": "address", "key_name": "key_name", "mount": "mount"}


async def check_organization_key(
    key_manager: keys.KeyManager,
    provider_id: UUID,
    organization_id: UUID,
    *,
    address: str,
    key_name: str,
    mount: str,
    token: str,
) -> tuple[str, str]:
    """Validate an organization's key provider and prove it wraps and unwraps a probe:
    INVALID_ARGUMENT naming the field, or FAILED_PRECONDITION (ORGANIZATION_KEY_UNAVAILABLE)
    naming the address and key. Returns the normalized address and mount."""
    try:
        return await key_manager.check_organization_key(
            provider_id,
            organization_id,
            address=address,
            mount=mount,
            key_name=key_name,
            token=token,
        )
    except keys.OrganizationKeyUnavailable as exc:
        raise organization_key_unavailable(exc) from None
    except keys.KeyConfigError as exc:
        message = str(exc)
        head = message.split(" ", 1)[0].split("=", 1)[0]
        field = _SETTING_FIELDS.get(head, "authentication.token" if head == "token" else "address")
        raise InvalidArgument(field, message) from None


async def open_under_any(
    key_manager: keys.KeyManager,
    organization_id: UUID,
    credential: SealedCredential,
    data_keys: Mapping[int, StoredDataKey],
) -> Opened | None:
    """Open under the recorded version first, then under every other live version.

    None if no live version opens it: the ciphertext (or the row facts bound into
    it) was altered, or it was sealed under a key that has since been destroyed.
    """
    sealed = keys.Sealed(credential.nonce, credential.ciphertext)
    order = sorted(data_keys, key=lambda v: (v != credential.key_version, -v))
    for version in order:
        data_key = await unwrap(key_manager, data_keys[version])
        try:
            plaintext = key_manager.open(
                data_key, sealed, sealed_binding(organization_id, credential, version)
            )
        except keys.IntegrityError:
            continue
        return Opened(version, plaintext)
    return None
