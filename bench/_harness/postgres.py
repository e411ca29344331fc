"""A throwaway embedded PostgreSQL: started in a temporary directory, stopped and
deleted on exit, Ctrl-C or SIGTERM included."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from singura_vault.db.embedded import EmbeddedCluster, EmbeddedPostgres
from singura_vault.db.setup import DATABASE_NAME, OWNER_ROLE, SERVICE_ROLE


@dataclass(frozen=True)
class Postgres:
    """A running throwaway embedded PostgreSQL."""

    server: EmbeddedPostgres
    cluster: EmbeddedCluster
    base_dir: Path

    @property
    def superuser_dsn(self) -> str:
        return self.cluster.dsn(self.cluster.superuser, "postgres")

    @property
    def owner_dsn(self) -> str:
        return self.cluster.dsn(OWNER_ROLE, DATABASE_NAME)

    @property
    def service_dsn(self) -> str:
        return self.cluster.dsn(SERVICE_ROLE, DATABASE_NAME)

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.base_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def embedded_postgres() -> Iterator[Postgres]:
    """Start PostgreSQL in a new temporary directory; always stop it and delete the
    directory, also on Ctrl-C and SIGTERM. Outside the event loop SIGTERM becomes
    KeyboardInterrupt here (inside it, :func:`.loop.run` handles it); while cleaning up,
    both signals are ignored so that a second Ctrl-C cannot leave a server behind."""
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    base_dir = Path(tempfile.mkdtemp(prefix="sv-bench-"))
    server = EmbeddedPostgres(base_dir)
    try:
        cluster = server.start()
        yield Postgres(server, cluster, base_dir)
    finally:
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            shutil.rmtree(base_dir, ignore_errors=True)
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


async def postgres_version(pg: Postgres) -> str:
    conn = await asyncpg.connect(pg.superuser_dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
