"""A real PgBouncer (Debian's ``pgbouncer``, 1.18) in transaction pooling mode in front of
the tests' PostgreSQL, on a free loopback port; used by tests/integration/test_pgbouncer*.py and
bench/pgbouncer.py.

It authenticates nobody (``auth_type = trust``, the listed users only, loopback only)
and logs in to PostgreSQL as the client's user, the way the embedded server's Unix
socket trusts its callers. PgBouncer refuses to run as root: as root it runs as the
owner of PostgreSQL's socket directory (the embedded server's OS user).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from singura_vault.config import PoolSettings
from singura_vault.db.reachability import hosts_of

POOL_MODE = "transaction"


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: where to connect, and its server pool size per database/user."""

    port: int
    default_pool_size: int
    directory: Path

    def dsn(self, user: str, database: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as(upstream_host: str) -> str | None:
    """The OS user PgBouncer runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    if upstream_host.startswith("/"):
        return pwd.getpwuid(Path(upstream_host).stat().st_uid).pw_name
    return "nobody"


async def pooled_role_defaults(
    superuser_dsn: str, role: str, database: str, pool: PoolSettings
) -> None:
    """What docs/operations.md asks of an operator behind PgBouncer: the session
    settings the vault cannot send through it, as ``role``'s defaults in ``database``."""
    conn = await asyncpg.connect(superuser_dsn)
    try:
        for name, value in pool.session_settings().items():
            # Identifiers and values are the tests' own, never input.
            await conn.execute(
                f'ALTER ROLE "{role}" IN DATABASE "{database}" SET {name} = \'{value}\''
            )
    finally:
        await conn.close()


@contextmanager
def running_pgbouncer(
    upstream_dsn: str,
    users: Sequence[str],
    *,
    default_pool_size: int,
    max_client_conn: int = 200,
) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode for every database on ``upstream_dsn``'s server
    (``* =``), letting ``users`` in; stopped and its directory removed on exit."""
    executable = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    host, upstream_port = hosts_of(upstream_dsn)[0]
    directory = Path(tempfile.mkdtemp(prefix="sv-pgbouncer-"))
    port = _free_port()
    (directory / "users.txt").write_text("".join(f'"{u}" ""\n' for u in users))
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={host} port={upstream_port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {directory / 'users.txt'}\n"
        f"pool_mode = {POOL_MODE}\n"
        f"default_pool_size = {default_pool_size}\n"
        f"max_client_conn = {max_client_conn}\n"
        "log_connections = 0\n"
        "log_disconnections = 0\n"
        "log_pooler_errors = 1\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
    )
    user = _run_as(host)
    if user is not None:
        uid = pwd.getpwnam(user).pw_uid
        for path in (directory, *directory.iterdir()):
            os.chown(path, uid, -1)
    command = [executable, *(["-u", user] if user else []), str(directory / "pgbouncer.ini")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines: list[str] = []
    for line in process.stderr:  # its log, until it listens (or exits)
        lines.append(line)
        if "process up" in line:
            break
    if process.poll() is not None or not lines or "process up" not in lines[-1]:
        process.kill()
        process.wait()
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError("pgbouncer did not start:\n" + "".join(lines[-20:]))
    # Keep reading: a full pipe would stall it.
    threading.Thread(target=lines.extend, args=(process.stderr,), daemon=True).start()
    try:
        yield PgBouncer(port, default_pool_size, directory)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
