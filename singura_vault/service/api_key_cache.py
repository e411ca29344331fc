"""Verified API keys, remembered per process, so most calls authenticate in memory.

A key is cached only after the database verified it (``api_key_lookup``), and only
while this process receives the database's change notifications for API keys
(migration 011): a revocation, an expiry change or a deletion drops the key from
every process's cache as soon as the change commits. Were a notification lost
(the LISTEN connection died), the cache is emptied and bypassed until the
subscription is live again, and no entry is trusted longer than the TTL anyway.
Expiry is checked against the cached expiry on every call. Entries hold the
key's HMAC digest (never the secret) and are compared in constant time.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from uuid import UUID

DEFAULT_TTL_S: Final = 10.0
DEFAULT_MAX_ENTRIES: Final = 10_000


@dataclass(frozen=True)
class CachedApiKey:
    digest: bytes
    organization_id: UUID | None
    roles: tuple[str, ...]
    expires_at: datetime | None
    cached_at: float

    def __repr__(self) -> str:  # the digest is not a secret, but has no place in logs
        return f"<CachedApiKey organization={self.organization_id} roles={self.roles}>"


class ApiKeyCache:
    """The verified API keys of this process (not data keys: those are cached by the
    key package, keys/manager.py), each by the key id it authenticates."""

    def __init__(
        self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[str, CachedApiKey] = OrderedDict()
        # When each key was last notified as changed: a lookup that started before
        # that must not be cached (it may have read the key before the change).
        self._changes: dict[str, float] = {}
        self._reset_at = time.monotonic()  # lookups begun before this are not cached
        self._live = False  # notifications flowing: only then is caching safe

    @property
    def live(self) -> bool:
        return self._live

    def get(self, key_id: str, digest: bytes) -> CachedApiKey | None:
        """The cached key if its digest matches, it is fresh and not expired."""
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        if (
            not self._live
            or time.monotonic() - entry.cached_at > self._ttl_s
            or (entry.expires_at is not None and entry.expires_at <= datetime.now(UTC))
        ):
            self._entries.pop(key_id, None)
            return None
        if not hmac.compare_digest(entry.digest, digest):
            return None  # a wrong secret for a known id: the database decides
        self._entries.move_to_end(key_id)
        return entry

    def put(
        self,
        key_id: str,
        digest: bytes,
        organization_id: UUID | None,
        roles: tuple[str, ...],
        expires_at: datetime | None,
        *,
        looked_up_at: float,
    ) -> None:
        """Remember a verified key (only while notifications flow). ``looked_up_at`` is
        when the lookup started: a change notified after that drops this entry."""
        if not self._live or self._ttl_s <= 0 or self._changed_since(key_id, looked_up_at):
            return
        self._entries[key_id] = CachedApiKey(
            digest, organization_id, roles, expires_at, cached_at=looked_up_at
        )
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget(self, key_id: str) -> None:
        """The key changed in the database (a notification): drop it."""
        self._entries.pop(key_id, None)
        self._changes[key_id] = time.monotonic()
        if len(self._changes) > self._max_entries:
            self._reset()

    def set_live(self, live: bool) -> None:
        """Notifications started (True) or stopped (False): either way, start empty."""
        self._live = live
        self._reset()

    def _reset(self) -> None:
        self._entries.clear()
        self._changes.clear()
        self._reset_at = time.monotonic()

    def _changed_since(self, key_id: str, moment: float) -> bool:
        if moment <= self._reset_at:
            return True
        changed = self._changes.get(key_id)
        return changed is not None and changed >= moment
