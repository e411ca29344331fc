"""Key administration: root key generation (CLI), status, rotation, retirement, rewrap jobs.

One of the few importers of the sealed ``keys`` package (allow-listed by the
import-linter contract in pyproject.toml). A generated key is returned to the
caller (the CLI prints it to stdout, its whole purpose, like ``openssl rand``);
it is never logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from singura_vault import keys
from singura_vault.domain.credentials import SealedCredential
from singura_vault.domain.key_management import DataKeyInfo, KeyRepair, RewrapJob
from singura_vault.domain.sealed import StoredDataKey
from singura_vault.errors import ConfigError, DataLoss, FailedPrecondition, InvalidArgument
from singura_vault.logs import get_logger
from singura_vault.repositories.data_keys import DataKeyRepository
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.service import sealing, validation
from singura_vault.service.authz import Authorizer
from singura_vault.service.data_keys import create_data_key

log = get_logger(__name__)


def generate_root_key() -> str:
    """A new root key: 32 random bytes, base64, for ENCRYPTION_KEY."""
    return keys.generate_encryption_key()


def create_keyring_file(path: Path) -> tuple[str, ...]:
    """Write a new keyring file (mode 0600) with one fresh key; returns its key ids."""
    try:
        return keys.LocalKeyring.generate_file(path).key_ids()
    except keys.KeyConfigError as exc:
        raise ConfigError(str(exc)) from None


def create_audit_signing_key_file(path: Path) -> tuple[str, str]:
    """Write a new audit signing key file (0600); returns its key id and public key PEM."""
    try:
        signer = keys.AuditSigner.generate_file(path)
    except keys.KeyConfigError as exc:
        raise ConfigError(str(exc)) from None
    return signer.key_id, signer.public_key_pem


@dataclass(frozen=True)
class RootKeyInfo:
    id: str
    primary: bool
    data_key_count: int


@dataclass(frozen=True)
class DataKeyStatus:
    info: DataKeyInfo
    credential_count: int


@dataclass(frozen=True)
class RepairReport:
    """What RepairCredentialKeys found in one organization."""

    organization_id: UUID
    checked: int
    repaired: tuple[KeyRepair, ...]
    unrecoverable: tuple[UUID, ...]


REPAIR_PAGE_SIZE = 500


@dataclass(frozen=True)
class KeyStatus:
    provider: str
    root_keys: tuple[RootKeyInfo, ...]
    data_keys: tuple[DataKeyStatus, ...]
    latest_job: RewrapJob | None


class KeyAdminService:
    """Key administration use cases (admin keys only): status, rotation, retirement,
    and rewrap jobs (worked on by :class:`singura_vault.service.rewrap.RewrapWorker`)."""

    def __init__(
        self,
        repository: KeyAdminRepository,
        data_keys: DataKeyRepository,
        key_manager: keys.KeyManager,
        authorizer: Authorizer | None = None,
        *,
        organization_key_in_force: Callable[[UUID], Awaitable[keys.OrganizationKeyRecord | None]]
        | None = None,
    ) -> None:
        """``organization_key_in_force``: an organization's own root key, if it has one:
        a new data key version of that organization is wrapped by it."""
        self._repository = repository
        self._data_keys = data_keys
        self._keys = key_manager
        self._authz = authorizer or Authorizer()
        self._organization_key_in_force = organization_key_in_force

    async def status(self, organization_id: str) -> KeyStatus:
        self._authz.require_admin("read key status")
        org_id = validation.parse_optional_uuid("organization_id", organization_id)
        data_keys = await self._repository.data_keys(org_id)
        counts: dict[UUID, dict[int, int]] = {}
        for org in sorted({k.organization_id for k in data_keys}):
            counts[org] = await self._repository.credential_counts(org)
        wrapped_by: dict[str, int] = {}
        for key in data_keys:
            if key.state == "active":
                wrapped_by[key.root_key_id] = wrapped_by.get(key.root_key_id, 0) + 1
        primary = self._keys.primary_root_key_id()
        root_ids = list(self._keys.root_key_ids())
        root_ids += [k for k in wrapped_by if k not in root_ids]
        return KeyStatus(
            provider=self._keys.provider_description,
            root_keys=tuple(RootKeyInfo(k, k == primary, wrapped_by.get(k, 0)) for k in root_ids),
            data_keys=tuple(
                DataKeyStatus(k, counts.get(k.organization_id, {}).get(k.version, 0))
                for k in data_keys
            ),
            latest_job=await self._repository.latest_job(),
        )

    async def rotate_root_key(self) -> tuple[str, int]:
        """New primary root key (where the provider can make one), then rewrap every
        data key under it in one transaction. Returns (primary id, data keys rewrapped)."""
        principal = self._authz.require_admin("rotate the root key")
        try:
            primary = await self._keys.rotate_root_key()
            cannot_rotate = None
        except keys.KeyConfigError as exc:
            # The provider cannot make a key (ENCRYPTION_KEY): the operator may
            # already have configured a new primary; rewrapping onto it is then
            # all that is left, and if there is nothing to rewrap, say how to rotate.
            primary = self._keys.primary_root_key_id()
            cannot_rotate = str(exc)
        count = await self._repository.rewrap_all_data_keys(self._rewrap_one)
        # The keys sealing customer-managed key providers' tokens are wrapped by the
        # global root key too (migration 031).
        tokens = await self._repository.rewrap_all_organization_token_keys(self._rewrap_token)
        if cannot_rotate is not None and count == 0 and tokens == 0:
            raise FailedPrecondition(cannot_rotate)
        log.info(
            "root_key_rotated",
            primary=primary,
            data_keys_rewrapped=count,
            provider_tokens_rewrapped=tokens,
            by=principal.key_id,
        )
        return primary, count

    async def _rewrap_one(self, stored: StoredDataKey) -> StoredDataKey | None:
        try:
            new = await self._keys.rewrap_data_key(
                stored.organization_id,
                stored.version,
                keys.WrappedDataKey(stored.root_key_id, stored.wrapped_key),
            )
        except keys.IntegrityError:
            raise DataLoss(
                f"data key version {stored.version} of organization {stored.organization_id} "
                "failed its integrity check; nothing was rewrapped"
            ) from None
        except keys.KeyConfigError as exc:
            raise FailedPrecondition(str(exc)) from None
        if new is None:
            return None
        return StoredDataKey(stored.organization_id, stored.version, new.root_key_id, new.blob)

    async def _rewrap_token(
        self, organization_id: UUID, provider_id: UUID, root_key_id: str, wrapped_key: bytes
    ) -> tuple[str, bytes] | None:
        try:
            new = await self._keys.rewrap_organization_token_key(
                provider_id, organization_id, keys.WrappedDataKey(root_key_id, wrapped_key)
            )
        except keys.IntegrityError:
            raise DataLoss(
                f"the sealed token of organization {organization_id}'s key provider "
                f"{provider_id} failed its integrity check; nothing was rewrapped"
            ) from None
        except keys.KeyConfigError as exc:
            raise FailedPrecondition(str(exc)) from None
        return None if new is None else (new.root_key_id, new.blob)

    async def rotate_data_key(self, organization_id: str) -> list[DataKeyInfo]:
        """A new data key version for one organization (or every one that has keys)."""
        self._authz.require_admin("rotate data keys")
        org_id = validation.parse_optional_uuid("organization_id", organization_id)
        targets = (
            [org_id]
            if org_id is not None
            else sorted({k.organization_id for k in await self._repository.data_keys(None)})
        )
        for org in targets:
            version = await self._data_keys.next_data_key_version(org)
            organization_key = (
                await self._organization_key_in_force(org)
                if self._organization_key_in_force is not None
                else None
            )
            await self._data_keys.add_data_key(
                await create_data_key(self._keys, org, version, organization_key)
            )
        created = []
        for org in targets:
            versions = await self._repository.data_keys(org)
            if versions:
                created.append(max(versions, key=lambda k: k.version))
        return created

    async def start_rewrap(self) -> RewrapJob:
        principal = self._authz.require_admin("start a rewrap")
        running = await self._repository.running_job()
        if running is not None:
            return running
        total = 0
        for org, newest in await self._repository.organizations_to_rewrap():
            total += await self._repository.stale_count(org, newest, None)
        job, started = await self._repository.start_job(principal.key_id, total)
        if started:
            log.info("rewrap_started", job_id=str(job.id), total=total)
        return job

    async def job(self, job_id: str) -> RewrapJob:
        self._authz.require_admin("read rewrap jobs")
        return await self._repository.job(validation.parse_uuid("job_id", job_id))

    async def cancel(self, job_id: str) -> RewrapJob:
        self._authz.require_admin("cancel rewrap jobs")
        job_uuid = validation.parse_uuid("job_id", job_id)
        await self._repository.finish_job(job_uuid, "cancelled")
        return await self._repository.job(job_uuid)

    async def retire_root_key(self, root_key_id: str) -> None:
        self._authz.require_admin("retire root keys")
        in_use = sum(
            1
            for k in await self._repository.data_keys(None)
            if k.state == "active" and k.root_key_id == root_key_id
        )
        tokens = await self._repository.organization_token_keys_wrapped_by(root_key_id)
        if in_use or tokens:
            raise FailedPrecondition(
                f"root key {root_key_id} still wraps {in_use} data keys and {tokens} "
                "customer-managed key provider tokens; call RotateRootKey to rewrap them "
                "under the primary first"
            )
        try:
            await self._keys.retire_root_key(root_key_id)
        except keys.KeyConfigError as exc:
            raise FailedPrecondition(str(exc)) from None

    async def retire_data_key(self, organization_id: str, version: int) -> None:
        self._authz.require_admin("retire data keys")
        org_id = validation.parse_uuid("data_key.organization_id", organization_id)
        if version < 1:
            raise InvalidArgument("data_key.version", "must be 1 or more")
        await self._repository.retire_data_key(org_id, version)

    async def repair_credential_keys(self, organization_id: str) -> RepairReport:
        """Correct credentials whose recorded data-key version does not open them.

        Every sealed credential of the organization is opened under its recorded
        version, and on failure under each other live version; authenticated
        decryption proves which one sealed it, and only the record is corrected
        (audited as credential.key_version_repaired). What no live version opens
        is reported, not changed.
        """
        principal = self._authz.require_admin("repair credential key versions")
        org_id = validation.parse_uuid("organization_id", organization_id)
        await self._repository.require_organization(org_id)

        async def find_sealing_version(
            credential: SealedCredential, data_keys: dict[int, StoredDataKey]
        ) -> int | None:
            opened = await sealing.open_stored_under_any(self._keys, org_id, credential, data_keys)
            return None if opened is None else opened.key_version

        checked = 0
        repaired: list[KeyRepair] = []
        unrecoverable: list[UUID] = []
        after: UUID | None = None
        while True:
            page = await self._repository.repair_page(
                org_id, after, REPAIR_PAGE_SIZE, find_sealing_version
            )
            if page.checked == 0:
                break
            checked += page.checked
            repaired += page.repaired
            unrecoverable += page.unrecoverable
            after = page.last_id
        log.info(
            "credential_key_versions_repaired",
            organization_id=str(org_id),
            checked=checked,
            repaired=len(repaired),
            unrecoverable=len(unrecoverable),
            by=principal.key_id,
        )
        return RepairReport(org_id, checked, tuple(repaired), tuple(unrecoverable))
