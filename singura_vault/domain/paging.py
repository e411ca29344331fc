"""Keyset pagination: the position a page token carries, shared by every list.

Plain frozen dataclasses and enums: no protobuf, no asyncpg.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True)
class PageCursor:
    """Keyset position: the (time, id) sort key of the last row of the previous page."""

    at: datetime
    id: UUID
