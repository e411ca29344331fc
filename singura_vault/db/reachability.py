"""Reaching an external PostgreSQL at start: say exactly why not, and optionally wait.

"The database is unreachable" helps nobody: a closed port, a host name that does not
resolve and a silent firewall need different fixes. At start the vault names the
variable, the host and port (never a password) and the cause. With SINGURA_DB_WAIT,
it keeps trying with backoff for that long, logging each attempt, for containers
that start before their database.
"""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import parse_qs, urlsplit

import asyncpg

from singura_vault.errors import Unavailable
from singura_vault.logs import get_logger

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 5.0


def endpoint(dsn: str) -> str:
    """host:port of a PostgreSQL URL (a Unix socket directory as a path), no password."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = (query.get("host") or [parts.hostname or "localhost"])[-1]
    port = (query.get("port") or [str(parts.port or 5432)])[-1]
    return f"{host}:{port}" if not host.startswith("/") else f"{host} (Unix socket, port {port})"


def _cause(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve (check the host in the URL, and DNS)"
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused (nothing listens there: is PostgreSQL running?)"
    if isinstance(exc, TimeoutError):
        return (
            f"no answer within {CONNECT_TIMEOUT_S:.0f} s (a firewall, a wrong address, or "
            "an overloaded server)"
        )
    if isinstance(exc, FileNotFoundError):
        return "the Unix socket does not exist (is PostgreSQL running with that directory?)"
    if isinstance(exc, asyncpg.exceptions.CannotConnectNowError):
        return "the server is starting up or shutting down"
    if isinstance(exc, asyncpg.exceptions.TooManyConnectionsError):
        return "the server has no connection slots left (max_connections)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)


async def wait_until_reachable(dsn: str, variable: str, wait_s: float) -> None:
    """Connect once (and disconnect); on failure retry with backoff until wait_s has
    passed, then raise Unavailable naming the variable, the endpoint and the cause.
    A server that answers but refuses the login is not waited for: that is a
    configuration error the caller reports."""
    deadline = time.monotonic() + wait_s
    backoff = _FIRST_BACKOFF_S
    attempt = 0
    while True:
        attempt += 1
        try:
            conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
        except _UNREACHABLE as exc:
            cause = _cause(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(
                    f"cannot reach PostgreSQL at {endpoint(dsn)} ({variable}): {cause}"
                    + (f"; gave up after {wait_s:g} s (SINGURA_DB_WAIT)" if wait_s else "")
                ) from None
            log.warning(
                "db_waiting",
                variable=variable,
                endpoint=endpoint(dsn),
                cause=cause,
                attempt=attempt,
                remaining_s=round(remaining, 1),
            )
            await asyncio.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            continue
        except asyncpg.PostgresError:
            return  # reachable; the login error is reported by the real connection
        await conn.close()
        if attempt > 1:
            log.info("db_reachable", variable=variable, attempts=attempt)
        return
