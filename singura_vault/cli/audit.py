"""``singura-vault audit export|verify|public-key|prune|rotate-signing-key``: the audit
trail from the CLI.

``export``, ``verify`` and ``public-key`` are clients of a running vault (its
AuditService, with an API key), so they are authorized and audited like any caller;
``verify --export`` checks files offline and needs neither vault nor database, and
``public-key --key-file`` reads a key file. ``prune`` and ``rotate-signing-key`` are
operators' actions on the database itself (one deletes, the other changes which key
the vault must sign with, so neither is exposed over the API); each records itself
as an audit event (``audit.pruned``, ``audit.signing_key_rotated``).

This module builds the parsers and picks the runner; the runners live by job:
``audit_export`` (export), ``audit_verify`` (verify, online and offline, and
public-key), ``audit_database`` (prune and rotate-signing-key).
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from singura_vault.cli import audit_database, audit_export, audit_verify
from singura_vault.cli._common import add_connection_arguments, call_vault, run_async
from singura_vault.config import Settings

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


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    if args.audit_command == "prune":
        return run_async(audit_database.run_prune(settings, args.older_than))
    if args.audit_command == "rotate-signing-key":
        return run_async(audit_database.run_rotate_signing_key(settings, args.actor))
    if args.audit_command == "verify" and audit_verify.offline_verify_requested(args):
        return audit_verify.run_offline_verify(args)
    if args.audit_command == "public-key" and args.key_file is not None:
        return audit_verify.run_public_key_of_file(args)
    if args.audit_command == "export":
        audit_export.refuse_existing_outputs(args)
    runs = {
        "export": audit_export.run_export,
        "verify": audit_verify.run_verify,
        "public-key": audit_verify.run_public_key,
    }
    return call_vault(args, settings, runs[args.audit_command])
