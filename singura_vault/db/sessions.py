"""What every pooled connection is opened with: json/jsonb decoded to Python objects,
each statement timed (a slow one logged by its *name*, never its arguments), and no
reset on release, because the vault sets nothing at session level (db/pool.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import asyncpg

from singura_vault import metrics
from singura_vault.config import PoolSettings
from singura_vault.logs import get_logger

log = get_logger(__name__)

# Named queries open with their name (repositories/sql/*.sql).
_QUERY_NAME = re.compile(r"^/\* singura:([a-z0-9_]+) \*/")


def _slow_query_logger(threshold_ms: int) -> Callable[[Any], None]:
    """Log statements slower than DB_SLOW_QUERY_MS by their *name*, never their arguments."""

    def record(query: Any) -> None:
        elapsed_ms = query.elapsed * 1000
        if elapsed_ms < threshold_ms:
            return
        match = _QUERY_NAME.match(query.query)
        name = match[1] if match else "unnamed"
        metrics.SLOW_QUERIES.labels(query=name).inc()
        log.warning(
            "db_slow_query",
            query=name,
            duration_ms=round(elapsed_ms, 2),
            failed=query.exception is not None,
        )

    return record


def connection_initializer(settings: PoolSettings) -> Callable[[asyncpg.Connection], Any]:
    slow_query = _slow_query_logger(settings.slow_query_ms)

    async def init(conn: asyncpg.Connection) -> None:
        """Decode json/jsonb to Python objects; time every statement."""
        for type_name in ("json", "jsonb"):
            await conn.set_type_codec(
                type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
        conn.add_query_logger(slow_query)

    return init


async def no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's default RESET ALL: we only ever use transaction-scoped settings."""
