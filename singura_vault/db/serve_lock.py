"""One ``serve`` per data directory, and who owns its embedded PostgreSQL.

``serve`` holds an exclusive ``flock`` on ``SINGURA_DATA_DIR/serve.lock`` for as long
as it runs (the parent of ``serve --workers N`` holds it for its workers), and writes
its pid and listen address into the file. A second ``serve`` on the same data directory
finds the lock taken and refuses before it touches anything -- it used to reuse the
running vault's PostgreSQL, fail to bind, and stop that PostgreSQL on its way out.
The kernel drops the lock when the holder dies, however it dies, so a lock is never
stale; the file itself is left in place (deleting it would let two starters lock two
different files of the same name).

Ownership of the embedded PostgreSQL follows the lock: the ``serve`` that holds it stops
the server at shutdown, whoever started it (a server left running by a killed
``serve`` is adopted, not leaked). A one-off command (``backup``, ``migrate``,
``audit prune``...) stops a server only if it started it *and* no ``serve`` holds the
lock by then (:func:`serving`).

This module must never block: a taken lock is an answer, not something to wait for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from singura_vault.errors import ConfigError

LOCK_NAME = "serve.lock"


@dataclass(frozen=True)
class Holder:
    """What the serving process wrote about itself (either may be unknown)."""

    pid: int | None
    listen: str | None

    def describe(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "an unknown pid"
        listen = f"listening on {self.listen}" if self.listen else "address not recorded yet"
        return f"{pid}, {listen}"


class ServeLock:
    """The held lock of one data directory; :meth:`release` (or process exit) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self._path = path

    @classmethod
    def acquire(cls, data_dir: Path, listen: str) -> ServeLock:
        """Take the data directory for this process, or raise ConfigError naming the
        process that serves it."""
        path = data_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(
                f"SINGURA_DATA_DIR={data_dir} is already served by another singura-vault "
                f"serve ({holder.describe()}); stop that one first (SIGTERM), or give this "
                "one its own SINGURA_DATA_DIR (and SINGURA_LISTEN). Commands such as backup, "
                "migrate status and keys admin-key work beside a running serve."
            ) from None
        lock = cls(fd, path)
        lock.record(listen)
        return lock

    def record(self, listen: str) -> None:
        """Write this process's pid and address (the bound one, once it is known)."""
        if self._fd is None:
            return
        body = json.dumps({"pid": os.getpid(), "listen": listen}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, body, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor drops the flock


def serving(data_dir: Path) -> Holder | None:
    """The ``serve`` holding ``data_dir``'s lock, or None when none runs (a probe that
    takes the lock for an instant; never creates the file)."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> Holder:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict):
        record = {}
    pid = record.get("pid")
    listen = record.get("listen")
    return Holder(
        pid if isinstance(pid, int) else None, listen if isinstance(listen, str) else None
    )
