"""``singura-vault audit export``: stream a chain's events (and, with --checkpoints, its
signed checkpoints) from a running vault into files.

The files are written as 0600 temporary files beside their names and given the names
only when the export succeeded, never over an existing file unless --force
(``refuse_existing_outputs`` checks that before the vault is asked for anything).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from singura_vault.cli._common import counted
from singura_vault.errors import ConfigError
from singura_vault.private_files import link_without_replacing
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
    auth = (("authorization", f"Bearer {key}"),)
    if args.checkpoints is not None:
        if args.until:
            raise ConfigError(
                "--checkpoints needs the chain up to now: leave out --until (a checkpoint "
                "past the export's end would read as events removed from the end)"
            )
        # Checkpoints first: the events exported after them reach at least as far.
        checkpoints = _export_checkpoints(
            stub, args.organization or "", args.checkpoints, auth, force=args.force
        )
        print(f"wrote {checkpoints:,} checkpoints to {args.checkpoints}", file=sys.stderr)
    started = time.monotonic()
    count = 0
    with _private_output(args.output, force=args.force) as handle:
        writer = _writer(handle, args.format)
        stream = stub.ExportAuditEvents(request, metadata=(("authorization", f"Bearer {key}"),))
        for message in stream:
            for event in message.events:
                writer(event)
            count += len(message.events)
            _progress(count, started)
    elapsed = time.monotonic() - started
    print(
        f"\rexported {counted(count, 'event')} to {args.output} in {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 0


def refuse_existing_outputs(args: argparse.Namespace) -> None:
    """`audit export` never replaces a file unless --force, as `backup` never does:
    checked before the vault is asked for anything."""
    if args.force:
        return
    for path in (args.output, args.checkpoints):
        if path is not None and (path.exists() or path.is_symlink()):
            raise ConfigError(
                f"{path} already exists; choose a new file name, or add --force to replace it"
            )


def _export_checkpoints(
    stub: audit_pb2_grpc.AuditServiceStub, organization: str, path: Path, auth: Any, *, force: bool
) -> int:
    count = 0
    with _private_output(path, force=force) as handle:
        write = _writer(handle, "jsonl")
        request = audit_pb2.ExportAuditCheckpointsRequest(organization_id=organization)
        for message in stub.ExportAuditCheckpoints(request, metadata=auth):
            for checkpoint in message.checkpoints:
                write(checkpoint)
            count += len(message.checkpoints)
    return count


def _writer(handle: IO[str], fmt: str) -> Any:
    if fmt == "jsonl":

        def write_json(event: Message) -> None:  # an event, or a checkpoint
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
def _private_output(path: Path, *, force: bool) -> Iterator[IO[str]]:
    """Write to a 0600 temporary file beside ``path``; give it the name on success only,
    never over an existing file unless ``force``."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        if force:
            os.replace(temporary, path)
        else:  # a file that appeared meanwhile is not replaced either
            link_without_replacing(
                temporary,
                path,
                f"{path} already exists; choose a new file name, or add --force to replace it",
            )
    finally:
        temporary.unlink(missing_ok=True)


def _progress(count: int, started: float) -> None:
    """A live counter on a terminal; otherwise a plain line every 10,000 events."""
    rate = count / max(time.monotonic() - started, 1e-6)
    if sys.stderr.isatty():
        print(f"\rexporting: {count:,} events ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    elif count % 10_000 < 1_000:
        print(f"exporting: {count:,} events ({rate:,.0f}/s)", file=sys.stderr, flush=True)
