"""Audit events: the one writer of the events the service appends itself, and the
chain reads, sequencing and pruning over ``audit_logs``.

Events are written two ways, and only two: by row triggers in the database, in the
transaction of the change they record (credentials stored, keys rotated, ...), and
by :class:`AuditEntry` through the writers below, whose SQL is in
``repositories/sql/audit.sql``: :func:`append_event` inside a caller's transaction
(so it commits or rolls back with the change), :func:`append_for_request` as one
statement of its own for one request, and :func:`append_for_requests` as one
statement for the coalesced calls of several requests (migration 022). The last two
are the audit half of audit-or-fail on the reveal path: their statement commits
before a revealed value is returned (repositories/credential_reveals.py).

Only ids, types, statuses and reasons go into ``details`` -- never a secret.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from singura_vault.db.pool import Database
from singura_vault.db.scope import RequestScope
from singura_vault.domain.audit import AuditEvent, AuditFilter, ChainLink, ChainState
from singura_vault.errors import InvariantBroken
from singura_vault.repositories.queries import query

# The chain of events that belong to no organization.
SYSTEM_CHAIN = UUID(int=0)

# The first page of a newest-first listing reads before this position (the largest
# bigint), so that the keyset is always a plain ``chain_seq < $n`` index condition.
_BEFORE_ANY = 2**63 - 1

# Events per sequencer transaction when a maintenance step chains everything first.
_CATCH_UP_BATCH = 10_000


class AuditEntry(NamedTuple):
    """One event to append; the writer adds its organization, actor and request id.

    A tuple in the column order of audit_append_scoped and audit_append_batch, so that
    a batch of entries is turned into those statements' arrays without a conversion
    (the reveal path is measured, #26)."""

    action: str
    resource_type: str
    resource_id: str | None
    outcome: str
    details: dict[str, Any]


async def append_event(
    conn: asyncpg.Connection,
    organization_id: UUID | None,
    actor: str,
    request_id: str,
    entry: AuditEntry,
) -> None:
    """Append one event in the caller's transaction (so it commits or rolls back with it)."""
    await conn.execute(
        query("audit_append"),
        organization_id,
        actor,
        entry.action,
        entry.resource_type,
        entry.resource_id,
        request_id or None,
        entry.outcome,
        entry.details,
    )


def append_for_request(
    db: Database, organization_id: UUID, entries: Sequence[AuditEntry]
) -> Awaitable[list[asyncpg.Record]]:
    """Append the current request's events in one statement, its own transaction,
    committed when the returned awaitable completes (it raises if they are not).

    Returns the statement's awaitable rather than awaiting it, so that the caller's
    await is the only one on the reveal path."""
    return db.fetch_scoped(
        organization_id,
        query("audit_append_scoped"),
        organization_id,
        *(list(column) for column in zip(*entries, strict=True)),
        writes=True,
        audit_only=True,
    )


@dataclass(frozen=True, slots=True)
class ScopedEntry:
    """One coalesced call's event, with the scope its request runs under."""

    scope: RequestScope
    organization_id: UUID
    entry: AuditEntry


async def append_for_requests(db: Database, items: Sequence[ScopedEntry]) -> list[None]:
    """Append the events of several requests in one statement and one transaction,
    each under its own request's scope (a Coalescer's batch function: one outcome per
    item). If the statement fails, every item's call fails."""
    await db.fetch_batch(
        query("audit_append_batch"),
        [item.scope for item in items],
        [item.organization_id for item in items],
        *(list(column) for column in zip(*(item.entry for item in items), strict=True)),
        writes=True,
        audit_only=True,
    )
    return [None] * len(items)


# One sequencer batch (migrations 012, 023): chains up to ``limit`` committed pending
# events of every chain with an id above ``after``; its row says how many (chained)
# and the last id taken (last_id), the next batch's ``after``.
SequenceAfter = Callable[[int, int], Awaitable[asyncpg.Record | None]]


async def _chain_in_batches(sequence_after: SequenceAfter, batch: int) -> int:
    """Run sequencer batches of ``batch`` until one comes back short; how many chained.

    Each batch starts where the previous one stopped (a keyset on id), so it reads the
    index entries of its own events only, never those of the events already chained and
    not yet vacuumed: its cost does not grow with the backlog."""
    chained = 0
    after = 0
    while True:
        row = await sequence_after(after, batch)
        if row is None:
            raise InvariantBroken("_chain_in_batches: audit_sequence_after gave no row")
        taken: int = row["chained"]
        chained += taken
        after = row["last_id"]
        if taken < batch:
            return chained


async def chain_all_pending(db: Database, batch: int = _CATCH_UP_BATCH) -> int:
    """Chain every event committed so far, ``batch`` per sequencer transaction; returns
    how many were chained. An event whose transaction commits after the keyset passed
    its id, or that another sequencer holds (SKIP LOCKED), is left for the next call."""
    return await _chain_in_batches(
        partial(db.fetchrow_unscoped, query("audit_sequence_after")), batch
    )


async def _chain_every_committed(conn: asyncpg.Connection) -> None:
    """Chain every event committed so far, in ``conn``'s transaction, with every
    sequencer kept out until it ends (the lock erasure and checkpoints take).

    :func:`chain_all_pending` is enough for a sequencer, but not for a reader that
    needs *every* committed event in the chains: it skips the events another sequencer
    has picked and not yet chained (SKIP LOCKED), so a prune would leave them for its
    next run and a count would miss them. Holding the lock exclusively first waits for
    those sequencers to commit."""
    await conn.execute(query("audit_exclude_sequencers"))
    await _chain_in_batches(partial(conn.fetchrow, query("audit_sequence_after")), _CATCH_UP_BATCH)


def _event(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        organization_id=row["organization_id"],
        sequence=row["chain_seq"],
        occurred_at=row["occurred_at"],
        actor=row["actor"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        request_id=row["request_id"],
        outcome=row["outcome"],
        details=row["details"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def _filter_args(f: AuditFilter) -> tuple[object, ...]:
    return (f.start, f.end, f.action, f.resource_type, f.resource_id, f.actor, f.outcome)


def _chain_query(name: str, organization_id: UUID | None) -> tuple[str, tuple[object, ...]]:
    """The SQL of a chain read and its leading arguments: ``name`` with the organization
    as $1, or ``name_system`` (no organization argument) for the system chain. Each
    selects its chain with a predicate that stays an index condition under row-level
    security (see sql/audit.sql)."""
    if organization_id is None:
        return query(f"{name}_system"), ()
    return query(name), (organization_id,)


class AuditRepository:
    """Reading, exporting, verifying, pruning and erasing audit chains."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _scope(self, organization_id: UUID | None, *, read_only: bool = False) -> Any:
        if organization_id is None:
            return self._db.admin(read_only=read_only)
        return self._db.tenant(organization_id, read_only=read_only)

    async def newest_first(
        self,
        organization_id: UUID | None,
        audit_filter: AuditFilter,
        before_sequence: int | None,
        limit: int,
    ) -> list[AuditEvent]:
        sql, chain = _chain_query("audit_list", organization_id)
        before = _BEFORE_ANY if before_sequence is None else before_sequence
        async with self._scope(organization_id, read_only=True) as conn:
            rows = await conn.fetch(sql, *chain, *_filter_args(audit_filter), before, limit)
        return [_event(row) for row in rows]

    async def export(
        self, organization_id: UUID | None, audit_filter: AuditFilter, batch_size: int
    ) -> AsyncIterator[list[AuditEvent]]:
        """Batches oldest first, each read in its own short transaction: memory stays
        flat whatever the trail's size, and no transaction stays open while the
        client reads."""
        sql, chain = _chain_query("audit_export", organization_id)
        after = 0
        while True:
            async with self._scope(organization_id, read_only=True) as conn:
                rows = await conn.fetch(sql, *chain, *_filter_args(audit_filter), after, batch_size)
            if not rows:
                return
            batch = [_event(row) for row in rows]
            after = batch[-1].sequence
            yield batch
            if len(rows) < batch_size:
                return

    async def chain_pending(self, batch: int) -> int:
        """Chain every committed pending event of every chain, in sequencer
        transactions of ``batch`` (several processes' sequencers take disjoint batches);
        returns how many."""
        return await chain_all_pending(self._db, batch)

    async def chain_own(
        self, organization_id: UUID | None, after: int, limit: int, *, skip_backlog: bool
    ) -> tuple[int, int] | None:
        """Chain up to ``limit`` pending events of one chain (None: the system chain)
        with an id above ``after``, in one transaction (migration 023); returns how many
        and the last id taken (the next call's ``after``). With ``skip_backlog``, when
        more than ``limit`` are pending it chains nothing and returns None. Waits only
        for a sequencer batch that holds events of this chain, never for the
        sequencing of other chains."""
        row = await self._db.fetchrow_unscoped(
            query("audit_sequence_chain"), organization_id, after, limit, skip_backlog
        )
        if row is None:
            raise InvariantBroken("chain_own: row is None")
        if row["chained"] < 0:
            return None
        return row["chained"], row["last_id"]

    async def chain_state(self, organization_id: UUID | None) -> ChainState:
        key = organization_id or SYSTEM_CHAIN
        sql, chain = _chain_query("audit_pending_stats", organization_id)
        async with self._scope(organization_id, read_only=True) as conn:
            checkpoint = await conn.fetchrow(query("audit_checkpoint"), key)
            head = await conn.fetchrow(query("audit_head"), key)
            pending = await conn.fetchrow(sql, *chain)
        if pending is None:
            raise InvariantBroken("chain_state: pending is None")
        return ChainState(
            pruned_through=checkpoint["pruned_through_seq"] if checkpoint else 0,
            pruned_count=checkpoint["pruned_count"] if checkpoint else 0,
            pruned_last_hash=checkpoint["last_pruned_hash"] if checkpoint else None,
            head_sequence=head["last_seq"] if head else 0,
            head_hash=head["last_hash"] if head else None,
            pending_count=pending["pending"],
            oldest_pending_at=pending["oldest"],
        )

    async def links(
        self, organization_id: UUID | None, after_sequence: int, limit: int
    ) -> list[ChainLink]:
        sql, chain = _chain_query("audit_chain_batch", organization_id)
        async with self._scope(organization_id, read_only=True) as conn:
            rows = await conn.fetch(sql, *chain, after_sequence, limit)
        return [
            ChainLink(r["id"], r["chain_seq"], r["prev_hash"], r["hash"], r["canonical"])
            for r in rows
        ]

    async def appended_total(self) -> int:
        """Events ever appended to any chain and committed: read from the chain heads
        once every committed event is chained (:func:`_chain_every_committed`)."""
        async with self._db.admin() as conn:
            await _chain_every_committed(conn)
            total: int = await conn.fetchval(query("audit_appended_total"))
        return total

    async def prune(self, before: datetime, actor: str) -> dict[UUID, int]:
        """Delete events older than ``before`` from every chain, leaving checkpoints.
        Retention applies to every committed event: they are all chained first
        (:func:`_chain_every_committed`), in the prune's own transaction."""
        async with self._db.admin() as conn:
            await _chain_every_committed(conn)
            rows = await conn.fetch(query("audit_prune"), before, actor)
        return {row["chain_key"]: row["pruned"] for row in rows}
