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
    """host:port of a PostgreSQL URL (a Unix socket directory as a path), no password;
    each host of a multi-host URL (libpq style), comma-separated."""
    return ", ".join(
        f"{host} (Unix socket, port {port})"
        if host.startswith("/")
        else f"[{host}]:{port}"
        if ":" in host
        else f"{host}:{port}"
        for host, port in hosts_of(dsn)
    )


def hosts_of(dsn: str) -> list[tuple[str, str]]:
    """The (host, port) pairs a libpq-style URL names, in the order they are tried:
    ``postgresql://u@h1:5432,h2:5433/db`` or ``...?host=/run/a,/run/b&port=5432,5433``."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    ports = (query.get("port") or [""])[-1].split(",")
    if query.get("host"):
        hosts = [(host, "") for host in query["host"][-1].split(",")]
    else:
        hostspec = parts.netloc.rpartition("@")[2]
        hosts = [_split_hostport(item) for item in hostspec.split(",")] if hostspec else []
    hosts = hosts or [("localhost", "")]
    pairs = []
    for i, (host, own_port) in enumerate(hosts):
        port = own_port or (ports[i] if len(ports) == len(hosts) else ports[0]) or "5432"
        pairs.append((host or "localhost", port))
    return pairs


def _split_hostport(item: str) -> tuple[str, str]:
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        return host, rest.removeprefix(":")
    host, colon, port = item.rpartition(":")
    return (host, port) if colon else (item, "")


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
    if isinstance(exc, asyncpg.exceptions.TargetServerAttributeNotMatched):
        return (
            "no host accepts writes (target_session_attrs=read-write): only standbys "
            "answer; is the primary down or a failover under way?"
        )
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    # Every host answered, none is a primary (target_session_attrs=read-write).
    asyncpg.exceptions.TargetServerAttributeNotMatched,
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
