"""Persistence for key administration: data-key rewrapping, status, rewrap jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import asyncpg

from singura_vault.db.pool import Database
from singura_vault.domain import (
    CredentialType,
    DataKeyInfo,
    EncryptedValue,
    RewrapJob,
    StaleCredential,
    StoredDataKey,
)
from singura_vault.errors import DataLoss, FailedPrecondition, NotFound
from singura_vault.repositories._rows import data_key_from_row
from singura_vault.repositories.queries import query


class JobNotRunning(Exception):  # noqa: N818 - a signal to the worker, not a client error
    """The rewrap job was cancelled or completed while a batch was in flight."""


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

    async def data_keys(self, organization_id: UUID | None) -> list[DataKeyInfo]:
        async with self._db.admin() as conn:
            rows = await conn.fetch(query("data_keys_status"), organization_id)
        return [
            DataKeyInfo(
                r["organization_id"], r["version"], r["root_key_id"], r["state"], r["created_at"]
            )
            for r in rows
        ]

    async def credential_counts(self, organization_id: UUID) -> dict[int, int]:
        """Credentials (not revoked) per data key version, for one organization."""
        async with self._db.tenant(organization_id) as conn:
            rows = await conn.fetch(query("credentials_per_key_version"), organization_id)
        return {r["key_version"]: r["n"] for r in rows}

    async def retire_data_key(self, organization_id: UUID, version: int) -> None:
        async with self._db.tenant(organization_id) as conn:
            counts = await conn.fetch(query("credentials_per_key_version"), organization_id)
            in_use = {r["key_version"]: r["n"] for r in counts}.get(version, 0)
            if in_use:
                raise FailedPrecondition(
                    f"data key version {version} of organization {organization_id} still "
                    f"encrypts {in_use} credentials; rewrap them first (StartRewrap)"
                )
            status = await conn.execute(query("data_key_retire"), organization_id, version)
        if status.endswith(" 0"):
            raise NotFound(f"organization {organization_id} has no live data key version {version}")

    async def organizations_to_rewrap(self) -> list[tuple[UUID, int]]:
        """(organization, newest data key version) for every organization with older ones."""
        async with self._db.admin() as conn:
            rows = await conn.fetch(query("data_keys_orgs_with_old_versions"))
        return [(r["organization_id"], r["newest"]) for r in rows]

    async def stale_count(self, organization_id: UUID, newest: int, job_id: UUID | None) -> int:
        async with self._db.tenant(organization_id) as conn:
            count: int = await conn.fetchval(
                query("credentials_stale_count"), organization_id, newest, job_id
            )
        return count

    async def reencrypt_batch(
        self,
        job_id: UUID,
        organization_id: UUID,
        newest: int,
        limit: int,
        reencrypt: Callable[[StaleCredential, dict[int, StoredDataKey]], Awaitable[EncryptedValue]],
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
            failed = 0
            for row in rows:
                stale = StaleCredential(
                    id=row["id"],
                    connection_id=row["connection_id"],
                    type=CredentialType(row["credential_type"]),
                    version=row["version"],
                    key_version=row["key_version"],
                    nonce=row["nonce"],
                    ciphertext=row["ciphertext"],
                )
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
                await conn.execute(
                    query("credential_reencrypted"),
                    organization_id,
                    stale.id,
                    value.ciphertext,
                    value.nonce,
                    newest,
                    value.fingerprint,
                )
            progress = await conn.fetchrow(
                query("rewrap_job_progress"), job_id, len(rows) - failed, failed
            )
            if progress is None:
                raise JobNotRunning
        return len(rows), progress["done"], progress["total"]

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
        async with self._db.admin() as conn:
            row = await conn.fetchrow(query("rewrap_job_running"))
        return _job(row) if row else None

    async def job(self, job_id: UUID) -> RewrapJob:
        async with self._db.admin() as conn:
            row = await conn.fetchrow(query("rewrap_job_get"), job_id)
        if row is None:
            raise NotFound(f"rewrap job {job_id} not found")
        return _job(row)

    async def latest_job(self) -> RewrapJob | None:
        async with self._db.admin() as conn:
            row = await conn.fetchrow(query("rewrap_job_latest"))
        return _job(row) if row else None

    async def finish_job(self, job_id: UUID, state: str) -> RewrapJob | None:
        async with self._db.admin() as conn:
            row = await conn.fetchrow(query("rewrap_job_finish"), job_id, state)
        return _job(row) if row else None
