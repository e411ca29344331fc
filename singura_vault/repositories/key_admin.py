"""Persistence for key administration: data-key rewrapping, status, rewrap jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import asyncpg

from singura_vault.db.errors import ConstraintErrors, map_driver_errors
from singura_vault.db.pool import Database
from singura_vault.domain.credentials import CredentialType, SealedCredential
from singura_vault.domain.key_management import DataKeyInfo, KeyRepair, RepairPage, RewrapJob
from singura_vault.domain.sealed import EncryptedValue, StoredDataKey
from singura_vault.errors import Aborted, DataLoss, FailedPrecondition, NotFound
from singura_vault.repositories._rows import data_key_from_row
from singura_vault.repositories.organizations import not_found
from singura_vault.repositories.queries import query


class JobNotRunning(Exception):  # noqa: N818 - a signal to the worker, not a client error
    """The rewrap job was cancelled or completed while a batch was in flight."""


class DataKeysChanged(Aborted):
    """A data key the batch sealed under was retired before it committed; the batch
    was rolled back and should be planned again from the live keys."""


_KEY_NOT_LIVE = "encrypted_credentials_key_live"
_CLIENT_KEY_NOT_LIVE = "oauth_clients_key_live"
_RETIRED_WHILE_REWRAPPING: ConstraintErrors = {
    _KEY_NOT_LIVE: lambda: DataKeysChanged("a data key was retired")
}
_CLIENT_KEY_RETIRED_WHILE_REWRAPPING: ConstraintErrors = {
    _CLIENT_KEY_NOT_LIVE: lambda: DataKeysChanged("retired")
}
_WEBHOOK_KEY_RETIRED_WHILE_REWRAPPING: ConstraintErrors = {
    "webhook_endpoints_key_live": lambda: DataKeysChanged("retired")
}
DataKeys = dict[int, StoredDataKey]  # an organization's data keys by version
_RETIRED_DURING_REPAIR: ConstraintErrors = {
    _KEY_NOT_LIVE: lambda: Aborted(
        "a data key version was retired while the repair ran; nothing of this page was "
        "changed: run the repair again"
    )
}


def _sealed(row: asyncpg.Record) -> SealedCredential:
    return SealedCredential(
        id=row["id"],
        connection_id=row["connection_id"],
        type=CredentialType(row["credential_type"]),
        version=row["version"],
        key_version=row["key_version"],
        nonce=row["nonce"],
        ciphertext=row["ciphertext"],
    )


def _job(row: asyncpg.Record) -> RewrapJob:
    return RewrapJob(
        id=row["id"],
        state=row["state"],
        total=row["total"],
        done=row["done"],
        failed=row["failed"],
        started_by=row["started_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )


class KeyAdminRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def rewrap_all_data_keys(
        self, rewrap: Callable[[StoredDataKey], Awaitable[StoredDataKey | None]]
    ) -> int:
        """Rewrap every live data key of every organization in one transaction."""
        count = 0
        async with self._db.admin() as conn:
            rows = await conn.fetch(query("data_keys_all_live_for_update"))
            for row in rows:
                new = await rewrap(data_key_from_row(row))
                if new is None:
                    continue
                await conn.execute(
                    query("data_key_rewrapped"),
                    new.organization_id,
                    new.version,
                    new.root_key_id,
                    new.wrapped_key,
                )
                count += 1
        return count

    async def rewrap_all_organization_token_keys(
        self,
        rewrap: Callable[[UUID, UUID, str, bytes], Awaitable[tuple[str, bytes] | None]],
    ) -> int:
        """Rewrap the key that seals each customer-managed key provider's token:
        ``rewrap(organization_id, provider_id, root_key_id, wrapped_key)`` gives the new
        (root_key_id, wrapped_key), or None when it is already under the primary. One
        transaction; returns how many."""
        count = 0
        async with self._db.admin() as conn:
            rows = await conn.fetch(query("organization_token_keys_for_update"))
            for row in rows:
                new = await rewrap(
                    row["organization_id"],
                    row["id"],
                    row["token_root_key_id"],
                    row["token_wrapped_key"],
                )
                if new is None:
                    continue
                await conn.execute(
                    query("organization_token_key_rewrapped"),
                    row["organization_id"],
                    row["id"],
                    *new,
                )
                count += 1
        return count

    async def organization_token_keys_wrapped_by(self, root_key_id: str) -> int:
        async with self._db.admin(read_only=True) as conn:
            count: int = await conn.fetchval(
                query("organization_token_keys_wrapped_by"), root_key_id
            )
        return count

    async def data_keys(self, organization_id: UUID | None) -> list[DataKeyInfo]:
        async with self._db.admin(read_only=True) as conn:
            rows = await conn.fetch(query("data_keys_status"), organization_id)
        return [
            DataKeyInfo(
                r["organization_id"], r["version"], r["root_key_id"], r["state"], r["created_at"]
            )
            for r in rows
        ]

    async def credential_counts(self, organization_id: UUID) -> dict[int, int]:
        """Credentials (not revoked) per data key version, for one organization."""
        async with self._db.tenant(organization_id, read_only=True) as conn:
            rows = await conn.fetch(query("credentials_per_key_version"), organization_id)
        return {r["key_version"]: r["n"] for r in rows}

    async def retire_data_key(self, organization_id: UUID, version: int) -> None:
        async with self._db.tenant(organization_id) as conn:
            # Lock first, count after: a store or rewrap still sealing under this
            # version commits before we count it, or is refused after we retire.
            await conn.execute(query("data_key_lock_for_retire"), organization_id, version)
            counts = await conn.fetch(query("credentials_per_key_version"), organization_id)
            in_use = {r["key_version"]: r["n"] for r in counts}.get(version, 0)
            if in_use:
                raise FailedPrecondition(
                    f"data key version {version} of organization {organization_id} still "
                    f"encrypts {in_use} credentials or OAuth client secrets; rewrap them "
                    "first (StartRewrap)"
                )
            status = await conn.execute(query("data_key_retire"), organization_id, version)
        if status.endswith(" 0"):
            raise NotFound(f"organization {organization_id} has no live data key version {version}")

    async def organizations_to_rewrap(self) -> list[tuple[UUID, int]]:
        """(organization, newest data key version) for every organization with older ones."""
        async with self._db.admin(read_only=True) as conn:
            rows = await conn.fetch(query("data_keys_orgs_with_old_versions"))
        return [(r["organization_id"], r["newest"]) for r in rows]

    async def stale_count(self, organization_id: UUID, newest: int, job_id: UUID | None) -> int:
        async with self._db.tenant(organization_id, read_only=True) as conn:
            count: int = await conn.fetchval(
                query("credentials_stale_count"), organization_id, newest, job_id
            )
        return count

    async def reseal_client_secrets(
        self,
        organization_id: UUID,
        newest: int,
        reseal: Callable[
            [UUID, int, EncryptedValue, dict[int, StoredDataKey], bool],
            Awaitable[EncryptedValue],
        ],
    ) -> int:
        """Re-seal the organization's OAuth client secrets (and signing secrets, migration
        027: the last argument of ``reseal`` says which) that an older data key seals
        (a handful per organization: one transaction); returns how many clients."""

        async def reseal_row(row: asyncpg.Record, data_keys: DataKeys) -> tuple[object, ...]:
            stale = EncryptedValue(
                row["secret_nonce"], row["secret_ciphertext"], "", row["key_version"]
            )
            value = await reseal(row["id"], row["key_version"], stale, data_keys, False)
            signing: EncryptedValue | None = None
            if row["signing_secret_ciphertext"] is not None:
                signing = await reseal(
                    row["id"],
                    row["key_version"],
                    EncryptedValue(
                        row["signing_secret_nonce"],
                        row["signing_secret_ciphertext"],
                        "",
                        row["key_version"],
                    ),
                    data_keys,
                    True,
                )
            return (
                row["platform"],
                row["id"],
                value.ciphertext,
                value.nonce,
                value.key_version,
                signing.ciphertext if signing else None,
                signing.nonce if signing else None,
            )

        # A client whose secret no live key opens is left as it is (and its key
        # unretirable) until the client is set again.
        return await self._reseal_rows(
            organization_id,
            newest,
            ("oauth_clients_claim_stale", "oauth_client_resealed"),
            reseal_row,
            _CLIENT_KEY_RETIRED_WHILE_REWRAPPING,
        )

    async def reseal_webhook_secrets(
        self,
        organization_id: UUID,
        newest: int,
        reseal: Callable[
            [UUID, UUID, int, EncryptedValue, dict[int, StoredDataKey]],
            Awaitable[EncryptedValue],
        ],
    ) -> int:
        """Re-seal the organization's webhook signing secrets (migration 026: the current
        one and, while it still signs, the previous one) that an older data key seals;
        ``reseal(endpoint_id, secret_id, key_version, stale, data_keys)``. Returns how
        many endpoints."""

        async def reseal_row(row: asyncpg.Record, data_keys: DataKeys) -> tuple[object, ...]:
            current = EncryptedValue(
                row["secret_nonce"], row["secret_ciphertext"], "", row["key_version"]
            )
            if row["key_version"] < newest:
                current = await reseal(
                    row["id"], row["secret_id"], row["key_version"], current, data_keys
                )
            previous: EncryptedValue | None = None
            old = row["previous_key_version"]
            if row["previous_secret_id"] is not None and old < newest:
                previous = await reseal(
                    row["id"],
                    row["previous_secret_id"],
                    old,
                    EncryptedValue(
                        row["previous_secret_nonce"], row["previous_secret_ciphertext"], "", old
                    ),
                    data_keys,
                )
            return (
                row["id"],
                row["secret_id"],
                current.ciphertext,
                current.nonce,
                current.key_version,
                previous.ciphertext if previous else None,
                previous.nonce if previous else None,
                previous.key_version if previous else None,
            )

        # An endpoint whose secret no live key opens is left as it is (and its key
        # unretirable) until the secret is rotated.
        return await self._reseal_rows(
            organization_id,
            newest,
            ("webhook_endpoints_claim_stale", "webhook_endpoint_resealed"),
            reseal_row,
            _WEBHOOK_KEY_RETIRED_WHILE_REWRAPPING,
        )

    async def _reseal_rows(
        self,
        organization_id: UUID,
        newest: int,
        queries: tuple[str, str],
        reseal_row: Callable[[asyncpg.Record, DataKeys], Awaitable[tuple[object, ...]]],
        key_retired: ConstraintErrors,
    ) -> int:
        """Claim the rows an older data key seals (``queries``: claim, update), re-seal
        each (``reseal_row`` gives the update's arguments after the organization) and
        write it back, in one transaction; returns how many. A row no live key opens
        (DataLoss) is skipped; a key retired meanwhile raises ``key_retired``'s error."""
        claim, update = queries
        async with self._db.tenant(organization_id) as conn:
            rows = await conn.fetch(query(claim), organization_id, newest)
            if not rows:
                return 0
            key_rows = await conn.fetch(query("data_keys_of_org"), organization_id)
            data_keys = {r["version"]: data_key_from_row(r) for r in key_rows}
            resealed = 0
            for row in rows:
                try:
                    arguments = await reseal_row(row, data_keys)
                except DataLoss:
                    continue
                resealed += 1
                with map_driver_errors(key_retired):
                    await conn.execute(query(update), organization_id, *arguments)
        return resealed

    async def reencrypt_batch(
        self,
        job_id: UUID,
        organization_id: UUID,
        newest: int,
        limit: int,
        reencrypt: Callable[
            [SealedCredential, dict[int, StoredDataKey]], Awaitable[EncryptedValue]
        ],
    ) -> tuple[int, int, int]:
        """Claim, re-encrypt and commit one batch with its progress; (batch, done, total).

        Raises JobNotRunning (rolling the batch back) if the job was cancelled.
        """
        async with self._db.tenant(organization_id) as conn:
            rows = await conn.fetch(
                query("credentials_claim_stale"), organization_id, newest, limit, job_id
            )
            if not rows:
                return 0, -1, -1
            key_rows = await conn.fetch(query("data_keys_of_org"), organization_id)
            data_keys = {r["version"]: data_key_from_row(r) for r in key_rows}
            failed = counted = 0
            for row in rows:
                stale = _sealed(row)
                try:
                    value = await reencrypt(stale, data_keys)
                except DataLoss:
                    # Recorded and skipped for the rest of the job, not retried
                    # forever; the credential stays readable (or not) as it was.
                    await conn.execute(
                        query("rewrap_failure_record"),
                        job_id,
                        organization_id,
                        stale.id,
                        "integrity",
                    )
                    failed += 1
                    continue
                with map_driver_errors(_RETIRED_WHILE_REWRAPPING):
                    await conn.execute(
                        query("credential_reencrypted"),
                        organization_id,
                        stale.id,
                        value.ciphertext,
                        value.nonce,
                        value.key_version,  # the key that sealed it, not one read earlier
                        value.fingerprint,
                    )
                if row["counted"]:
                    counted += 1
            progress = await conn.fetchrow(query("rewrap_job_progress"), job_id, counted, failed)
            if progress is None:
                raise JobNotRunning
        return len(rows), progress["done"], progress["total"]

    async def require_organization(self, organization_id: UUID) -> None:
        """NotFound unless the organization exists (an organization without
        credentials exists all the same: its repair checks nothing)."""
        async with self._db.tenant(organization_id, read_only=True) as conn:
            exists = await conn.fetchval(query("organization_exists"), organization_id)
        if not exists:
            raise not_found(organization_id)

    async def repair_page(
        self,
        organization_id: UUID,
        after: UUID | None,
        limit: int,
        find_sealing_version: Callable[
            [SealedCredential, dict[int, StoredDataKey]], Awaitable[int | None]
        ],
    ) -> RepairPage:
        """Check one page of an organization's sealed credentials; correct each whose
        recorded data-key version is not the one ``find_sealing_version`` proves sealed it.

        In one transaction with the rows locked, so a concurrent rewrap cannot
        re-encrypt a row between the check and the correction.
        """
        repaired: list[KeyRepair] = []
        unrecoverable: list[UUID] = []
        async with self._db.tenant(organization_id) as conn:
            rows = await conn.fetch(query("credentials_sealed_page"), organization_id, after, limit)
            if not rows:
                return RepairPage(0, (), (), None)
            key_rows = await conn.fetch(query("data_keys_of_org"), organization_id)
            data_keys = {r["version"]: data_key_from_row(r) for r in key_rows}
            for row in rows:
                sealed = _sealed(row)
                version = await find_sealing_version(sealed, data_keys)
                if version is None:
                    unrecoverable.append(sealed.id)
                elif version != sealed.key_version:
                    with map_driver_errors(_RETIRED_DURING_REPAIR):
                        await conn.execute(
                            query("credential_key_version_repaired"),
                            organization_id,
                            sealed.id,
                            version,
                        )
                    repaired.append(KeyRepair(sealed.id, sealed.key_version, version))
        return RepairPage(len(rows), tuple(repaired), tuple(unrecoverable), rows[-1]["id"])

    async def start_job(self, started_by: str, total: int) -> tuple[RewrapJob, bool]:
        """Start a job, or return the running one; (job, started)."""
        async with self._db.admin() as conn:
            row = await conn.fetchrow(query("rewrap_job_start"), uuid4(), started_by, total)
            if row is not None:
                return _job(row), True
            running = await conn.fetchrow(query("rewrap_job_running"))
        if running is None:  # finished in between: the caller may try again
            raise NotFound("no rewrap job is running")
        return _job(running), False

    async def running_job(self) -> RewrapJob | None:
        async with self._db.admin(read_only=True) as conn:
            row = await conn.fetchrow(query("rewrap_job_running"))
        return _job(row) if row else None

    async def job(self, job_id: UUID) -> RewrapJob:
        async with self._db.admin(read_only=True) as conn:
            row = await conn.fetchrow(query("rewrap_job_get"), job_id)
        if row is None:
            raise NotFound(f"rewrap job {job_id} not found")
        return _job(row)

    async def latest_job(self) -> RewrapJob | None:
        async with self._db.admin(read_only=True) as conn:
            row = await conn.fetchrow(query("rewrap_job_latest"))
        return _job(row) if row else None

    async def finish_job(self, job_id: UUID, state: str) -> RewrapJob | None:
        async with self._db.admin() as conn:
            row = await conn.fetchrow(query("rewrap_job_finish"), job_id, state)
        return _job(row) if row else None
