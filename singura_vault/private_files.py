"""Owner-only files: the one place that reads and writes files holding secrets.

Keyrings, the audit signing key, the transit token, the development auth secret and
backup archives all go through here, so they get the same guarantees:

- **reading** refuses anything but a regular file that only its owner can access
  (checked on the open file, so the checked file is the file read), never hangs on a
  FIFO, and bounds the size;
- **writing** goes to a 0600 temporary file beside the target, fsynced, then linked
  into place (a hard link fails if the name is taken, unlike rename, so an existing
  secret is never replaced by accident) or renamed over it when replacing is the
  point; the directory entry is fsynced too.

Messages name the file and the fix; they never contain its content. Each caller
passes the exception type its layer raises (``error``), with the message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from singura_vault.errors import ConfigError

ErrorFactory = Callable[[str], Exception]

# Filesystems without hard links answer os.link with one of these.
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV)


def read_private_file(
    path: Path,
    where: str,
    max_bytes: int,
    *,
    error: ErrorFactory = ConfigError,
    must_be: str = "",
    owner_only: bool = True,
) -> bytes:
    """Read a secret-bearing file that must be a regular file only its owner can access.

    ``where`` names it in messages (e.g. "keyring file /etc/x"), ``must_be`` says what it
    should contain (e.g. "a PEM private key"); the content never appears in a message.
    ``owner_only=False`` skips the mode check, for files that are not secret
    (certificates) but are read with the same care.
    """
    expected = f"; it must be {must_be}" if must_be else ""
    try:
        # O_NONBLOCK: a FIFO in its place is refused below instead of hanging the start.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        missing = f"{where}: no such file{expected}" if must_be else f"{where} does not exist"
        raise error(missing) from None
    except PermissionError:
        chmod = " and run `chmod 600` on it" if owner_only else ""
        raise error(
            f"{where} cannot be opened by the vault's user; make that user its owner{chmod}"
        ) from None
    except OSError as exc:
        raise error(f"{where} cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        # fstat of the open file, not stat of the path: no window in which the
        # checked file and the read file differ.
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{where} is not a regular file{expected}")
        if owner_only and info.st_mode & 0o077:
            raise error(
                f"{where} is accessible to group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}` "
                "(in Kubernetes, mount the secret with defaultMode 0400)"
            )
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{where} is larger than {max_bytes} bytes{expected}")
    return data


def write_new_private_file(
    path: Path, data: bytes, exists_message: str, *, error: ErrorFactory = ConfigError
) -> None:
    """Create ``path`` (mode 0600) holding ``data``; ``error(exists_message)`` if it
    exists. Written and fsynced under a temporary name, then linked into place."""
    if path.exists():
        raise error(exists_message)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _written_temporary(path, data) as temporary:
        link_without_replacing(temporary, path, exists_message, error=error)
    fsync_directory(path.parent)


def replace_private_file(path: Path, data: bytes) -> None:
    """Rewrite ``path`` atomically (temporary file, fsync, rename), mode 0600: readers
    see the old file or the new one, never a mix, and a crash leaves the old one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _written_temporary(path, data) as temporary:
        os.replace(temporary, path)
    fsync_directory(path.parent)


def link_without_replacing(
    source: Path, target: Path, exists_message: str, *, error: ErrorFactory = ConfigError
) -> None:
    """Give ``source`` the name ``target``, unless that name is taken (then
    ``error(exists_message)``). ``source`` keeps its own name too."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise error(exists_message) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # A filesystem without hard links (some network shares): check, then rename.
        # Only a concurrent creator of the same name could slip into the gap.
        if target.exists():
            raise error(exists_message) from None
        os.rename(source, target)


def fsync_directory(directory: Path) -> None:
    """Make a new directory entry itself durable (not possible everywhere)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _written_temporary(path: Path, data: bytes) -> Iterator[Path]:
    """``data`` written and fsynced (0600) beside ``path``; removed after."""
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        yield temporary
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
