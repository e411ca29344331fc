"""Signed checkpoints of the audit hash chains: signing, export, the signed message.

A checkpoint is the Ed25519 signature, under the vault's audit signing key, of

    singura-vault audit checkpoint v1
    <organization id, or "system">
    <chain position>
    <hash of the event at that position, hex>
    <signing time, integer microseconds since the Unix epoch>
    <signature of the chain's previous checkpoint, hex, or "-">
    <id of the key that signed the previous checkpoint>   (only after a key rotation)

(lines joined by "\\n", with a final "\\n"). Each checkpoint signs its predecessor,
so the checkpoints of a chain form a chain of their own. The seventh line is there
only in the first checkpoint of a chain signed with a new key
(``audit rotate-signing-key``): it names the key whose checkpoints it continues.

The signing key is the database's to choose, not the process's: a vault whose key is
not the one the checkpoints continue with (``audit_signing_keys``, migration 018)
refuses to start (:func:`check_audit_signer`, exit 2) and to sign, and a development
key is generated only for a database with no checkpoints, so a restore that left the
key behind can never start a new one silently. :meth:`AuditCheckpointService.rotate`
is the one way to a new key. Every vault process signs
the heads that moved every SINGURA_AUDIT_CHECKPOINT_INTERVAL seconds (one process
per round, by an advisory lock); CreateAuditCheckpoint signs one chain now.
``service/audit_offline.py`` verifies an export against them with no database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final
from uuid import UUID

from singura_vault import keys
from singura_vault.config import Settings
from singura_vault.db.pool import Database
from singura_vault.domain.audit import ChainHead, SignedCheckpoint
from singura_vault.errors import ConfigError, FailedPrecondition, NotFound
from singura_vault.local import DEVELOPMENT_SIGNING_KEY_FILE
from singura_vault.logs import get_logger
from singura_vault.repositories.audit_checkpoints import (
    AuditCheckpointRepository,
    CurrentSigningKey,
    SigningKey,
    SigningKeyNotCurrent,
)
from singura_vault.service.audit import chain_of
from singura_vault.service.authz import Authorizer

log = get_logger(__name__)

# The signer's type, for the modules that pass one along but may not import keys (server).
AuditSigner = keys.AuditSigner

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
    previous_key_id: str | None = None,
) -> bytes:
    """The bytes a checkpoint's signature covers (see the module docstring);
    ``previous_key_id`` only when the previous checkpoint was signed by another key."""
    lines = [
        MESSAGE_FORMAT,
        str(organization_id) if organization_id is not None else "system",
        str(sequence),
        head_hash.hex(),
        str(signed_at_micros),
        previous_signature.hex() if previous_signature is not None else "-",
    ]
    if previous_key_id is not None:
        lines.append(previous_key_id)
    return ("\n".join(lines) + "\n").encode("ascii")


def _configured_signer(settings: Settings) -> keys.AuditSigner | None:
    """The key SINGURA_AUDIT_SIGNING_KEY_FILE names, or the development key file (a new
    key, unsaved, when there is none); ConfigError explains a bad setup."""
    try:
        return keys.load_audit_signer(
            settings.audit_signing_key_file,
            data_dir=settings.data_dir,
            embedded=settings.embedded,
            production=settings.production,
        )
    except keys.KeyConfigError as exc:
        raise ConfigError(str(exc)) from None


def load_audit_signer(settings: Settings) -> keys.AuditSigner | None:
    """The audit signing key from configuration; ConfigError explains a bad setup."""
    signer = _configured_signer(settings)
    if signer is None:
        log.warning("audit_checkpoints_unsigned", detail=_NO_KEY)
    elif settings.audit_signing_key_file is None:
        log.warning(
            "development_audit_signing_key_in_use",
            path=str(settings.data_dir / DEVELOPMENT_SIGNING_KEY_FILE),
            detail="checkpoints are signed with a key kept beside the database; "
            "set SINGURA_AUDIT_SIGNING_KEY_FILE for real use",
        )
    else:
        log.info("audit_signing_key_loaded", key_id=signer.key_id)
    return signer


def signing_key_path(settings: Settings) -> Path:
    """Where the vault reads its audit signing key: the configured file, or the
    development key file in the data directory."""
    return settings.audit_signing_key_file or (settings.data_dir / DEVELOPMENT_SIGNING_KEY_FILE)


async def check_audit_signer(
    db: Database, signer: keys.AuditSigner | None, settings: Settings
) -> None:
    """At start: refuse (ConfigError, exit 2) a signing key other than the one this
    database's checkpoints continue with; then write a development key generated for
    a database with none. Runs before anything is served or signed."""
    if signer is None:
        return
    current = await AuditCheckpointRepository(db).current_key()
    if current is not None and current.key_id != signer.key_id:
        raise ConfigError(_not_the_current_key(signer, current, settings))
    if signer.unsaved_path is not None:
        try:
            path = signer.save_generated()
        except keys.KeyConfigError as exc:
            raise ConfigError(str(exc)) from None
        log.warning("development_audit_signing_key_generated", path=str(path), key_id=signer.key_id)


def _not_the_current_key(
    signer: keys.AuditSigner, current: CurrentSigningKey, settings: Settings
) -> str:
    path = signing_key_path(settings)
    have = (
        f"there is no key file at {path} (a development vault would generate a new key)"
        if signer.unsaved_path is not None
        else f"the key file {path} holds key {signer.key_id}"
    )
    return (
        f"this database's audit checkpoints are signed with key {current.key_id} (since "
        f"{current.since.isoformat()}), but {have}; refusing to start, so that no checkpoint "
        f"is signed with a key the auditors do not know. Put the file of key "
        f"{current.key_id} at {path} (after a restore: from the key backups, "
        "docs/backup-restore.md); or, if that key is lost or must be replaced, start a new "
        "one explicitly with `singura-vault audit rotate-signing-key` (audited; verifiers then "
        "need both public keys)"
    )


def rotation_signer(settings: Settings) -> keys.AuditSigner:
    """The key ``audit rotate-signing-key`` makes current: the configured key file, or
    the development key file (a new key, unsaved, when there is none)."""
    signer = _configured_signer(settings)
    if signer is None:
        raise ConfigError(
            "this vault has no audit signing key to rotate to: generate one with "
            "`singura-vault keys generate-signing-key --output FILE`, set "
            "SINGURA_AUDIT_SIGNING_KEY_FILE to it, and run this command again"
        )
    return signer


def already_current_advice(settings: Settings) -> str:
    """What to do when the key ``rotate-signing-key`` would start already is the current one."""
    if settings.audit_signing_key_file is not None:
        return (
            "to start a new key, generate one with `singura-vault keys generate-signing-key "
            "--output NEWFILE`, set SINGURA_AUDIT_SIGNING_KEY_FILE to NEWFILE for this command "
            "and then for every vault process, run this command again, and restart the vaults"
        )
    path = settings.data_dir / DEVELOPMENT_SIGNING_KEY_FILE
    return (
        f"to replace the development key, move {path} away (keep it, or at least its public "
        "key: it verifies the checkpoints signed so far), run this command again, and "
        "restart the vault"
    )


def public_key_of_key_file(path: Path) -> tuple[str, str]:
    """(key id, public key PEM) of an audit signing key file, read offline."""
    try:
        signer = keys.AuditSigner.from_file(path)
    except keys.KeyConfigError as exc:
        raise ConfigError(str(exc)) from None
    return signer.key_id, signer.public_key_pem


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

    async def sign_due(self, *, wait: bool = False) -> int | None:
        """Sign every chain whose head moved since its last checkpoint; how many were
        signed, or None if another vault process is signing this round (and not ``wait``)."""
        signed = await self._repository.sign_heads(
            None, every_chain=True, wait=wait, key=self._key(), sign=self._sign
        )
        if signed:
            log.info("audit_checkpoints_signed", chains=len(signed))
        return None if signed is None else len(signed)

    async def current_key(self) -> CurrentSigningKey | None:
        """The key the database's checkpoints continue with; None if nothing was signed."""
        return await self._repository.current_key()

    async def rotate(self, actor: str) -> tuple[str, int]:
        """Make this service's key the signing key (audited: ``audit.signing_key_rotated``),
        then sign every chain that moved with it; returns (the replaced key's id, how many
        chains were signed). The first checkpoint of each chain under the new key names
        the old key in its signed message."""
        key = self._key()
        previous = await self._repository.record_rotation(key, actor)
        log.warning("audit_signing_key_rotated", key_id=key.key_id, previous_key_id=previous.key_id)
        signed = await self.sign_due(wait=True)
        return previous.key_id, signed or 0

    async def create(self, organization_id: str) -> SignedCheckpoint:
        """Sign one chain's head now (or return its newest checkpoint if it did not move)."""
        org_id = chain_of(self._authz, organization_id, "checkpoint")
        await self._repository.sign_heads(
            org_id, every_chain=False, wait=True, key=self._key(), sign=self._sign
        )
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
            except SigningKeyNotCurrent as exc:  # rotated away under a running vault
                log.error(
                    "audit_signing_key_not_current",
                    key_id=exc.ours,
                    current_key_id=exc.current.key_id,
                    detail="no checkpoint signed; restart the vault with the current key",
                )
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
                        # The first checkpoint under a new key names the one before it.
                        head.previous_key_id
                        if head.previous_key_id not in (None, signer.key_id)
                        else None,
                    )
                ),
            )
            for head in heads
        ]

    def _key(self) -> SigningKey:
        signer = self._require_signer()
        return SigningKey(signer.key_id, signer.public_key_pem)

    def _require_signer(self) -> keys.AuditSigner:
        if self._signer is None:
            raise FailedPrecondition(_NO_KEY)
        return self._signer
