"""The keyring file: reading and validating it, and creating a new one atomically.

Format (JSON, one object)::

    {"format": "singura-vault-keyring/v1",
     "primary": "<key id>",
     "keys": {"<key id>": "<base64 of 32 random bytes>", ...}}

The file is a secret: it is refused unless only its owner can read and write
it, and it is created with mode 0600 under a temporary name, then linked into
place so that an existing keyring is never overwritten. Error messages name
the file, the field and the fix; they must never contain a key value.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from singura_vault.keys.errors import KeyConfigError
from singura_vault.keys.material import decode_key, encode_key

__all__ = ["KEYRING_FORMAT", "is_valid_key_id", "read_keyring_file", "write_new_keyring_file"]

KEYRING_FORMAT = "singura-vault-keyring/v1"
_MAX_FILE_BYTES = 1 << 20
# At most 40 characters: no encoded key (43, 44 or 64 characters) is a valid
# id, so an id can be named in an error even if someone swapped id and value.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
KEY_ID_RULE = (
    "key ids are 1 to 40 letters, digits, '.', '_' or '-', starting with a letter or digit"
)
_FIELDS = frozenset({"format", "primary", "keys"})


def is_valid_key_id(key_id: object) -> bool:
    """Return whether ``key_id`` is a well-formed (and therefore printable) root key id."""
    return isinstance(key_id, str) and _KEY_ID.fullmatch(key_id) is not None


def read_keyring_file(path: Path) -> tuple[dict[str, bytes], str]:
    """Return ``({key id: key bytes}, primary id)`` from a keyring file, or raise KeyConfigError."""
    document = _parse(read_private_file(path, f"keyring file {path}", _MAX_FILE_BYTES), path)
    keys_field = document["keys"]
    if not isinstance(keys_field, dict) or not keys_field:
        raise KeyConfigError(f'keyring file {path}: "keys" must be a non-empty object')
    keys: dict[str, bytes] = {}
    for key_id, text in keys_field.items():
        if not is_valid_key_id(key_id):
            raise KeyConfigError(
                f'keyring file {path}: a key id in "keys" is invalid; {KEY_ID_RULE}'
            )
        if not isinstance(text, str):
            raise KeyConfigError(f"keyring file {path}: key {key_id!r} must be a string")
        keys[key_id] = decode_key(text, setting=f"key {key_id!r} in keyring file {path}")
    primary = document["primary"]
    if not is_valid_key_id(primary):
        raise KeyConfigError(f'keyring file {path}: "primary" is not a valid key id; {KEY_ID_RULE}')
    if primary not in keys:
        raise KeyConfigError(
            f'keyring file {path}: "primary" names {primary!r}, which is not in "keys"; '
            f'set "primary" to one of: {", ".join(keys)}'
        )
    return keys, primary


def read_private_file(path: Path, where: str, max_bytes: int) -> bytes:
    """Read a secret-bearing file that must be a regular file only its owner can access.

    ``where`` names it in messages (e.g. "keyring file /etc/x"); its content never
    appears in one.
    """
    try:
        # O_NONBLOCK: a FIFO in its place is refused below instead of hanging the start.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyConfigError(f"{where} does not exist") from None
    except PermissionError:
        raise KeyConfigError(
            f"{where} cannot be opened by the vault's user; "
            "make that user its owner and run `chmod 600` on it"
        ) from None
    except OSError as exc:
        raise KeyConfigError(f"{where} cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        # fstat of the open file, not stat of the path: no window in which the
        # checked file and the read file differ.
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KeyConfigError(f"{where} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyConfigError(
                f"{where} is accessible to group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}` "
                "(in Kubernetes, mount the secret with defaultMode 0400)"
            )
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise KeyConfigError(f"{where} is larger than {max_bytes} bytes")
    return data


class _DuplicateFieldError(Exception):
    """A JSON object in the keyring file repeats a name (json keeps the last one silently)."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateFieldError
        result[name] = value
    return result


def _parse(data: bytes, path: Path) -> dict[str, Any]:
    expected = (
        f'a JSON object like {{"format": "{KEYRING_FORMAT}", "primary": ..., "keys": {{...}}}}'
    )
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except UnicodeDecodeError:
        raise KeyConfigError(
            f"keyring file {path} is not UTF-8 text; it must be {expected}"
        ) from None
    except json.JSONDecodeError as exc:
        # Position only: the exception's own text is safe, but its .doc is the file.
        raise KeyConfigError(
            f"keyring file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            f"it must be {expected}"
        ) from None
    except _DuplicateFieldError:
        raise KeyConfigError(
            f"keyring file {path} names a field or key id twice; each must appear once"
        ) from None
    if not isinstance(document, dict):
        raise KeyConfigError(f"keyring file {path} must be {expected}")
    unexpected = set(document) - _FIELDS
    if unexpected or document.get("format") != KEYRING_FORMAT or not set(document) >= _FIELDS:
        raise KeyConfigError(
            f'keyring file {path} must have exactly the fields "format" (= "{KEYRING_FORMAT}"), '
            '"primary" and "keys"'
        )
    return document


def write_new_keyring_file(path: Path, keys: Mapping[str, bytes], primary: str) -> None:
    """Create ``path`` (mode 0600) holding ``keys``; KeyConfigError if it already exists.

    The content is written and fsynced under a temporary name in the same
    directory, then hard-linked to ``path``: unlike rename, link fails if the
    target exists, so a keyring that protects stored data is never replaced,
    and no reader ever sees a half-written file.
    """
    write_new_private_file(
        path,
        _keyring_document(keys, primary),
        f"keyring file {path} already exists; refusing to overwrite it "
        "(its keys may be the only way to read stored credentials)",
    )


def write_new_private_file(path: Path, data: bytes, exists_message: str) -> None:
    """Create ``path`` (mode 0600) holding ``data``; KeyConfigError(exists_message) if it
    exists. Written and fsynced under a temporary name, then linked into place."""
    if path.exists():
        raise KeyConfigError(exists_message)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _written_temporary(path, data) as temporary:
        _link_without_replacing(temporary, path, exists_message)
    _fsync_directory(path.parent)


def replace_keyring_file(path: Path, keys: Mapping[str, bytes], primary: str) -> None:
    """Rewrite an existing keyring file atomically (temporary file, fsync, rename), 0600.

    Used by rotation and retirement: readers see the old file or the new one,
    never a mix, and a crash leaves the old file intact.
    """
    with _written_temporary(path, _keyring_document(keys, primary)) as temporary:
        os.replace(temporary, path)
    _fsync_directory(path.parent)


def _keyring_document(keys: Mapping[str, bytes], primary: str) -> bytes:
    if not all(is_valid_key_id(key_id) for key_id in keys) or primary not in keys:
        raise ValueError(f"invalid keyring: {KEY_ID_RULE}, and primary must be one of them")
    document = {
        "format": KEYRING_FORMAT,
        "primary": primary,
        "keys": {key_id: encode_key(key) for key_id, key in keys.items()},
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


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


def _link_without_replacing(source: Path, target: Path, exists_message: str) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        raise KeyConfigError(exists_message) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
            raise
        # A filesystem without hard links: check, then rename. Only a
        # concurrent creator of the same file could slip into the gap.
        if target.exists():
            raise KeyConfigError(exists_message) from None
        os.rename(source, target)


def _fsync_directory(directory: Path) -> None:
    # Makes the new directory entry itself durable; not possible everywhere.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
