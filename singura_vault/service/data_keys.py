"""Data keys as the key manager holds them: load the key manager, unwrap, create,
move between root keys, and check an organization's own key provider.

One of the few importers of the sealed ``keys`` package (the "key package is sealed"
contract in pyproject.toml): it turns the key package's errors into the vault's
(DATA_LOSS for an altered wrapped key, FAILED_PRECONDITION for a root key that
refuses) and never logs or raises with key bytes or a provider's token.
"""

from __future__ import annotations

from uuid import UUID

from singura_vault import keys
from singura_vault.config import Settings
from singura_vault.domain.sealed import StoredDataKey
from singura_vault.errors import ConfigError, DataLoss, FailedPrecondition, InvalidArgument
from singura_vault.logs import get_logger

log = get_logger(__name__)


def load_key_manager(settings: Settings) -> keys.KeyManager:
    """Build the key manager from configuration; ConfigError explains a bad setup."""
    try:
        provider, mode = keys.load_key_provider(settings)
    except keys.KeyConfigError as exc:
        raise ConfigError(str(exc)) from None
    manager = keys.KeyManager(
        provider, organization_key_ttl_s=settings.organization_key_cache_ttl_s
    )
    log.info("root_keys_loaded", mode=mode, provider=manager.provider_description)
    return manager


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
