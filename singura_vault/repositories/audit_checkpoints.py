"""Persistence of signed audit checkpoints: which chain heads to sign, and the record.

Signing itself happens in the service, between :meth:`heads_to_sign` handing out
the heads and the returned checkpoints being inserted, in one transaction that
holds an advisory lock, so two vault processes never sign the same round twice
and each chain's checkpoints stay a single line.

The same transaction checks that the signing key is the database's current one
(migration 018: ``audit_signing_keys``), so that a vault holding another key -- a
retired one, or a key generated after a restore -- signs nothing; a new key becomes
current only through :meth:`AuditCheckpointRepository.record_rotation`, which writes
its audit event in the same transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from singura_vault.db.pool import Database
from singura_vault.domain.audit import ChainHead, SignedCheckpoint
from singura_vault.errors import FailedPrecondition
from singura_vault.repositories.audit import (
    SYSTEM_CHAIN,
    AuditEntry,
    append_event,
    chain_all_pending,
)
from singura_vault.repositories.queries import query

ROTATED_ACTION = "audit.signing_key_rotated"


@dataclass(frozen=True)
class CurrentSigningKey:
    """The key the database's checkpoints continue with."""

    key_id: str
    # False: no key recorded yet, this is the newest checkpoint's key (migration 018).
    recorded: bool
    since: datetime


@dataclass(frozen=True)
class SigningKey:
    """The public half of the key a vault signs with, as the repository records it."""

    key_id: str
    public_key_pem: str


class SigningKeyNotCurrent(FailedPrecondition):
    """The vault's signing key is not the one the database's checkpoints continue with."""

    def __init__(self, ours: str, current: CurrentSigningKey) -> None:
        self.ours = ours
        self.current = current
        super().__init__(
            f"this vault's audit signing key {ours} is not the key that signs this "
            f"database's checkpoints ({current.key_id}, since {current.since.isoformat()}); "
            "no checkpoint was signed. Start the vault with that key, or start a new one "
            "with `singura-vault audit rotate-signing-key` (docs/audit.md#signing-keys)"
        )


async def _current(conn: asyncpg.Connection) -> CurrentSigningKey | None:
    row = await conn.fetchrow(query("audit_signing_key_current"))
    if row is None:
        return None
    return CurrentSigningKey(row["key_id"], row["recorded"], row["since"])


def _organization(chain_key: UUID) -> UUID | None:
    return None if chain_key == SYSTEM_CHAIN else chain_key


def _checkpoint(row: asyncpg.Record) -> SignedCheckpoint:
    return SignedCheckpoint(
        organization_id=_organization(row["chain_key"]),
        sequence=row["chain_seq"],
        head_hash=row["chain_hash"],
        signed_at=row["signed_at"],
        key_id=row["key_id"],
        previous_signature=row["previous_signature"],
        signature=row["signature"],
    )


class AuditCheckpointRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def sign_heads(
        self,
        organization: UUID | None,
        *,
        every_chain: bool,
        wait: bool,
        key: SigningKey,
        sign: Callable[[Sequence[ChainHead]], Awaitable[Sequence[SignedCheckpoint]]],
    ) -> list[SignedCheckpoint] | None:
        """Sign the heads that moved (every chain, or one: ``organization``, None being the
        system chain) with ``key``; None if ``wait`` is False and another process holds the
        round. SigningKeyNotCurrent, and nothing signed, if ``key`` is not the current key;
        the first round of a database with no key recorded records it."""
        chain = None if every_chain else (organization or SYSTEM_CHAIN)
        # Sign what has been committed, not just what the sequencer got to.
        await chain_all_pending(self._db)
        async with self._db.admin() as conn:
            if wait:
                await conn.execute(query("audit_signing_lock"))
            elif not await conn.fetchval(query("audit_signing_lock_try")):
                return None
            current = await _current(conn)
            if current is not None and current.key_id != key.key_id:
                raise SigningKeyNotCurrent(key.key_id, current)
            if current is None or not current.recorded:
                await conn.execute(
                    query("audit_signing_key_record"), key.key_id, None, key.public_key_pem
                )
            rows = await conn.fetch(query("audit_heads_to_sign"), chain)
            heads = [
                ChainHead(
                    organization_id=_organization(r["chain_key"]),
                    sequence=r["last_seq"],
                    head_hash=r["last_hash"],
                    previous_signature=r["previous_signature"],
                    previous_key_id=r["previous_key_id"],
                )
                for r in rows
            ]
            signed = list(await sign(heads))
            await conn.executemany(
                query("audit_checkpoint_insert"),
                [
                    (
                        c.organization_id or SYSTEM_CHAIN,
                        c.sequence,
                        c.head_hash,
                        c.signed_at,
                        c.key_id,
                        c.previous_signature,
                        c.signature,
                    )
                    for c in signed
                ],
            )
        return signed

    async def current_key(self) -> CurrentSigningKey | None:
        """The key this database's checkpoints continue with; None if nothing was signed."""
        async with self._db.admin(read_only=True) as conn:
            return await _current(conn)

    async def record_rotation(self, new: SigningKey, actor: str) -> CurrentSigningKey:
        """Make ``new`` the signing key, in one transaction with its audit event (system
        chain, ``audit.signing_key_rotated``); returns the key it replaced.
        FailedPrecondition if nothing was signed yet, or ``new`` signed or was recorded
        before (a retired key is not brought back)."""
        async with self._db.admin() as conn:
            # The signing rounds' lock: no round signs with the old key after this commits.
            await conn.execute(query("audit_signing_lock"))
            previous = await _current(conn)
            if previous is None:
                raise FailedPrecondition(
                    "nothing to rotate: this database has no signed checkpoints yet, so the "
                    "vault's first signing round records whichever key it holds"
                )
            if previous.key_id == new.key_id:
                raise FailedPrecondition(
                    f"{new.key_id} already is the key that signs this database's checkpoints"
                )
            if await conn.fetchval(query("audit_signing_key_used"), new.key_id):
                raise FailedPrecondition(
                    f"key {new.key_id} signed here before and was replaced; a retired key "
                    "is not brought back: generate a new one"
                )
            await conn.execute(
                query("audit_signing_key_record"), new.key_id, previous.key_id, new.public_key_pem
            )
            await append_event(
                conn,
                None,
                actor,
                "",
                AuditEntry(
                    ROTATED_ACTION,
                    "audit_signing_key",
                    new.key_id,
                    "success",
                    {"key_id": new.key_id, "previous_key_id": previous.key_id},
                ),
            )
        return previous

    async def latest(self, organization: UUID | None) -> SignedCheckpoint | None:
        async with self._db.admin() as conn:
            row = await conn.fetchrow(
                query("audit_checkpoint_latest"), organization or SYSTEM_CHAIN
            )
        return _checkpoint(row) if row else None

    async def export(
        self, organization: UUID | None, batch: int
    ) -> AsyncIterator[list[SignedCheckpoint]]:
        """One chain's checkpoints, oldest first, in short transactions of ``batch``."""
        after = 0
        while True:
            async with self._db.admin() as conn:
                rows = await conn.fetch(
                    query("audit_checkpoints_after"), organization or SYSTEM_CHAIN, after, batch
                )
            if not rows:
                return
            yield [_checkpoint(r) for r in rows]
            after = rows[-1]["chain_seq"]
