"""API key persistence and the audit of denied calls."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID, uuid4

import asyncpg

from singura_vault.context import current_request
from singura_vault.db.pool import Database
from singura_vault.domain.api_keys import ApiKey, KeyLookup, NewApiKey
from singura_vault.domain.paging import PageCursor
from singura_vault.errors import InvariantBroken, NotFound
from singura_vault.repositories._rows import utc
from singura_vault.repositories.audit import AuditEntry, append_event
from singura_vault.repositories.queries import query

# Migration 011's trigger announces changed keys (by key id) here.
API_KEY_CHANNEL = "singura_api_keys"


def _api_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        key_id=row["key_id"],
        organization_id=row["organization_id"],
        roles=tuple(row["roles"]),
        name=row["name"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=utc(row["expires_at"]),
        revoked_at=row["revoked_at"],
    )


class ApiKeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def lookup(self, key_id: str, digest: bytes) -> KeyLookup:
        """Verify a key and read its scope: one round trip, no write."""
        row = await self._db.fetchrow_unscoped(query("api_key_lookup"), key_id, digest)
        if row is None:
            raise InvariantBroken("lookup: row is None")
        return KeyLookup(
            status=row["status"],
            organization_id=row["organization_id"],
            roles=tuple(row["roles"] or ()),
            expires_at=utc(row["expires_at"]),
        )

    async def lease_tokens(
        self, key_id: str, rate: float, burst: float, want: int
    ) -> tuple[int, int]:
        """Take up to ``want`` tokens from the key's shared bucket; (granted, retry_after_ms)."""
        row = await self._db.fetchrow_unscoped(query("api_key_lease"), key_id, rate, burst, want)
        if row is None:
            raise InvariantBroken("lease_tokens: row is None")
        return row["granted"], row["retry_after_ms"]

    async def listen_for_changes(
        self, on_change: Callable[[str], None], on_state: Callable[[bool], None]
    ) -> None:
        """Call ``on_change(key_id)`` for every committed change of a key, and
        ``on_state(live)`` when notifications start or stop flowing; until cancelled."""
        await self._db.listen(API_KEY_CHANNEL, on_change, on_state)

    async def insert(self, new: NewApiKey) -> ApiKey:
        async with self._db.admin() as conn:
            row = await conn.fetchrow(
                query("api_key_insert"),
                uuid4(),
                new.key_id,
                new.secret_digest,
                new.organization_id,
                list(new.roles),
                new.name,
                new.created_by,
                new.expires_at,
            )
        if row is None:
            raise InvariantBroken("insert: row is None")
        return _api_key(row)

    async def list(
        self, organization_id: UUID | None, after: PageCursor | None, limit: int
    ) -> list[ApiKey]:
        async with self._db.admin(read_only=True) as conn:
            rows = await conn.fetch(
                query("api_key_list"),
                organization_id,
                after.at if after else None,
                after.id if after else None,
                limit,
            )
        return [_api_key(row) for row in rows]

    async def revoke(self, key_id: str) -> ApiKey:
        async with self._db.admin() as conn:
            row = await conn.fetchrow(query("api_key_revoke"), key_id)
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        return _api_key(row)

    async def bootstrap_admin(self, new: NewApiKey, *, only_if_none: bool) -> bool:
        """Insert an admin key unless its id exists, or (only_if_none) any admin key is
        live; returns True if it inserted one."""
        async with self._db.admin() as conn:
            await conn.execute(query("api_key_bootstrap_lock"))
            if only_if_none and await conn.fetchval(query("api_key_live_admin_exists")):
                return False
            if await conn.fetchval(query("api_key_exists"), new.key_id):
                return False
            await conn.execute(
                query("api_key_insert"),
                uuid4(),
                new.key_id,
                new.secret_digest,
                None,
                [],
                new.name,
                new.created_by,
                None,
            )
        return True

    async def record_denied(
        self, organization_id: UUID | None, key_id: str | None, method: str, code: str
    ) -> None:
        """Audit a refused call: in its organization if known, else as a system event."""
        request = current_request()
        entry = AuditEntry(
            "access.denied",
            "rpc",
            method,
            "denied",
            {"rpc_method": method, "code": code, "key_id": key_id},
        )
        transaction = (
            self._db.tenant(organization_id) if organization_id is not None else self._db.admin()
        )
        async with transaction as conn:
            await append_event(
                conn, organization_id, key_id or "unknown", request.request_id, entry
            )
