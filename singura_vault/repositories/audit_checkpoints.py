"""Persistence of signed audit checkpoints: which chain heads to sign, and the record.

Signing itself happens in the service, between :meth:`heads_to_sign` handing out
the heads and the returned checkpoints being inserted, in one transaction that
holds an advisory lock, so two vault processes never sign the same round twice
and each chain's checkpoints stay a single line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from uuid import UUID

import asyncpg

from singura_vault.db.pool import Database
from singura_vault.domain import ChainHead, SignedCheckpoint
from singura_vault.repositories.audit import SYSTEM_CHAIN, chain_all_pending
from singura_vault.repositories.queries import query


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
        sign: Callable[[Sequence[ChainHead]], Awaitable[Sequence[SignedCheckpoint]]],
    ) -> list[SignedCheckpoint] | None:
        """Sign the heads that moved (every chain, or one: ``organization``, None being the
        system chain); None if ``wait`` is False and another process holds the round."""
        chain = None if every_chain else (organization or SYSTEM_CHAIN)
        # Sign what has been committed, not just what the sequencer got to.
        await chain_all_pending(self._db)
        async with self._db.admin() as conn:
            if wait:
                await conn.execute(query("audit_signing_lock"))
            elif not await conn.fetchval(query("audit_signing_lock_try")):
                return None
            rows = await conn.fetch(query("audit_heads_to_sign"), chain)
            heads = [
                ChainHead(
                    organization_id=_organization(r["chain_key"]),
                    sequence=r["last_seq"],
                    head_hash=r["last_hash"],
                    previous_signature=r["previous_signature"],
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
