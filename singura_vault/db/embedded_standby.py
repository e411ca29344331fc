"""A hot standby of an embedded primary, for trying replication and failover on one
machine -- the replication tests and bench/replication.py use it.

``EmbeddedStandby`` is an :class:`EmbeddedPostgres` whose data directory starts as a
``pg_basebackup -R`` copy of a running primary, so it streams from it; ``promote``
makes it a primary. Production standbys are the operator's (Patroni, a managed
service): see docs/high-availability.md.
"""

from __future__ import annotations

import os
import shutil

from singura_vault.db.embedded import START_TIMEOUT_S, EmbeddedCluster, EmbeddedPostgres
from singura_vault.db.embedded_errors import EmbeddedPostgresError, tool_output
from singura_vault.db.embedded_files import prepare_private_dir, starter_lock


class EmbeddedStandby(EmbeddedPostgres):
    """An embedded server that begins life as a streaming copy of another."""

    def start_as_standby_of(
        self, primary: EmbeddedPostgres, *, application_name: str
    ) -> EmbeddedCluster:
        """Make this new data directory a streaming hot standby of the running
        ``primary`` (``pg_basebackup -R``: a copy plus primary_conninfo naming
        ``application_name``, which synchronous_standby_names can require), then start
        it."""
        user = self._prepare()
        with starter_lock(self._base_dir):
            if (self._pgdata / "PG_VERSION").is_file():
                raise EmbeddedPostgresError(f"{self._pgdata} already holds a cluster")
            bin_dir = self._engine_bin_dir(user, install=True)
            source = primary.cluster()
            # Copied into a side directory and renamed into place, as initdb is.
            staging = self._pgdata.with_name(f"{self._pgdata.name}.initdb")
            if staging.exists():
                shutil.rmtree(staging)
            prepare_private_dir(staging, user)
            conninfo = (
                f"host={source.socket_dir} port={source.port} user={source.superuser} "
                f"application_name={application_name}"
            )
            copy: list[str | os.PathLike[str]] = [
                bin_dir / "pg_basebackup",
                "-D",
                staging,
                "-R",
                "-X",
                "stream",
            ]
            result = self._run([*copy, "-c", "fast", "-d", conninfo], user, timeout=600)
            if result.returncode != 0:
                raise EmbeddedPostgresError(
                    f"pg_basebackup from {primary.base_dir} failed (exit {result.returncode}): "
                    f"{tool_output(result)}"
                )
            staging.rename(self._pgdata)
        return self.start()

    def promote(self) -> None:
        """Promote this standby to a primary (``pg_ctl promote``), waiting until it
        accepts writes."""
        user = self._server_user(create=False) if self._as_root else None
        bin_dir = self._engine_bin_dir(user, install=False)
        command: list[str | os.PathLike[str]] = [
            bin_dir / "pg_ctl",
            "-D",
            self._pgdata,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
        ]
        result = self._run([*command, "promote"], user, timeout=START_TIMEOUT_S + 30)
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"pg_ctl promote failed for {self._pgdata} (exit {result.returncode}): "
                f"{tool_output(result)}"
            )
