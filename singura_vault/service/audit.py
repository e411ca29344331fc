"""Audit use cases: list, export and verify the hash chains; retention.

Verification recomputes each event's SHA-256 from its predecessor's hash and the
canonical encoding of the row *as it is now* (computed by the database from the
current column values), so an edited field, a deleted event and a reordered
pair all surface as the first event whose links do not hold.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

from singura_vault import metrics
from singura_vault.domain.audit import AuditEvent, AuditFilter, ChainState
from singura_vault.errors import InvalidArgument
from singura_vault.logs import get_logger
from singura_vault.repositories.audit import AuditRepository
from singura_vault.service import pagination, validation
from singura_vault.service.audit_sequencer import AuditSequencer
from singura_vault.service.authz import READ, Authorizer

log = get_logger(__name__)

GENESIS_HASH = bytes(32)
EXPORT_BATCH = 1000
_VERIFY_BATCH = 5000
# SINGURA_AUDIT_RETENTION_DAYS prunes this often; the audit-append gauge refreshes this often.
RETENTION_INTERVAL_S = 3600.0
APPENDED_GAUGE_INTERVAL_S = 15.0


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    event_count: int
    head_hash: bytes
    pruned_count: int
    first_bad_event_id: int = 0
    problem: str = ""
    # Committed events the sequencer has not chained yet (so not checked).
    pending_count: int = 0
    oldest_pending_age: timedelta | None = None


@dataclass(frozen=True)
class AuditPage:
    events: tuple[AuditEvent, ...]
    next_page_token: str


class AuditService:
    def __init__(
        self,
        repository: AuditRepository,
        authorizer: Authorizer | None = None,
        sequencer: AuditSequencer | None = None,
    ) -> None:
        self._repository = repository
        self._authz = authorizer or Authorizer()
        # Reads chain their own chain's pending events first (a list call never a
        # backlog; never other chains), so a caller sees its own committed events.
        self._sequencer = sequencer or AuditSequencer(repository)

    def _chain(self, organization_id: str, action: str) -> UUID | None:
        return chain_of(self._authz, organization_id, action)

    async def list_events(
        self, organization_id: str, audit_filter: AuditFilter, page_size: int, page_token: str
    ) -> AuditPage:
        org_id = self._chain(organization_id, "read")
        _check_range(audit_filter)
        size = pagination.page_size(page_size)
        filters = ("audit", str(org_id or ""), repr(audit_filter))
        before = pagination.decode_sequence_token(page_token, filters)
        await self._sequencer.catch_up(org_id)
        rows = await self._repository.newest_first(org_id, audit_filter, before, size + 1)
        items = tuple(rows[:size])
        token = (
            pagination.encode_sequence_token(items[-1].sequence, filters)
            if len(rows) > size
            else ""
        )
        return AuditPage(items, token)

    async def export(
        self, organization_id: str, audit_filter: AuditFilter
    ) -> AsyncIterator[list[AuditEvent]]:
        org_id = self._chain(organization_id, "export")
        _check_range(audit_filter)
        exported = 0
        await self._sequencer.catch_up(org_id, whole=True)
        async for batch in self._repository.export(org_id, audit_filter, EXPORT_BATCH):
            exported += len(batch)
            yield batch
        log.info("audit_exported", events=exported)

    async def verify(self, organization_id: str) -> ChainVerification:
        org_id = self._chain(organization_id, "verify")
        await self._sequencer.catch_up(org_id, whole=True)
        state = await self._repository.chain_state(org_id)
        result = await self._walk(org_id, state)
        oldest = state.oldest_pending_at
        return replace(
            result,
            pending_count=state.pending_count,
            oldest_pending_age=(
                max(datetime.now(UTC) - oldest, timedelta(0)) if oldest is not None else None
            ),
        )

    async def _walk(self, org_id: UUID | None, state: ChainState) -> ChainVerification:
        """Check the chained events from the prune checkpoint to the head."""
        expected_prev = state.pruned_last_hash or GENESIS_HASH
        expected_seq = state.pruned_through + 1
        count = 0
        while True:
            links = await self._repository.links(org_id, expected_seq - 1, _VERIFY_BATCH)
            for link in links:
                problem = ""
                if link.sequence != expected_seq:
                    problem = (
                        f"expected chain position {expected_seq} but found {link.sequence}: "
                        "events before it were deleted or reordered"
                    )
                elif link.prev_hash != expected_prev:
                    problem = (
                        "its previous-hash link does not match the event before it: an event "
                        "was deleted, inserted or reordered"
                    )
                elif hashlib.sha256(link.prev_hash + link.canonical.encode()).digest() != link.hash:
                    problem = "its content does not match its hash: the event was edited"
                if problem:
                    return ChainVerification(
                        False, count, expected_prev, state.pruned_count, link.id, problem
                    )
                expected_prev = link.hash
                expected_seq += 1
                count += 1
            if len(links) < _VERIFY_BATCH:
                break
        if state.head_sequence != expected_seq - 1 or (
            state.head_hash is not None and state.head_hash != expected_prev
        ):
            return ChainVerification(
                False,
                count,
                expected_prev,
                state.pruned_count,
                0,
                f"the chain ends at position {expected_seq - 1} but its head records "
                f"{state.head_sequence}: the newest events were deleted",
            )
        return ChainVerification(True, count, expected_prev, state.pruned_count)

    async def prune(self, older_than: timedelta, actor: str) -> dict[UUID, int]:
        """Delete events older than the retention period (operator action, audited)."""
        if older_than < timedelta(days=1):
            raise InvalidArgument("older_than", "must be at least 1 day")
        before = datetime.now(UTC) - older_than
        pruned = await self._repository.prune(before, actor)
        log.info("audit_pruned", before=before.isoformat(), events=sum(pruned.values()))
        return pruned

    async def prune_forever(self, older_than: timedelta) -> None:
        """SINGURA_AUDIT_RETENTION_DAYS: prune hourly. Every process may run this; the
        prune function takes a lock, so concurrent runs simply follow each other."""
        while True:
            try:
                await self.prune(older_than, "retention")
            except Exception as exc:  # a failed prune must not stop the vault; retry next hour
                log.error("audit_prune_failed", error_type=type(exc).__name__)
            await asyncio.sleep(RETENTION_INTERVAL_S)


async def track_appended_total(repository: AuditRepository) -> None:
    """Refresh the audit-append gauge every 15 s (only when metrics are served)."""
    while True:
        try:
            metrics.AUDIT_APPENDED.set(await repository.appended_total())
        except Exception as exc:  # a missed refresh only leaves the gauge stale
            log.warning("audit_metrics_failed", error_type=type(exc).__name__)
        await asyncio.sleep(APPENDED_GAUGE_INTERVAL_S)


def chain_of(authz: Authorizer, organization_id: str, action: str) -> UUID | None:
    """The chain a request names; the system chain (empty id) is for admin keys only."""
    if not organization_id:
        authz.require_admin(f"{action} the system audit trail")
        return None
    org_id = validation.parse_uuid("organization_id", organization_id)
    authz.require(org_id, READ, f"{action} the audit trail")
    return org_id


def _check_range(audit_filter: AuditFilter) -> None:
    if audit_filter.start and audit_filter.end and audit_filter.start >= audit_filter.end:
        raise InvalidArgument("filter.end_time", "must be after filter.start_time")
