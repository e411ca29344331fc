"""Typed reads of one environment variable each, and the checks of a value's form.

Each returns the variable's value (or the default when it is unset or blank) or raises
``ConfigError`` naming the variable and the form it accepts. A value that may carry a
secret (a database URL) is never echoed in the message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from singura_vault.errors import ConfigError

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def read_duration(
    env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0
) -> float:
    """Seconds from "90", "90s", "500ms", "5m", "12h" or "3d"."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    number, unit = raw, "s"
    for suffix in sorted(_DURATION_UNITS, key=len, reverse=True):
        if raw.endswith(suffix):
            number, unit = raw[: -len(suffix)].strip(), suffix
            break
    try:
        value = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a duration; use seconds or a unit, e.g. 90, 5m, 12h, 3d"
        ) from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum} seconds")
    return value


def read_path(env: Mapping[str, str], name: str) -> Path | None:
    """A path (``~`` expanded), or None when unset."""
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


def read_listen(env: Mapping[str, str], name: str) -> str | None:
    """A host:port address, or None when unset."""
    value = env.get(name, "").strip()
    if not value:
        return None
    check_listen(value, name)
    return value


def check_listen(listen: str, name: str = "SINGURA_LISTEN") -> None:
    """Refuse an address that is not host:port with a port from 0 to 65535."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"{name}={listen!r} is not host:port; "
            "use e.g. 127.0.0.1:50051, [::1]:50051 or 0.0.0.0:50051"
        )


def check_dsn(name: str, value: str) -> None:
    """Refuse a value that is not a PostgreSQL URL, without echoing it."""
    # Never echo the value: a DSN may carry a password.
    if not value.startswith(("postgres://", "postgresql://")):
        raise ConfigError(
            f"{name} must be a PostgreSQL URL such as "
            "postgresql://user:password@host:5432/dbname?sslmode=require"
        )


def read_int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """An integer of at least ``minimum``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum of {minimum}")
    return value


def read_float(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    """A finite number of at least ``minimum``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name}={raw!r} must be a finite number of at least {minimum}")
    return value


def read_bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    """1/true/yes/on or 0/false/no/off."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1 or 0")


def read_choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed`` (case-insensitive, returned in lower case)."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return raw
