"""A streaming hot standby of a :class:`~.postgres.Postgres` primary: a
``pg_basebackup -R`` copy (``EmbeddedStandby.start_as_standby_of``) in its own
temporary directory, stopped and deleted on exit, Ctrl-C included, and switched
between stopped, asynchronous and synchronous from inside the event loop; and a CPU
meter for a postmaster that also counts its backends that have exited."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncpg

from singura_vault.db.embedded_standby import EmbeddedStandby
from singura_vault.db.setup import DATABASE_NAME, SERVICE_ROLE

from .postgres import Postgres

StandbyMode = Literal["stopped", "async", "sync"]
"""``async`` and ``sync`` are also pg_stat_replication's sync_state values."""

STANDBY_NAME = "bench-standby"
# Restarting the standby and replaying what the primary wrote meanwhile takes seconds;
# a bound so that a broken setup fails the benchmark instead of hanging it.
_WAIT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Standby:
    """A hot standby of ``primary``, named ``name`` in its primary_conninfo."""

    primary: Postgres
    server: EmbeddedStandby
    name: str

    @property
    def service_dsn(self) -> str:
        """The vault's service login on the standby (its roles are the primary's)."""
        return self.server.cluster().dsn(SERVICE_ROLE, DATABASE_NAME)

    def postmaster_pid(self) -> int | None:
        return self.server.postmaster_pid()

    async def use(self, mode: StandbyMode) -> None:
        """Stop the standby, or (re)start it and let the primary treat it as
        asynchronous or synchronous (``synchronous_standby_names`` naming it,
        ``synchronous_commit`` left at ``on``); returns once it streams in that mode,
        caught up."""
        names = f'"{self.name}"' if mode == "sync" else ""
        primary = await asyncpg.connect(self.primary.superuser_dsn)
        try:
            # No primary may wait on a standby that is down: the setting goes first.
            await primary.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            if mode == "stopped":
                # Without a replication slot, keep the WAL the standby will ask for
                # when it starts again.
                await primary.execute("ALTER SYSTEM SET wal_keep_size = '4GB'")
            await primary.execute("SELECT pg_reload_conf()")
            if mode == "stopped":
                await asyncio.to_thread(self.server.stop)
                return
            await asyncio.to_thread(self.server.start)  # a running server is reused
            sql = (
                "SELECT sync_state FROM pg_stat_replication "
                "WHERE application_name = $1 AND state = 'streaming'"
            )
            # Replication state has no notification to wait on: it is polled.
            async with asyncio.timeout(_WAIT_TIMEOUT_S):
                while True:
                    if await primary.fetchval(sql, self.name) == mode:
                        return
                    await asyncio.sleep(0.05)
        finally:
            await primary.close()


@contextlib.contextmanager
def hot_standby(primary: Postgres, name: str = STANDBY_NAME) -> Iterator[Standby]:
    """Copy the running ``primary`` into a new temporary directory and start the copy
    as its asynchronous streaming standby; always stop it and delete the directory.
    Enter it inside :func:`.postgres.embedded_postgres` (which turns SIGTERM into
    KeyboardInterrupt outside the event loop): the standby goes first."""
    base_dir = Path(tempfile.mkdtemp(prefix="sv-bench-standby-"))
    standby = Standby(primary, EmbeddedStandby(base_dir), name)
    try:
        standby.server.start_as_standby_of(primary.server, application_name=name)
        yield standby
    finally:
        # While cleaning up, Ctrl-C and SIGTERM are ignored: a second one must not
        # leave the standby running.
        held = [signal.SIGINT, signal.SIGTERM]
        previous = [signal.signal(number, signal.SIG_IGN) for number in held]
        try:
            standby.server.stop()
        finally:
            shutil.rmtree(base_dir, ignore_errors=True)
            for number, handler in zip(held, previous, strict=True):
                signal.signal(number, handler)
