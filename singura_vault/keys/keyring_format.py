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

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from singura_vault.keys.errors import KeyConfigError
from singura_vault.keys.material import decode_key, encode_key
from singura_vault.private_files import (
    read_private_file,
    replace_private_file,
    write_new_private_file,
)

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
    data = read_private_file(path, f"keyring file {path}", _MAX_FILE_BYTES, error=KeyConfigError)
    document = _parse(data, path)
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
        error=KeyConfigError,
    )


def replace_keyring_file(path: Path, keys: Mapping[str, bytes], primary: str) -> None:
    """Rewrite an existing keyring file atomically (temporary file, fsync, rename), 0600.

    Used by rotation and retirement: readers see the old file or the new one,
    never a mix, and a crash leaves the old file intact.
    """
    replace_private_file(path, _keyring_document(keys, primary))


def _keyring_document(keys: Mapping[str, bytes], primary: str) -> bytes:
    if not all(is_valid_key_id(key_id) for key_id in keys) or primary not in keys:
        raise ValueError(f"invalid keyring: {KEY_ID_RULE}, and primary must be one of them")
    document = {
        "format": KEYRING_FORMAT,
        "primary": primary,
        "keys": {key_id: encode_key(key) for key_id, key in keys.items()},
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")
