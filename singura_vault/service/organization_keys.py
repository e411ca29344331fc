"""Customer-managed keys: an organization's data keys wrapped by a root key it holds.

``OrganizationKeyService`` sets, reads and clears an organization's key provider (its
own OpenBao/Vault transit key); ``OrganizationKeyMigrationWorker`` moves the
organization's data keys to the key in force and back, from state in PostgreSQL, in
every vault process. The provider's token is validated by a probe (wrap and unwrap)
at set time and then sealed under the GLOBAL root key, through the key manager; it is
never logged, returned or put in an error.

One of the few importers of the sealed ``keys`` package (pyproject.toml's allow-list):
it needs the key manager to seal the token and to move data keys between root keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

from singura_vault import keys
from singura_vault.domain.key_management import OrganizationKeyMigration, OrganizationKeyProviderRow
from singura_vault.domain.sealed import StoredDataKey
from singura_vault.errors import FailedPrecondition, InvalidArgument
from singura_vault.logs import get_logger
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.repositories.organization_keys import OrganizationKeyRepository
from singura_vault.service import validation
from singura_vault.service.authz import READ, Authorizer
from singura_vault.service.data_keys import check_organization_key, migrate_data_key

log = get_logger(__name__)

MAX_TOKEN_CHARS = 8192


@dataclass(frozen=True)
class OrganizationKeyStatus:
    provider: OrganizationKeyProviderRow | None
    latest_migration: OrganizationKeyMigration | None


def record_of(row: OrganizationKeyProviderRow) -> keys.OrganizationKeyRecord:
    """The key package's view of a stored provider row (ciphertext and ids only)."""
    return keys.OrganizationKeyRecord(
        provider_id=row.id,
        organization_id=row.organization_id,
        address=row.address,
        mount=row.mount,
        key_name=row.key_name,
        token_key=keys.WrappedDataKey(row.token_root_key_id, row.token_wrapped_key),
        token=keys.Sealed(row.token_nonce, row.token_ciphertext),
    )


def _prefix(provider_id: UUID | None) -> str | None:
    return None if provider_id is None else keys.organization_key_prefix(provider_id)


class OrganizationKeyService:
    """SetOrganizationKeyProvider, GetOrganizationKeyProvider, ClearOrganizationKeyProvider."""

    def __init__(
        self,
        repository: OrganizationKeyRepository,
        key_admin: KeyAdminRepository,
        key_manager: keys.KeyManager,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._repository = repository
        self._key_admin = key_admin
        self._keys = key_manager
        self._authz = authorizer or Authorizer()

    async def load(self, organization_id: UUID, provider_id: UUID) -> keys.OrganizationKeyRecord:
        """The key manager's loader: a provider row, read in its organization's scope."""
        return record_of(await self._repository.provider(organization_id, provider_id))

    async def in_force(self, organization_id: UUID) -> keys.OrganizationKeyRecord | None:
        """The provider new data keys of the organization are wrapped by (None: global)."""
        row = await self._repository.in_force(organization_id)
        return record_of(row) if row is not None else None

    async def set_provider(
        self, organization_id: str, address: str, key_name: str, mount: str, token: str
    ) -> tuple[OrganizationKeyProviderRow, OrganizationKeyMigration]:
        principal = self._authz.require_admin("set an organization's key provider")
        org_id = validation.parse_uuid("organization_id", organization_id)
        if not address:
            raise InvalidArgument("address", "is required, e.g. https://bao.example.internal:8200")
        if not key_name:
            raise InvalidArgument("key_name", "is required (a derived aes256-gcm96 transit key)")
        if not token:
            raise InvalidArgument("authentication.token", "is required (an OpenBao/Vault token)")
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidArgument(
                "authentication.token", f"is longer than {MAX_TOKEN_CHARS} characters"
            )
        await self._key_admin.require_organization(org_id)
        provider_id = uuid4()
        address, mount = await check_organization_key(
            self._keys,
            provider_id,
            org_id,
            address=address,
            key_name=key_name,
            mount=mount,
            token=token,
        )
        token_key, sealed = await self._keys.seal_organization_token(provider_id, org_id, token)
        row = OrganizationKeyProviderRow(
            id=provider_id,
            organization_id=org_id,
            address=address,
            mount=mount,
            key_name=key_name,
            token_root_key_id=token_key.root_key_id,
            token_wrapped_key=token_key.blob,
            token_nonce=sealed.nonce,
            token_ciphertext=sealed.ciphertext,
            created_by=principal.key_id,
            created_at=datetime.now(UTC),
            cleared_at=None,
        )
        provider, migration = await self._repository.set_provider(
            row, keys.organization_key_prefix(provider_id)
        )
        log.info(
            "organization_key_provider_set",
            organization_id=str(org_id),
            provider_id=str(provider_id),
            transit_address=provider.address,
            transit_key=provider.key_name,
            migration_id=str(migration.id),
            data_keys_to_migrate=migration.total,
            by=principal.key_id,
        )
        return provider, migration

    async def get_provider(self, organization_id: str) -> OrganizationKeyStatus:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "read the organization's key provider")
        await self._key_admin.require_organization(org_id)
        return OrganizationKeyStatus(
            await self._repository.in_force(org_id),
            await self._repository.latest_migration(org_id),
        )

    async def clear_provider(self, organization_id: str) -> OrganizationKeyMigration:
        principal = self._authz.require_admin("clear an organization's key provider")
        org_id = validation.parse_uuid("organization_id", organization_id)
        await self._key_admin.require_organization(org_id)
        migration = await self._repository.clear_provider(org_id, principal.key_id)
        log.info(
            "organization_key_provider_cleared",
            organization_id=str(org_id),
            migration_id=str(migration.id),
            data_keys_to_migrate=migration.total,
            by=principal.key_id,
        )
        return migration


class OrganizationKeyMigrationWorker:
    """Moves organizations' data keys to the root key their migration targets.

    Every vault process runs one; the work is in PostgreSQL (migration rows, and the
    data key rows themselves, taken with SKIP LOCKED), so processes share it and a
    killed one leaves it for the next poll. A KMS that refuses (the organization's key
    disabled) or cannot be reached leaves the migration running, to be retried.
    """

    def __init__(
        self,
        repository: OrganizationKeyRepository,
        service: OrganizationKeyService,
        key_manager: keys.KeyManager,
        *,
        poll_interval_s: float = 2.0,
    ) -> None:
        self._repository = repository
        self._service = service
        self._keys = key_manager
        self._poll_interval_s = poll_interval_s

    async def run_forever(self) -> None:
        while True:
            try:
                await self.work_once()
            except Exception as exc:  # keep polling; the next pass retries
                log.error("organization_key_migration_error", error_type=type(exc).__name__)
            await asyncio.sleep(self._poll_interval_s)

    async def work_once(self) -> list[OrganizationKeyMigration]:
        """Work every running migration as far as it goes; return those it completed."""
        completed = []
        for migration in await self._repository.running_migrations():
            finished = await self._work(migration)
            if finished is not None:
                completed.append(finished)
        return completed

    async def _work(self, migration: OrganizationKeyMigration) -> OrganizationKeyMigration | None:
        org = migration.organization_id
        target = (
            None
            if migration.target_provider_id is None
            else await self._service.load(org, migration.target_provider_id)
        )
        prefix = _prefix(migration.target_provider_id)

        async def rewrap(stored: StoredDataKey) -> StoredDataKey:
            moved = await migrate_data_key(self._keys, stored, target)
            return moved or stored

        try:
            while await self._repository.migrate_one(migration, prefix, rewrap):
                log.info(
                    "organization_key_migration_progress",
                    organization_id=str(org),
                    migration_id=str(migration.id),
                )
        except FailedPrecondition as exc:
            log.warning(
                "organization_key_migration_blocked",
                organization_id=str(org),
                migration_id=str(migration.id),
                reason=exc.reason,
            )
            return None
        finished = await self._repository.complete(migration, prefix)
        if finished is not None:
            log.info(
                "organization_keys_migrated",
                organization_id=str(org),
                migration_id=str(migration.id),
                target=prefix or "global",
                done=finished.done,
            )
        return finished
