"""``singura-vault audit export|verify|prune``: the audit trail from the command line.

``export`` and ``verify`` are clients of a running vault (its AuditService, with
an API key), so they are authorized and audited like any caller. ``prune`` is an
operator's action on the database itself (it deletes, so it is not exposed over
the API) and records itself as an ``audit.pruned`` event.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import json_format

from singura_vault.config import Settings
from singura_vault.errors import ConfigError
from singura_vault.proto.singura.vault.v1 import audit_pb2, audit_pb2_grpc

CSV_COLUMNS = (
    "id",
    "organization_id",
    "sequence",
    "occur_time",
    "actor",
    "action",
    "resource_type",
    "resource_id",
    "request_id",
    "outcome",
    "details",
    "prev_hash",
    "hash",
)
_DURATION = re.compile(r"^(\d+)([dhm])$")


def parse_duration(value: str) -> timedelta:
    """'365d', '12h' or '30m'."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration like 365d, 12h or 30m")
    amount, unit = int(match[1]), match[2]
    return {"d": timedelta(days=amount), "h": timedelta(hours=amount)}.get(
        unit, timedelta(minutes=amount)
    )


def parse_time(value: str) -> datetime:
    """An ISO 8601 time, or a duration meaning that long ago (e.g. 30d)."""
    try:
        return datetime.now(UTC) - parse_duration(value)
    except argparse.ArgumentTypeError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither an ISO 8601 time (2026-01-31T00:00:00Z) nor a duration (30d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_audit_parser(commands: Any, add_connection_arguments: Any) -> None:
    audit = commands.add_parser("audit", help="export, verify and prune the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)

    export = audit_commands.add_parser(
        "export", help="stream an organization's audit events to a file (jsonl or csv)"
    )
    _add_target(export)
    export.add_argument("--since", type=parse_time, help="ISO time or duration ago (e.g. 30d)")
    export.add_argument("--until", type=parse_time, help="ISO time or duration ago")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", type=Path, required=True, help="file to write (mode 0600)")
    add_connection_arguments(export)

    verify = audit_commands.add_parser("verify", help="recompute an audit hash chain")
    _add_target(verify)
    add_connection_arguments(verify)

    prune = audit_commands.add_parser(
        "prune", help="delete events older than a retention period (database access)"
    )
    prune.add_argument(
        "--older-than", type=parse_duration, required=True, help="e.g. 365d (at least 1d)"
    )


def _add_target(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--organization", metavar="ID", help="organization id")
    target.add_argument(
        "--system", action="store_true", help="the system trail (events of no organization)"
    )


def api_key(settings: Settings) -> str:
    """SINGURA_API_KEY, or the bootstrap admin key file in the data dir."""
    key = os.environ.get("SINGURA_API_KEY", "").strip()
    if key:
        return key
    path = settings.data_dir / "admin-api-key"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise ConfigError(
            f"no API key: set SINGURA_API_KEY, or run where {path} (the bootstrap admin key) "
            "is readable"
        ) from None


def run_export(args: argparse.Namespace, channel: grpc.Channel, key: str) -> int:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    audit_filter = audit_pb2.AuditFilter()
    if args.since:
        audit_filter.start_time.FromDatetime(args.since)
    if args.until:
        audit_filter.end_time.FromDatetime(args.until)
    request = audit_pb2.ExportAuditEventsRequest(
        organization_id=args.organization or "", filter=audit_filter
    )
    started = time.monotonic()
    count = 0
    with _private_output(args.output) as handle:
        writer = _writer(handle, args.format)
        stream = stub.ExportAuditEvents(request, metadata=(("authorization", f"Bearer {key}"),))
        for message in stream:
            for event in message.events:
                writer(event)
            count += len(message.events)
            _progress(count, started)
    elapsed = time.monotonic() - started
    print(f"\rexported {count:,} events to {args.output} in {elapsed:.1f} s", file=sys.stderr)
    return 0


def run_verify(args: argparse.Namespace, channel: grpc.Channel, key: str) -> int:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    result = stub.VerifyAuditChain(
        audit_pb2.VerifyAuditChainRequest(organization_id=args.organization or ""),
        metadata=(("authorization", f"Bearer {key}"),),
    )
    if result.ok:
        print(
            f"ok: {result.event_count} events verified "
            f"({result.pruned_count} pruned before them), head {result.head_hash}"
        )
        return 0
    where = f"event {result.first_bad_event_id}: " if result.first_bad_event_id else ""
    print(f"TAMPERED: {where}{result.problem}", file=sys.stderr)
    return 1


def _writer(handle: IO[str], fmt: str) -> Any:
    if fmt == "jsonl":

        def write_json(event: audit_pb2.AuditEvent) -> None:
            record = json_format.MessageToDict(event, preserving_proto_field_name=True)
            handle.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")

        return write_json
    rows = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
    rows.writeheader()

    def write_csv(event: audit_pb2.AuditEvent) -> None:
        record = json_format.MessageToDict(event, preserving_proto_field_name=True)
        record["details"] = json.dumps(record.get("details", {}), sort_keys=True)
        rows.writerow({column: record.get(column, "") for column in CSV_COLUMNS})

    return write_csv


@contextmanager
def _private_output(path: Path) -> Iterator[IO[str]]:
    """Write to a 0600 temporary file beside ``path``; rename into place on success only."""
    temporary = path.with_name(f".{path.name}.partial")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _progress(count: int, started: float) -> None:
    """A live counter on a terminal; otherwise a plain line every 10,000 events."""
    rate = count / max(time.monotonic() - started, 1e-6)
    if sys.stderr.isatty():
        print(f"\rexporting: {count:,} events ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    elif count % 10_000 < 1_000:
        print(f"exporting: {count:,} events ({rate:,.0f}/s)", file=sys.stderr, flush=True)
