"""What the pages compute from what the vault returns: which connections need
attention first, how granted scopes drift from requested ones, and how values read.

Pure functions of protobuf messages (no I/O), so they are tested without a vault.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb

# Lower is more urgent. The order an operator would act in: a connection the platform
# refuses, then one whose grant lapsed, then one whose refreshes keep failing (it works
# until its token expires), then one missing scopes it asked for (features fail), then
# one holding more than was asked for; paused and revoked ones after everything alive.
_STATUS_RANK = {
    cpb.CONNECTION_STATUS_ERROR: 0,
    cpb.CONNECTION_STATUS_EXPIRED: 1,
}
RANK_REFRESH_FAILING = 2
RANK_SCOPES_MISSING = 3
RANK_SCOPES_EXTRA = 4
RANK_REVOKED = 5
RANK_INACTIVE = 6
RANK_OK = 9
FAILING_RANKS = (0, 1, RANK_REFRESH_FAILING)


@dataclass(frozen=True)
class ConnectionRow:
    """One connection as the connections page shows it."""

    organization_id: str
    organization_name: str
    connection: cpb.Connection
    rank: int
    attention: tuple[str, ...]
    missing_scopes: tuple[str, ...]
    extra_scopes: tuple[str, ...]

    @property
    def failing(self) -> bool:
        return self.rank in FAILING_RANKS


def scope_drift(connection: cpb.Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(requested but not granted, granted but not requested), as the API's ScopeDrift
    compares them: as sets, and never for a connection with no requested scopes."""
    requested = set(connection.requested_scopes)
    if not requested:
        return (), ()
    granted = set(connection.permissions_granted)
    return tuple(sorted(requested - granted)), tuple(sorted(granted - requested))


def connection_row(
    organization_id: str, organization_name: str, c: cpb.Connection
) -> ConnectionRow:
    missing, extra = scope_drift(c)
    attention: list[str] = []
    if c.status == cpb.CONNECTION_STATUS_ERROR:
        attention.append("the platform refuses it")
    if c.status == cpb.CONNECTION_STATUS_EXPIRED:
        attention.append("its grant expired")
    if c.refresh_failure_count > 0:
        failures = c.refresh_failure_count
        attention.append(f"{failures} failed refresh{'' if failures == 1 else 'es'}")
    if missing:
        attention.append("scopes missing")
    if extra:
        attention.append("extra scopes")
    ranks = [_STATUS_RANK[c.status]] if c.status in _STATUS_RANK else []
    if c.refresh_failure_count > 0:
        ranks.append(RANK_REFRESH_FAILING)
    if missing:
        ranks.append(RANK_SCOPES_MISSING)
    if extra:
        ranks.append(RANK_SCOPES_EXTRA)
    if c.status == cpb.CONNECTION_STATUS_REVOKED:
        ranks.append(RANK_REVOKED)
    if c.status == cpb.CONNECTION_STATUS_INACTIVE:
        ranks.append(RANK_INACTIVE)
    return ConnectionRow(
        organization_id=organization_id,
        organization_name=organization_name,
        connection=c,
        rank=min(ranks, default=RANK_OK),
        attention=tuple(attention),
        missing_scopes=missing,
        extra_scopes=extra,
    )


def attention_first(rows: list[ConnectionRow]) -> list[ConnectionRow]:
    """Most urgent first; among equals, the most failed refreshes, then by name."""
    return sorted(
        rows,
        key=lambda r: (
            r.rank,
            -r.connection.refresh_failure_count,
            r.organization_name,
            r.connection.display_name,
            r.connection.id,
        ),
    )


def enum_label(name: str, prefix: str) -> str:
    """ "CONNECTION_STATUS_ERROR" -> "error"; "PLATFORM_GOOGLE_WORKSPACE" -> "google workspace"."""
    return name.removeprefix(prefix).replace("_", " ").lower()


def when(ts: Timestamp | None) -> str:
    """A protobuf time as "2026-01-02 03:04:05 UTC", or "" when unset."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return ""
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: Timestamp | None) -> str:
    """The same time for a <time datetime="..."> attribute."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return ""
    return ts.ToDatetime(tzinfo=UTC).isoformat()


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp
