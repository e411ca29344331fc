"""The rewrap worker: re-encrypts credentials onto their organization's newest data key.

Every vault process runs one. It polls PostgreSQL for the running job and claims
batches with FOR UPDATE SKIP LOCKED, so any number of processes share a job
without doing a credential twice. Each batch is one transaction that decrypts
with the old data key, encrypts with the newest (as read in that transaction, and
recorded as such: a rotation in between changes which key, never the pairing of
row and key), checks that the new ciphertext opens again, and adds its count to
the job -- a killed process loses at most its uncommitted batch, and whoever
polls next carries on. Reads never stop: until its row commits, a credential
stays readable under the key that encrypted it.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from uuid import UUID

from singura_vault import keys, metrics
from singura_vault.domain.credentials import SealedCredential
from singura_vault.domain.sealed import EncryptedValue, StoredDataKey
from singura_vault.errors import DataLoss
from singura_vault.logs import get_logger
from singura_vault.repositories.key_admin import (
    DataKeysChanged,
    JobNotRunning,
    KeyAdminRepository,
)
from singura_vault.service import bindings, sealing
from singura_vault.service.data_keys import unwrap

log = get_logger(__name__)

BATCH_SIZE = 200


class RewrapWorker:
    def __init__(
        self,
        repository: KeyAdminRepository,
        key_manager: keys.KeyManager,
        *,
        batch_size: int = BATCH_SIZE,
        poll_interval_s: float = 2.0,
    ) -> None:
        self._repository = repository
        self._keys = key_manager
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s

    async def run_forever(self) -> None:
        """Poll for a running job and work on it, until cancelled (vault shutdown)."""
        while True:
            try:
                await self.work_once()
            except Exception as exc:  # keep polling; the next pass retries the batch
                log.error("rewrap_worker_error", error_type=type(exc).__name__)
            await asyncio.sleep(self._poll_interval_s)

    async def work_once(self) -> bool:
        """Work the running job until nothing is left; True if a job was completed."""
        job = await self._repository.running_job()
        if job is None:
            return False
        while True:
            did_work = False
            remaining = 0
            for organization_id, newest in await self._repository.organizations_to_rewrap():
                try:
                    did_work |= await self._drain(job.id, organization_id, newest)
                except JobNotRunning:
                    log.info("rewrap_stopped", job_id=str(job.id))
                    return False
                # Batches held by other workers were skipped, not done: count them
                # (a plain count sees locked rows) before calling the job complete.
                remaining += await self._repository.stale_count(organization_id, newest, job.id)
            if not did_work and remaining == 0:
                break
            if not did_work:
                await asyncio.sleep(0.05)  # another worker is committing the last batches
        finished = await self._repository.finish_job(job.id, "completed")
        if finished is not None:
            log.info(
                "rewrap_completed", job_id=str(job.id), done=finished.done, failed=finished.failed
            )
        return finished is not None

    async def _drain(self, job_id: UUID, organization_id: UUID, newest: int) -> bool:
        did_work = False
        while True:
            try:
                count, done, total = await self._repository.reencrypt_batch(
                    job_id, organization_id, newest, self._batch_size, self._reencrypt
                )
            except DataKeysChanged:
                # A retirement won the race with this batch: plan again from the
                # live keys (the caller's loop asks for the newest once more).
                log.info("rewrap_keys_changed", organization_id=str(organization_id))
                return True
            if count == 0:
                # The credentials are done; the organization's OAuth client secrets are
                # sealed under its data keys too, and retirement waits for them.
                try:
                    resealed = await self._repository.reseal_client_secrets(
                        organization_id, newest, self._reseal_client_secret
                    )
                    # Webhook signing secrets (migration 026) likewise.
                    resealed_hooks = await self._repository.reseal_webhook_secrets(
                        organization_id, newest, self._reseal_webhook_secret
                    )
                except DataKeysChanged:
                    return True
                if resealed or resealed_hooks:
                    log.info(
                        "rewrap_secrets",
                        organization_id=str(organization_id),
                        client_secrets=resealed,
                        webhook_secrets=resealed_hooks,
                    )
                return did_work or resealed + resealed_hooks > 0
            did_work = True
            metrics.REWRAPPED.inc(count)
            log.info("rewrap_progress", job_id=str(job_id), done=done, total=total)

    async def _reseal_client_secret(
        self,
        row_id: UUID,
        key_version: int,
        stale: EncryptedValue,
        data_keys: dict[int, StoredDataKey],
        signing: bool = False,
    ) -> EncryptedValue:
        """Open an OAuth client secret (``signing``: its Slack signing secret, migration
        027) under the version that sealed it, seal it under the newest."""
        organization_id = data_keys[max(data_keys)].organization_id
        bind = bindings.signing_secret_binding if signing else bindings.client_secret_binding
        return await self._reseal(
            "an OAuth client secret",
            "set the client again",
            lambda version: bind(organization_id, row_id, version),
            key_version,
            stale,
            data_keys,
        )

    async def _reseal_webhook_secret(
        self,
        endpoint_id: UUID,
        secret_id: UUID,
        key_version: int,
        stale: EncryptedValue,
        data_keys: dict[int, StoredDataKey],
    ) -> EncryptedValue:
        """Open a webhook endpoint's signing secret (migration 026; the current one or the
        one still signing beside it) under the version that sealed it, seal it under the
        newest."""
        organization_id = data_keys[max(data_keys)].organization_id
        return await self._reseal(
            f"the signing secret of webhook endpoint {endpoint_id}",
            "rotate the endpoint's secret (RotateWebhookSecret)",
            lambda version: bindings.webhook_secret_binding(
                organization_id, endpoint_id, secret_id, version
            ),
            key_version,
            stale,
            data_keys,
        )

    async def _reseal(
        self,
        what: str,
        remedy: str,
        bind: Callable[[int], keys.CredentialBinding],
        key_version: int,
        stale: EncryptedValue,
        data_keys: dict[int, StoredDataKey],
    ) -> EncryptedValue:
        """Open a secret sealed under ``key_version`` and seal it under the newest live
        version (decrypt-after-encrypt checked, as for credentials)."""
        newest = data_keys[max(data_keys)]
        organization_id = newest.organization_id
        if key_version not in data_keys:
            raise DataLoss(
                f"{what} of organization {organization_id} is sealed under data key version "
                f"{key_version}, which was destroyed; {remedy}"
            )
        old = await unwrap(self._keys, data_keys[key_version])
        try:
            plaintext = self._keys.open(
                old, keys.Sealed(stale.nonce, stale.ciphertext), bind(key_version)
            )
        except keys.IntegrityError:
            log.error(
                "secret_integrity_failure",
                security_event=True,
                organization_id=str(organization_id),
                key_version=key_version,
            )
            raise DataLoss(
                f"{what} of organization {organization_id} failed its integrity check during "
                f"rewrap; {remedy}"
            ) from None
        new = await unwrap(self._keys, newest)
        binding = bind(newest.version)
        sealed = self._keys.seal(new, plaintext, binding)
        if not hmac.compare_digest(self._keys.open(new, sealed, binding), plaintext):
            raise DataLoss(f"re-sealing {what} did not verify")
        return EncryptedValue(sealed.nonce, sealed.ciphertext, "", newest.version)

    async def _reencrypt(
        self, stale: SealedCredential, data_keys: dict[int, StoredDataKey]
    ) -> EncryptedValue:
        """Open under whichever live version sealed it, seal under the newest.

        The newest version is the one in ``data_keys``, read inside the batch's
        transaction, and the value returned names it: the row records the key
        that sealed it, whatever rotation committed since the job looked.
        """
        newest = data_keys[max(data_keys)]
        organization_id = newest.organization_id
        opened = await sealing.open_stored_under_any(self._keys, organization_id, stale, data_keys)
        if opened is None:
            log.error(
                "credential_integrity_failure", security_event=True, credential_id=str(stale.id)
            )
            if stale.key_version not in data_keys:
                raise DataLoss(
                    f"credential {stale.id} is encrypted with data key version "
                    f"{stale.key_version}, which was destroyed; it cannot be rewrapped"
                )
            raise DataLoss(f"credential {stale.id} failed its integrity check during rewrap")
        if opened.key_version != stale.key_version:
            # A row hit by the rewrap race of earlier releases: authenticated
            # decryption proved which key sealed it, and this rewrap heals it.
            log.warning(
                "credential_key_version_mismatch",
                credential_id=str(stale.id),
                recorded_key_version=stale.key_version,
                sealed_key_version=opened.key_version,
            )
        new = await unwrap(self._keys, newest)
        binding = bindings.credential_binding(organization_id, stale, newest.version)
        sealed = self._keys.seal(new, opened.plaintext, binding)
        # Decrypt-after-encrypt: never commit a ciphertext that does not open.
        if not hmac.compare_digest(self._keys.open(new, sealed, binding), opened.plaintext):
            raise DataLoss(f"re-encryption of credential {stale.id} did not verify")
        return EncryptedValue(
            sealed.nonce,
            sealed.ciphertext,
            self._keys.fingerprint(new, opened.plaintext),
            newest.version,
        )
