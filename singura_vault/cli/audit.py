"""``singura-vault audit export|verify|public-key|prune|rotate-signing-key``: the audit
trail from the CLI.

``export``, ``verify`` and ``public-key`` are clients of a running vault (its
AuditService, with an API key), so they are authorized and audited like any caller;
``verify --export`` checks files offline and needs neither vault nor database, and
``public-key --key-file`` reads a key file. ``prune`` and ``rotate-signing-key`` are
operators' actions on the database itself (one deletes, the other changes which key
the vault must sign with, so neither is exposed over the API); each records itself
as an audit event (``audit.pruned``, ``audit.signing_key_rotated``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from singura_vault.cli._common import add_connection_arguments, call_vault, counted, run_async
from singura_vault.composition import Components
from singura_vault.config import Settings
from singura_vault.db import setup
from singura_vault.db.pool import Database
from singura_vault.errors import ConfigError, FailedPrecondition, VaultError
from singura_vault.private_files import link_without_replacing
from singura_vault.proto.singura.vault.v1 import audit_pb2, audit_pb2_grpc
from singura_vault.service import audit_checkpoints, audit_offline

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


def add_parsers(commands: Any) -> None:
    audit = commands.add_parser("audit", help="export, verify and prune the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)

    export = audit_commands.add_parser(
        "export",
        help="stream an organization's audit events to a file (jsonl or csv)",
        description=(
            "Write the audit trail of --organization (or the system trail) to --output, "
            "mode 0600, as JSON lines or CSV; with --checkpoints, also its signed "
            "checkpoints, for `audit verify`. An existing file is refused unless --force. "
            "Exit codes: 0 exported, 1 the vault answered with an error, 2 no API key "
            "found, an existing output file or bad configuration."
        ),
    )
    _add_target(export)
    export.add_argument("--since", type=parse_time, help="ISO time or duration ago (e.g. 30d)")
    export.add_argument("--until", type=parse_time, help="ISO time or duration ago")
    export.add_argument(
        "--format",
        choices=("jsonl", "csv"),
        default="jsonl",
        help="jsonl (one event per line, what `audit verify --export` reads) or csv "
        "(default %(default)s)",
    )
    export.add_argument(
        "--output",
        type=Path,
        required=True,
        help="file to write (mode 0600); an existing file is refused unless --force",
    )
    export.add_argument(
        "--checkpoints",
        type=Path,
        metavar="FILE",
        help="also write the chain's signed checkpoints (jsonl, mode 0600), for "
        "`audit verify --export`; an existing file is refused unless --force",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace --output and --checkpoints if they exist (only once the export succeeded)",
    )
    add_connection_arguments(export)

    verify = audit_commands.add_parser(
        "verify",
        help="recompute an audit hash chain (in the vault, or offline from an export)",
        description=(
            "With --organization or --system: the running vault recomputes the chain. "
            "With --export, --checkpoints and --public-key: verify an exported chain "
            "against its signed checkpoints on this machine, with no vault or database. "
            "Exit codes: 0 verified, 1 TAMPERED (what does not hold), 2 a file that is not "
            "what was expected (an export, checkpoints, an Ed25519 public key)."
        ),
    )
    _add_target(verify, required=False)
    verify.add_argument("--export", type=Path, metavar="FILE", help="a jsonl export")
    verify.add_argument(
        "--checkpoints",
        type=Path,
        metavar="FILE",
        help="its checkpoints (audit export --checkpoints)",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        action="append",
        help="the audit signing key's public key (PEM); once per key if the key was "
        "rotated (audit rotate-signing-key)",
    )
    add_connection_arguments(verify)

    public_key = audit_commands.add_parser(
        "public-key",
        help="print (or write) the public key that verifies signed checkpoints",
        description=(
            "Print the public half of the audit signing key: the running vault's, or with "
            "--key-file that of a key file (the vault's SINGURA_AUDIT_SIGNING_KEY_FILE or "
            "data-dir audit-signing-key), read on this machine. Give auditors this, never "
            "the key file."
        ),
    )
    public_key.add_argument("--output", type=Path, metavar="FILE", help="write it to FILE")
    public_key.add_argument(
        "--key-file",
        type=Path,
        metavar="KEYFILE",
        help="an audit signing key file (mode 0600) to read instead of asking the vault",
    )
    add_connection_arguments(public_key)

    prune = audit_commands.add_parser(
        "prune",
        help="delete events older than a retention period (database access)",
        description=(
            "Delete the audit events older than --older-than from every chain, on the "
            "database itself (as SINGURA_AUDIT_RETENTION_DAYS does hourly). Each chain keeps "
            "a checkpoint of what was pruned (position, count, last hash), so the rest still "
            "verifies, and one `audit.pruned` event is recorded. Signed checkpoints are kept. "
            "Needs database access (DATABASE_URL, or the embedded database), not a running "
            "vault. Exit codes: 0 pruned (possibly nothing), 1 bad arguments, 2 bad "
            "configuration."
        ),
    )
    prune.add_argument(
        "--older-than", type=parse_duration, required=True, help="e.g. 365d (at least 1d)"
    )

    rotate = audit_commands.add_parser(
        "rotate-signing-key",
        help="start a new audit signing key, explicitly and audited (database access)",
        description=(
            "Make a new key the audit signing key: the one in SINGURA_AUDIT_SIGNING_KEY_FILE "
            "(generate it first with `singura-vault keys generate-signing-key --output FILE`), "
            "or in embedded development a new data-dir audit-signing-key (generated if "
            "absent). Records `audit.signing_key_rotated` with both key ids, then signs every "
            "chain that moved with the new key; the first checkpoint of each chain under the "
            "new key names the old key's id. Vaults still holding the old key stop signing: "
            "restart them with the new one. Use it when the key that signed the checkpoints "
            "is lost (a restore without it) or must be replaced; verifiers then need both "
            "public keys. Exit codes: 0 rotated, 1 refused (nothing signed yet, the key "
            "already is the current one or was retired), 2 bad configuration."
        ),
    )
    rotate.add_argument(
        "--actor",
        default="operator",
        help="who rotates, recorded in the audit event (default %(default)s)",
    )
    for name in ("export", "verify", "public-key", "prune", "rotate-signing-key"):
        audit_commands.choices[name].set_defaults(run=_audit, needs_settings=True)


def _add_target(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    target = parser.add_mutually_exclusive_group(required=required)
    target.add_argument("--organization", metavar="ID", help="organization id")
    target.add_argument(
        "--system", action="store_true", help="the system trail (events of no organization)"
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


def run_public_key(args: argparse.Namespace, channel: grpc.Channel, key: str) -> int:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    answer = stub.GetAuditSigningKey(
        audit_pb2.GetAuditSigningKeyRequest(), metadata=(("authorization", f"Bearer {key}"),)
    )
    return _print_public_key(args.output, answer.key_id, answer.public_key_pem)


def run_public_key_of_file(args: argparse.Namespace) -> int:
    key_id, pem = audit_checkpoints.public_key_of_key_file(args.key_file)
    return _print_public_key(args.output, key_id, pem)


def _print_public_key(output: Path | None, key_id: str, pem: str) -> int:
    if output is None:
        print(pem, end="")
    else:
        output.write_text(pem, encoding="ascii")
        print(f"wrote {output} ({key_id})", file=sys.stderr)
    return 0


def offline_verify_requested(args: argparse.Namespace) -> bool:
    """Whether ``audit verify`` names files (offline) rather than a chain (the vault)."""
    files = (args.export, args.checkpoints, args.public_key)
    if any(f is not None for f in files):
        if not all(f is not None for f in files) or args.organization or args.system:
            raise ConfigError(
                "offline verification takes --export, --checkpoints and --public-key "
                "together, and no --organization or --system"
            )
        return True
    if not (args.organization or args.system):
        raise ConfigError("name a chain (--organization ID or --system), or files (--export ...)")
    return False


def run_offline_verify(args: argparse.Namespace) -> int:
    """Verify an export against its checkpoints; exit 0 ok, 1 tampered, 2 bad files.

    The public keys are read and parsed first: a file that is not one is exit 2 with
    what it is, never a key id that does not match (which would read as tampering)."""
    try:
        public_keys = [
            audit_offline.read_public_key(path.read_bytes(), f"--public-key {path}")
            for path in args.public_key
        ]
        events = _read_records(args.export, "export")
        checkpoints = _read_records(args.checkpoints, "checkpoints")
        report = audit_offline.verify_offline(events, checkpoints, public_keys)
    except (
        OSError,
        UnicodeDecodeError,
        audit_offline.ExportFormatError,
        ConfigError,
        VaultError,
    ) as exc:
        print(f"error: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 2
    newest = (
        f"; newest checkpoint: position {report.newest_checkpoint_sequence}, signed "
        f"{report.newest_checkpoint_time.isoformat()}"
        if report.newest_checkpoint_time
        else "; no checkpoints"
    )
    rotations = "".join(
        f"; signing key changed at position {c.sequence}: {c.previous_key_id} -> {c.key_id}"
        for c in report.key_changes
    )
    if report.ok:
        print(
            f"ok: {counted(report.events, 'event')} (positions {report.first_sequence} to "
            f"{report.last_sequence}) and {counted(report.checkpoints, 'signed checkpoint')} "
            "verified"
            f"{newest}{rotations}"
        )
        return 0
    print(f"TAMPERED: {report.problem}", file=sys.stderr)
    return 1


def _read_records(path: Path, what: str) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return audit_offline.read_jsonl(handle, f"{what} {path}")


def run_verify(args: argparse.Namespace, channel: grpc.Channel, key: str) -> int:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    result = stub.VerifyAuditChain(
        audit_pb2.VerifyAuditChainRequest(organization_id=args.organization or ""),
        metadata=(("authorization", f"Bearer {key}"),),
    )
    if result.ok:
        print(
            f"ok: {counted(result.event_count, 'event')} verified "
            f"({result.pruned_count} pruned before them), head {result.head_hash}"
        )
        return 0
    where = f"event {result.first_bad_event_id}: " if result.first_bad_event_id else ""
    print(f"TAMPERED: {where}{result.problem}", file=sys.stderr)
    return 1


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


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    if args.audit_command == "prune":
        return run_async(_audit_prune(settings, args.older_than))
    if args.audit_command == "rotate-signing-key":
        return run_async(_rotate_signing_key(settings, args.actor))
    if args.audit_command == "verify" and offline_verify_requested(args):
        return run_offline_verify(args)
    if args.audit_command == "public-key" and args.key_file is not None:
        return run_public_key_of_file(args)
    if args.audit_command == "export":
        refuse_existing_outputs(args)
    runs = {
        "export": run_export,
        "verify": run_verify,
        "public-key": run_public_key,
    }
    return call_vault(args, settings, runs[args.audit_command])


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    """The vault's database for an operator's command: the embedded one (started if it
    is not running, migrated) or DATABASE_URL's."""
    async with AsyncExitStack() as stack:
        if settings.embedded:
            embedded = setup.embedded_for_command(settings)
            _, superuser_dsn, owner_dsn, dsn = await stack.enter_async_context(embedded)
            await setup.bootstrap_embedded_roles(superuser_dsn)
            await setup.apply_migrations(owner_dsn)
        elif settings.database_url is None:
            raise ConfigError(setup.NEEDS_DATABASE_URL)
        else:
            dsn = settings.database_url
        db = await Database.connect(dsn, replace(settings.pool, min_size=1, max_size=2))
        try:
            yield db
        finally:
            await db.close()


async def _audit_prune(settings: Settings, older_than: timedelta) -> int:
    async with _database(settings) as db:
        pruned = await Components(db).audit.prune(older_than, "operator")
    print(f"pruned {counted(sum(pruned.values()), 'event')} from {counted(len(pruned), 'chain')}")
    return 0


async def _rotate_signing_key(settings: Settings, actor: str) -> int:
    """`audit rotate-signing-key`: see its description. A development key is written
    before the database records it, so that a failure leaves a file to rotate to again,
    never a recorded key that nobody holds."""
    signer = audit_checkpoints.rotation_signer(settings)
    async with _database(settings) as db:
        components = Components(db, audit_signer=signer)
        current = await components.audit_checkpoints.current_key()
        if current is not None and current.key_id == signer.key_id:
            print(
                f"error: {signer.key_id} ({audit_checkpoints.signing_key_path(settings)}) "
                "already is the key that signs this database's checkpoints; "
                f"{audit_checkpoints.already_current_advice(settings)}",
                file=sys.stderr,
            )
            return 1
        if current is not None and signer.unsaved_path is not None:
            signer.save_generated()
        try:
            previous, signed = await components.audit_checkpoints.rotate(actor)
        except FailedPrecondition as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
    print(
        f"rotated the audit signing key: {previous} -> {signer.key_id} "
        f"({audit_checkpoints.signing_key_path(settings)}); signed {counted(signed, 'chain')} "
        "with the new key. Restart every vault process with this key, and give auditors its "
        "public key (`singura-vault audit public-key`) beside the old one."
    )
    return 0
