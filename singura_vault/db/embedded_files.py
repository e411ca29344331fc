"""The embedded server's data directory on disk: its path checks, its modes and owners,
and the lock that lets one starter at a time work in it (db/embedded.py).

This module must never change the mode or owner of anything outside the data directory
but the parents it creates itself, nor take over a directory that holds files that are
not the embedded server's or the vault's own private files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from singura_vault.db.embedded_errors import EmbeddedPostgresError
from singura_vault.db.embedded_os_user import ServerUser, may_search
from singura_vault.db.serve_lock import LOCK_NAME as SERVE_LOCK_NAME

# Linux sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH_BYTES = 107
# pg_ctl runs the postmaster through /bin/sh inside double quotes it does not escape.
_SHELL_UNSAFE = frozenset('"\\$`\n')
LOCK_NAME = ".embedded-postgres.lock"


def check_paths(base_dir: Path, run_dir: Path, port: int) -> None:
    """Refuse a data directory pg_ctl cannot quote, or whose socket path is too long."""
    text = str(base_dir)
    if _SHELL_UNSAFE.intersection(text):
        raise EmbeddedPostgresError(
            f"data directory {text!r} contains a character pg_ctl cannot quote "
            '(one of " \\ $ ` or a newline); choose another SINGURA_DATA_DIR'
        )
    socket_path = run_dir / f".s.PGSQL.{port}"
    size = len(os.fsencode(socket_path))
    if size > _MAX_SOCKET_PATH_BYTES:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL socket path {socket_path} is {size} bytes, over the "
            f"Unix socket limit of {_MAX_SOCKET_PATH_BYTES}; set SINGURA_DATA_DIR to a "
            "shorter path such as /var/lib/singura-vault"
        )


def check_parents_traversable(base_dir: Path, user: ServerUser) -> None:
    """Refuse a data directory the server's OS user could not reach."""
    # Only the parents that exist: the ones we create later are made 0755.
    for parent in reversed(base_dir.parents):
        try:
            st = parent.stat()
        except FileNotFoundError:
            return
        if not may_search(st, user):
            raise EmbeddedPostgresError(
                f"{parent} is mode {stat.S_IMODE(st.st_mode):04o}, so the embedded "
                f"PostgreSQL server user {user.name} cannot reach {base_dir}; set "
                "SINGURA_DATA_DIR to a directory under a traversable path such as "
                "/var/lib/singura-vault, or set DATABASE_URL to use an external PostgreSQL"
            )


def prepare_base_dir(base: Path, user: ServerUser | None, own: frozenset[str]) -> None:
    """Make the data directory, or take over one that is empty or already ours: owned by
    the vault's user, mode 0700 (0710 with the server's group when run as root).
    ``own``: the names of the embedded server's entries in it."""
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
    if current & ~mode & 0o077 and not _holds_only_ours(base, own):
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


def _holds_only_ours(base: Path, own: frozenset[str]) -> bool:
    """True if the directory holds only the embedded server's entries and private
    files of the vault's own user (the development keyring, auth secret, admin key
    and signing key that `serve` writes there before the server starts)."""
    ours = own | {LOCK_NAME, SERVE_LOCK_NAME}
    return all(
        entry.name in ours or entry.name.startswith("engine-") or _private_file(entry)
        for entry in os.scandir(base)
    )


def prepare_private_dir(path: Path, user: ServerUser | None) -> None:
    """Make ``path`` a 0700 directory of the server's OS user (of the vault's user
    when not run as root)."""
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
def starter_lock(base: Path) -> Iterator[None]:
    """One starter (or stopper) at a time per data directory, across processes."""
    fd = os.open(
        base / LOCK_NAME,
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


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
