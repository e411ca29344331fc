"""Input checks shared by the use cases. Each failure names the field it is about."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from singura_vault.errors import InvalidArgument

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# A DNS name: labels of letters, digits and inner hyphens, at least one dot.
DOMAIN_PATTERN = re.compile(
    r"^(?=.{3,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$"
)
MAX_JSON_BYTES = 64 * 1024


def parse_uuid(field: str, value: str) -> UUID:
    """A required UUID field."""
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        return UUID(value)
    except ValueError:
        raise InvalidArgument(field, f"{value[:64]!r} is not a UUID") from None


def parse_optional_uuid(field: str, value: str) -> UUID | None:
    """An optional UUID field ('' means absent)."""
    return parse_uuid(field, value) if value else None


def text(field: str, value: str, *, min_length: int, max_length: int) -> str:
    """A text field, trimmed, with a length range."""
    value = value.strip()
    if len(value) < min_length:
        raise InvalidArgument(field, "is required" if min_length == 1 else "is too short")
    if len(value) > max_length:
        raise InvalidArgument(field, f"is longer than {max_length} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def slug(value: str) -> str:
    if not SLUG_PATTERN.fullmatch(value):
        raise InvalidArgument(
            "organization.slug",
            f"{value[:80]!r} must be 3-63 characters of lowercase letters, digits and "
            "hyphens, starting and ending with a letter or digit",
        )
    return value


def domain(value: str) -> str:
    normalized = value.strip().lower().rstrip(".")
    if not DOMAIN_PATTERN.fullmatch(normalized):
        raise InvalidArgument(
            "organization.domain", f"{value[:80]!r} is not a domain name like acme.com"
        )
    return normalized


def json_object(field: str, value: dict[str, Any]) -> dict[str, Any]:
    """A JSON object field with a size cap (settings, metadata)."""
    if len(json.dumps(value, separators=(",", ":"))) > MAX_JSON_BYTES:
        raise InvalidArgument(field, f"is larger than {MAX_JSON_BYTES} bytes as JSON")
    return value


def string_list(
    field: str, values: Iterable[str], *, max_items: int, max_length: int
) -> tuple[str, ...]:
    items = tuple(v.strip() for v in values)
    if len(items) > max_items:
        raise InvalidArgument(field, f"has more than {max_items} entries")
    for item in items:
        if not item or len(item) > max_length:
            raise InvalidArgument(field, f"entries must be 1-{max_length} characters")
    return items


def update_mask(paths: Sequence[str], allowed: Sequence[str]) -> frozenset[str]:
    """The update mask: required, and only naming updatable fields."""
    if not paths:
        raise InvalidArgument(
            "update_mask", f"is required; name the fields to change: {', '.join(allowed)}"
        )
    unknown = sorted(set(paths) - set(allowed))
    if unknown:
        raise InvalidArgument(
            "update_mask",
            f"cannot update {', '.join(unknown)}; updatable fields are {', '.join(allowed)}",
        )
    return frozenset(paths)


def etag_for(version: int) -> str:
    """The opaque etag of a row version."""
    return f'"{version}"'


def parse_etag(value: str) -> int | None:
    """The row version an etag stands for; '' means "no concurrency check"."""
    if not value:
        return None
    raw = value.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"' and raw[1:-1].isdigit():
        return int(raw[1:-1])
    raise InvalidArgument("etag", "is malformed; send back the etag of a previous read unchanged")
