"""Signed checkpoints of the audit hash chains: signing, export, the signed message.

A checkpoint is the Ed25519 signature, under the vault's audit signing key, of

    singura-vault audit checkpoint v1
    <organization id, or "system">
    <chain position>
    <hash of the event at that position, hex>
    <signing time, integer microseconds since the Unix epoch>
    <signature of the chain's previous checkpoint, hex, or "-">

(lines joined by "\\n", with a final "\\n"). Each checkpoint signs its predecessor,
so the checkpoints of a chain form a chain of their own. Every vault process signs
the heads that moved every SINGURA_AUDIT_CHECKPOINT_INTERVAL seconds (one process
per round, by an advisory lock); CreateAuditCheckpoint signs one chain now.
``service/audit_offline.py`` verifies an export against them with no database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final
from uuid import UUID

from singura_vault import keys
from singura_vault.config import Settings
from singura_vault.domain import ChainHead, SignedCheckpoint
from singura_vault.errors import ConfigError, FailedPrecondition, NotFound
from singura_vault.logs import get_logger
from singura_vault.repositories.audit_checkpoints import AuditCheckpointRepository
from singura_vault.service.audit import chain_of
from singura_vault.service.authz import Authorizer

log = get_logger(__name__)

MESSAGE_FORMAT: Final = "singura-vault audit checkpoint v1"
EXPORT_BATCH: Final = 1000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NO_KEY: Final = (
    "audit checkpoints are not signed: set SINGURA_AUDIT_SIGNING_KEY_FILE (create a key "
    "with `singura-vault keys generate-signing-key --output FILE`) and restart the vault"
)


def micros(moment: datetime) -> int:
    """Exact integer microseconds since the Unix epoch."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def checkpoint_message(
    organization_id: UUID | None,
    sequence: int,
    head_hash: bytes,
    signed_at_micros: int,
    previous_signature: bytes | None,
) -> bytes:
    """The bytes a checkpoint's signature covers (see the module docstring)."""
    lines = (
        MESSAGE_FORMAT,
        str(organization_id) if organization_id is not None else "system",
        str(sequence),
        head_hash.hex(),
        str(signed_at_micros),
        previous_signature.hex() if previous_signature is not None else "-",
    )
    return ("\n".join(lines) + "\n").encode("ascii")


def load_audit_signer(settings: Settings) -> keys.AuditSigner | None:
    """The audit signing key from configuration; ConfigError explains a bad setup."""
    try:
        signer = keys.load_audit_signer(
            settings.audit_signing_key_file,
            data_dir=settings.data_dir,
            embedded=settings.embedded,
            production=settings.production,
        )
    except keys.KeyConfigError as exc:
        raise ConfigError(str(exc)) from None
    if signer is None:
        log.warning("audit_checkpoints_unsigned", detail=_NO_KEY)
    elif settings.audit_signing_key_file is None:
        log.warning(
            "development_audit_signing_key_in_use",
            path=str(settings.data_dir / keys.DEVELOPMENT_SIGNING_KEY_NAME),
            detail="checkpoints are signed with a key kept beside the database; "
            "set SINGURA_AUDIT_SIGNING_KEY_FILE for real use",
        )
    else:
        log.info("audit_signing_key_loaded", key_id=signer.key_id)
    return signer


class AuditCheckpointService:
    def __init__(
        self,
        repository: AuditCheckpointRepository,
        signer: keys.AuditSigner | None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._repository = repository
        self._signer = signer
        self._authz = authorizer or Authorizer()

    @property
    def enabled(self) -> bool:
        return self._signer is not None

    def public_key(self) -> tuple[str, str]:
        """(key id, PEM) of the audit signing key; any authenticated caller may ask."""
        signer = self._require_signer()
        return signer.key_id, signer.public_key_pem

    async def sign_due(self) -> int | None:
        """Sign every chain whose head moved since its last checkpoint; how many were
        signed, or None if another vault process is signing this round."""
        signed = await self._repository.sign_heads(
            None, every_chain=True, wait=False, sign=self._sign
        )
        if signed:
            log.info("audit_checkpoints_signed", chains=len(signed))
        return None if signed is None else len(signed)

    async def create(self, organization_id: str) -> SignedCheckpoint:
        """Sign one chain's head now (or return its newest checkpoint if it did not move)."""
        org_id = chain_of(self._authz, organization_id, "checkpoint")
        self._require_signer()
        await self._repository.sign_heads(org_id, every_chain=False, wait=True, sign=self._sign)
        latest = await self._repository.latest(org_id)
        if latest is None:
            raise NotFound("this audit trail has no events yet, so there is nothing to sign")
        return latest

    async def export(self, organization_id: str) -> AsyncIterator[list[SignedCheckpoint]]:
        org_id = chain_of(self._authz, organization_id, "export")
        async for batch in self._repository.export(org_id, EXPORT_BATCH):
            yield batch

    async def run_forever(self, interval_s: float) -> None:
        """Sign the moved heads every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sign_due()
            except Exception as exc:  # the next round tries again
                log.error("audit_checkpoint_failed", error_type=type(exc).__name__)

    async def _sign(self, heads: Sequence[ChainHead]) -> list[SignedCheckpoint]:
        signer = self._require_signer()
        # datetime holds whole microseconds: exactly what timestamptz stores and gives back.
        signed_at = datetime.now(UTC)
        at = micros(signed_at)
        return [
            SignedCheckpoint(
                organization_id=head.organization_id,
                sequence=head.sequence,
                head_hash=head.head_hash,
                signed_at=signed_at,
                key_id=signer.key_id,
                previous_signature=head.previous_signature,
                signature=signer.sign(
                    checkpoint_message(
                        head.organization_id,
                        head.sequence,
                        head.head_hash,
                        at,
                        head.previous_signature,
                    )
                ),
            )
            for head in heads
        ]

    def _require_signer(self) -> keys.AuditSigner:
        if self._signer is None:
            raise FailedPrecondition(_NO_KEY)
        return self._signer
