"""Taking a connection from the pool, and what a server that went away makes of it.

The wait is measured for the pool metrics. A connection the server broke mid-statement
is discarded (the pool opens a new one); a lost server is ``Unavailable``; a write that
finds the server in recovery (a failover: the primary became a standby) discards the
connection and is ``ServerReadOnly``, so the pool's next connection finds the new
primary. Only the pool (db/pool.py) calls it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from singura_vault import metrics
from singura_vault.db.errors import LOST_MID_CALL, ServerReadOnly
from singura_vault.errors import Unavailable
from singura_vault.logs import get_logger

log = get_logger(__name__)


@asynccontextmanager
async def acquire(pool: asyncpg.Pool, timeout_s: float) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, with the wait measured for the pool metrics."""
    started = time.perf_counter()
    metrics.POOL_WAITING.inc()
    try:
        # With a connection idle, acquiring cannot wait, so skip the timeout: asyncpg
        # implements it with wait_for, a task per call (~5% of a reveal's CPU here).
        # Opening a connection is bounded by its own connect timeout either way.
        timeout = None if pool.get_idle_size() else timeout_s
        conn = await pool.acquire(timeout=timeout)
    except (
        TimeoutError,
        OSError,
        asyncpg.PostgresError,
        asyncpg.exceptions.TargetServerAttributeNotMatched,
    ):
        metrics.DB_UNAVAILABLE.inc()
        raise
    finally:
        metrics.POOL_WAITING.dec()
    metrics.POOL_ACQUIRE.observe(time.perf_counter() - started)
    try:
        # The pool hands out a proxy that behaves as a Connection.
        yield cast(asyncpg.Connection, conn)
    except asyncpg.exceptions.InternalClientError as exc:
        # The server died mid-statement and left the driver's protocol in the
        # middle of an operation ("cannot switch to state ..."): the connection is
        # unusable, so close it and let the pool open a new one.
        log.warning("db_connection_discarded", error_type=type(exc).__name__)
        with contextlib.suppress(Exception):
            conn.terminate()
        raise
    except asyncpg.exceptions.InterfaceError as exc:
        # A lost server also surfaces as "cannot call Transaction.__aexit__()"
        # when the rollback finds the connection closed: the database going
        # away, not a bug of ours.
        if _connection_lost(conn):
            raise Unavailable(LOST_MID_CALL) from exc
        raise
    except asyncpg.exceptions.ReadOnlySQLTransactionError as exc:
        # Also what a write in one of our READ ONLY transactions would raise (a
        # bug: stays INTERNAL). A server in recovery is a failover: drop the
        # connection, so the pool's next one finds the new primary.
        if await _in_recovery(conn):
            log.warning("db_connection_discarded", error_type="server_in_recovery")
            with contextlib.suppress(Exception):
                conn.terminate()
            raise ServerReadOnly from exc
        raise
    finally:
        await pool.release(conn)


async def _in_recovery(conn: Any) -> bool:
    try:
        return bool(await conn.fetchval("SELECT pg_is_in_recovery()"))
    except Exception:  # a server that cannot answer is not known to be a standby
        return False


def _connection_lost(conn: Any) -> bool:
    """Whether a pooled connection is gone. The pool detaches the proxy of a connection
    whose server went away, and the detached proxy refuses even ``is_closed()``."""
    try:
        return bool(conn.is_closed())
    except asyncpg.exceptions.InterfaceError:
        return True
