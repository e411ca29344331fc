"""``singura-vault audit verify`` and ``audit public-key``: checking a chain.

``verify --organization/--system`` asks a running vault to recompute the chain;
``verify --export --checkpoints --public-key`` checks exported files against their
signed checkpoints on this machine, with no vault or database. ``public-key`` prints the
public half of the audit signing key that verifies those checkpoints: the vault's, or a
key file's (``--key-file``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc

from singura_vault.cli._common import counted
from singura_vault.errors import ConfigError, VaultError
from singura_vault.proto.singura.vault.v1 import audit_pb2, audit_pb2_grpc
from singura_vault.service import audit_checkpoints, audit_offline


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
