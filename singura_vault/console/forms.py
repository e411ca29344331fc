"""What the console reads from a request: query and form values, checked and turned into
what the API takes (enum numbers, UTC times), and the limits a posted form must keep.

A value the console cannot use raises ``BadInputError``, which the application shows on
a 400 page with the message; it never reaches the vault.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from starlette.datastructures import FormData

# What request.form() accepts: no file uploads, few and small fields.
FORM_LIMITS: dict[str, int] = {"max_files": 0, "max_fields": 50, "max_part_size": 64 * 1024}


class BadInputError(Exception):
    """A query or form value the console cannot use; shown on a 400 page."""


def enum_param(value: str, values: Iterable[tuple[str, int]], prefix: str, what: str) -> int:
    """A ?status=error style value as the enum's number; "" is 0 (any)."""
    if not value:
        return 0
    for name, number in values:
        if number != 0 and name == prefix + value.upper():
            return number
    raise BadInputError(f"{what} {value!r} is not one the console knows")


def utc(value: str, what: str) -> datetime | None:
    """A <input type=datetime-local> value, read as UTC; "" is None."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadInputError(f"{what} {value!r} is not a time like 2026-01-31T09:30") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def form_text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""
