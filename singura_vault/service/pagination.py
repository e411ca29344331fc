"""Opaque page tokens for keyset pagination (AIP-158).

A token encodes the sort key of the last row served and a fingerprint of the
filters it was issued for, so a token replayed with other filters is refused
instead of silently skipping rows. Tokens are not secret (they hold a timestamp
and an id the caller already saw). Before a token leaves the vault the server
interceptor seals it with a MAC bound to the method and the caller's key
(``service/page_tokens.py``), so what arrives here was issued by the vault, unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from singura_vault.domain.paging import PageCursor
from singura_vault.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(value: int) -> int:
    """Normalize page_size: 0 means the default, large values are capped."""
    if value < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def next_page(
    rows: Sequence[T], size: int, filters: Sequence[str], key: Callable[[T], PageCursor]
) -> tuple[tuple[T, ...], str]:
    """Cut a page from rows fetched with LIMIT size + 1; return it and the next token."""
    items = tuple(rows[:size])
    if len(rows) <= size:
        return items, ""
    return items, encode_token(key(items[-1]), filters)


def encode_token(cursor: PageCursor, filters: Sequence[str]) -> str:
    return _encode({"t": cursor.at.isoformat(), "i": str(cursor.id)}, filters)


def decode_token(token: str, filters: Sequence[str]) -> PageCursor | None:
    """The cursor in a page token ('' means the first page)."""
    payload = _decode(token, filters)
    if payload is None:
        return None
    try:
        return PageCursor(at=datetime.fromisoformat(payload["t"]), id=UUID(payload["i"]))
    except (ValueError, KeyError, TypeError):
        raise _not_ours() from None


def encode_sequence_token(sequence: int, filters: Sequence[str]) -> str:
    """A token for listings ordered by a chain position rather than (time, id)."""
    return _encode({"s": sequence}, filters)


def decode_sequence_token(token: str, filters: Sequence[str]) -> int | None:
    payload = _decode(token, filters)
    if payload is None:
        return None
    try:
        return int(payload["s"])
    except (ValueError, KeyError, TypeError):
        raise _not_ours() from None


def _encode(payload: dict[str, Any], filters: Sequence[str]) -> str:
    raw = json.dumps({**payload, "f": _fingerprint(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str, filters: Sequence[str]) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        fingerprint = payload["f"]
    except (ValueError, KeyError, TypeError):
        raise _not_ours() from None
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument(
            "page_token", "was issued for different filters; repeat the original filters"
        )
    if not isinstance(payload, dict):
        raise _not_ours()
    return payload


def _not_ours() -> InvalidArgument:
    return InvalidArgument(
        "page_token", "is not a token this service issued; start again with an empty token"
    )


def _fingerprint(filters: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(filters).encode()).hexdigest()[:16]
