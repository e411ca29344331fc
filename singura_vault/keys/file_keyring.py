"""A keyring file that can be rotated while vaults run.

``FileKeyring`` wraps a :class:`LocalKeyring` read from SINGURA_KEYRING_FILE (or
the development keyring). ``rotate()`` adds a fresh key and makes it primary,
``retire()`` removes a non-primary key; both rewrite the file atomically (0600).
Other vault processes learn about a new key lazily: an unwrap that meets an
unknown root key id reloads the file once before giving up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from singura_vault.keys.errors import KeyConfigError
from singura_vault.keys.holder import KeyHolder
from singura_vault.keys.keyring import LocalKeyring
from singura_vault.keys.keyring_format import read_keyring_file, replace_keyring_file
from singura_vault.keys.material import derive_key_id, generate_key_bytes
from singura_vault.keys.records import WrappedDataKey

__all__ = ["FileKeyring"]


class FileKeyring(KeyHolder):
    """KeyProvider over a keyring file, with rotation and retirement.

    A key holder like the keyring it wraps: it cannot be pickled or copied, and nothing
    outside it can change its attributes. Only :meth:`reload` replaces the keyring
    it holds, after the file changed."""

    __slots__ = ("_keyring", "_lock", "_mtime_ns", "_path")
    _path: Path
    _keyring: LocalKeyring
    _mtime_ns: int
    _lock: asyncio.Lock

    def __init__(self, path: Path) -> None:
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_lock", asyncio.Lock())
        self.reload()

    def __repr__(self) -> str:
        return f"<FileKeyring {self._path}: {self._keyring.description()}>"

    def primary_key_id(self) -> str:
        return self._keyring.primary_key_id()

    def key_ids(self) -> tuple[str, ...]:
        return self._keyring.key_ids()

    def description(self) -> str:
        return f"{self._keyring.description()} from {self._path}"

    async def wrap(self, plaintext_key: bytes, associated_data: bytes) -> WrappedDataKey:
        # Wrapping is rare (a new data key); a stat makes sure a rotation done by
        # another process sharing this file is followed: new keys use its primary.
        if self._path.stat().st_mtime_ns != self._mtime_ns:
            self.reload()
        return await self._keyring.wrap(plaintext_key, associated_data)

    async def unwrap(self, wrapped: WrappedDataKey, associated_data: bytes) -> bytes:
        try:
            return await self._keyring.unwrap(wrapped, associated_data)
        except KeyConfigError:
            # Another process may have rotated: read the file again, once.
            self.reload()
            return await self._keyring.unwrap(wrapped, associated_data)

    def reload(self) -> None:
        """Read the file again (another process rotated or retired a key)."""
        object.__setattr__(self, "_mtime_ns", self._path.stat().st_mtime_ns)
        object.__setattr__(self, "_keyring", LocalKeyring.from_file(self._path))

    async def rotate(self) -> str:
        """Add a fresh root key to the file and make it primary; returns its id."""
        async with self._lock:
            keys, _ = read_keyring_file(self._path)
            key = generate_key_bytes()
            key_id = derive_key_id(key, f"k{len(keys) + 1}")
            replace_keyring_file(self._path, {**keys, key_id: key}, key_id)
            self.reload()
        return key_id

    async def retire(self, key_id: str) -> None:
        """Remove a root key from the file (the caller checked nothing still needs it)."""
        async with self._lock:
            keys, primary = read_keyring_file(self._path)
            if key_id == primary:
                raise KeyConfigError(
                    f"root key {key_id} is the primary key; rotate first, then retire it"
                )
            if key_id not in keys:
                raise KeyConfigError(f"root key {key_id} is not in the keyring")
            del keys[key_id]
            replace_keyring_file(self._path, keys, primary)
            self.reload()
