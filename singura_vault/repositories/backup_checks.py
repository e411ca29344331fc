"""What backup and restore learn about a database before pg_dump or pg_restore runs.

These run on a one-off connection as the role the operator named (the backup or the
schema-owner URL), not through the service's pool, which connects as the service role
and could answer neither question. Driver errors become :class:`DatabaseCheckError`,
whose message never contains the URL (it may hold a password).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from singura_vault.errors import InvariantBroken
from singura_vault.repositories.queries import query

_CONNECT_TIMEOUT_S = 10.0


class DatabaseCheckError(Exception):
    """The check could not run: the database is unreachable or refused the role."""


@dataclass(frozen=True)
class SourceFacts:
    role: str
    database: str
    bypasses_rls: bool
    has_schema: bool


@dataclass(frozen=True)
class TargetFacts:
    role: str
    database: str
    superuser: bool
    has_schema: bool
    has_app_role: bool
    may_create: bool


async def backup_source_facts(dsn: str, schema: str) -> SourceFacts:
    async with _connection(dsn) as conn:
        row = await conn.fetchrow(query("backup_source_facts"), schema)
    if row is None:
        raise InvariantBroken("backup_source_facts: row is None")
    return SourceFacts(row["role"], row["database"], row["bypasses_rls"], row["has_schema"])


async def restore_target_facts(dsn: str, schema: str, app_role: str) -> TargetFacts:
    async with _connection(dsn) as conn:
        row = await conn.fetchrow(query("restore_target_facts"), schema, app_role)
    if row is None:
        raise InvariantBroken("restore_target_facts: row is None")
    return TargetFacts(
        row["role"],
        row["database"],
        row["superuser"],
        row["has_schema"],
        row["has_app_role"],
        row["may_create"],
    )


@contextlib.asynccontextmanager
async def _connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
        raise DatabaseCheckError(
            f"cannot connect to the database ({reason}); is it running, and is the URL right?"
        ) from None
    except asyncpg.PostgresError as exc:
        raise DatabaseCheckError(f"cannot connect to the database: {exc}") from None
    try:
        yield conn
    except asyncpg.PostgresError as exc:
        raise DatabaseCheckError(f"database error: {exc}") from None
    finally:
        await conn.close()
