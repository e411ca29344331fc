"""``singura-vault keys ...``: new root and signing keys on this machine, and key
administration against a running vault (KeyService, admin key), so that every step is
audited and every vault process sees the same database state."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from singura_vault.cli._common import (
    EXIT_CONFIG,
    add_connection_arguments,
    bootstrap_admin_key,
    call_vault,
    counted,
)
from singura_vault.config import Settings
from singura_vault.errors import ConfigError
from singura_vault.proto.singura.vault.v1 import keys_pb2, keys_pb2_grpc
from singura_vault.service import key_admin
from singura_vault.service.access import new_key_text

_ADMIN_COMMANDS = ("status", "rotate", "rotate-data-key", "rewrap", "repair", "retire")


def add_parsers(commands: Any) -> None:
    keys = commands.add_parser("keys", help="root key administration")
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    generate = keys_commands.add_parser(
        "generate",
        help="print a new random root key for ENCRYPTION_KEY, or write a keyring file",
        description=(
            "Print a new random root key (32 bytes, base64) for ENCRYPTION_KEY, or the "
            "same for SINGURA_AUTH_SECRET; with --keyring-file, write a new keyring file "
            "(mode 0600) for SINGURA_KEYRING_FILE instead and print its key id. Works "
            "offline: it reads no configuration and contacts nothing. Exit codes: 0 "
            "printed or written, 1 bad arguments, 2 the keyring file exists or cannot be "
            "written."
        ),
    )
    generate.add_argument(
        "--keyring-file",
        type=Path,
        help="write a new keyring file (mode 0600) for SINGURA_KEYRING_FILE instead of printing",
    )

    signing_key = keys_commands.add_parser(
        "generate-signing-key",
        help="write a new Ed25519 audit signing key file (mode 0600) for "
        "SINGURA_AUDIT_SIGNING_KEY_FILE and print its public key",
        description=(
            "Write a new Ed25519 audit signing key to --output (mode 0600; an existing file "
            "is never overwritten) for SINGURA_AUDIT_SIGNING_KEY_FILE, and print its public "
            "key (PEM) on stdout, for `audit verify --public-key`. Exit codes: 0 written, "
            "1 bad arguments, 2 the file exists or cannot be written."
        ),
    )
    signing_key.add_argument("--output", type=Path, required=True, metavar="FILE")

    admin_key = keys_commands.add_parser(
        "admin-key",
        help="print the bootstrap admin key that serve wrote to SINGURA_DATA_DIR/admin-api-key "
        '(for ADMIN_KEY="$(singura-vault keys admin-key)")',
        description=(
            "Print the admin API key in SINGURA_DATA_DIR/admin-api-key, which `serve` "
            "writes on its first start against a database with no admin key. A restored "
            "database keeps its own admin keys and `restore` writes no file: use a key you "
            "kept, or register a new one with `keys generate-admin-key`. Exit codes: 0 "
            "printed, 2 no such file or it cannot be read."
        ),
    )
    admin_key.set_defaults(run=_admin_key, needs_settings=True)

    new_admin_key = keys_commands.add_parser(
        "generate-admin-key",
        help="print a new admin API key for SINGURA_BOOTSTRAP_ADMIN_KEY (serve registers it)",
        description=(
            "Print a new API key (svk_...), registered nowhere yet: set it as "
            "SINGURA_BOOTSTRAP_ADMIN_KEY for `serve`, which registers it as an admin key at "
            "start, and keep it as you keep the root key. This is how a vault whose admin "
            "keys are lost or unusable (a restored database, another SINGURA_AUTH_SECRET) "
            "gets one: only whoever sets serve's environment can register it. Works "
            "offline. Exit code 0."
        ),
    )

    generate.set_defaults(run=_generate, needs_settings=False)
    signing_key.set_defaults(run=_generate_signing_key, needs_settings=False)
    new_admin_key.set_defaults(run=_generate_admin_key, needs_settings=False)
    _add_admin_parsers(keys_commands)
    for name in _ADMIN_COMMANDS:
        keys_commands.choices[name].set_defaults(run=_administer, needs_settings=True)


def _admin_key(args: argparse.Namespace, settings: Settings) -> int:
    try:
        key = bootstrap_admin_key(settings)
    except ConfigError as exc:
        # 2 as for every command that finds no API key (`keys status` and the others).
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # Printed on purpose, as `cat` of the file would: the operator asked for it.
    print(key)
    return 0


def _generate_admin_key(args: argparse.Namespace) -> int:
    # Printed on purpose, as `keys generate` prints a root key: the command's one job.
    # The key is no admin key until serve registers it (SINGURA_BOOTSTRAP_ADMIN_KEY).
    print(new_key_text())
    print(
        "register it: set SINGURA_BOOTSTRAP_ADMIN_KEY to this key in serve's environment "
        "and restart serve; keep the key, the vault stores only its digest",
        file=sys.stderr,
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    if args.keyring_file is None:
        # The one place the vault prints a key: that is what the command is for.
        print(key_admin.generate_root_key())
        return 0
    try:
        ids = key_admin.create_keyring_file(args.keyring_file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(
        f"wrote {args.keyring_file} (mode 0600) with key {ids[0]}; "
        f"set SINGURA_KEYRING_FILE={args.keyring_file}"
    )
    return 0


def _generate_signing_key(args: argparse.Namespace) -> int:
    path: Path = args.output
    try:
        key_id, public_key_pem = key_admin.create_audit_signing_key_file(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(
        f"wrote {path} (mode 0600), key {key_id}; set SINGURA_AUDIT_SIGNING_KEY_FILE={path} "
        "and keep the public key below for `audit verify --public-key`",
        file=sys.stderr,
    )
    print(public_key_pem, end="")
    return 0


def _administer(args: argparse.Namespace, settings: Settings) -> int:
    return call_vault(args, settings, _run)


# What every command against the vault ends its --help with.
_ADMIN_EXIT_CODES = (
    " Needs an admin API key. Exit codes: 0 done, 1 the vault answered with an error "
    "(printed as `error: CODE: message`), 2 no API key found or bad configuration."
)


def _add_admin_parsers(keys_commands: Any) -> None:
    status = keys_commands.add_parser(
        "status",
        help="root keys, data keys and rewrap progress",
        description=(
            "Print the key provider, each root key (`*` marks the primary) with the number "
            "of data keys it wraps, each organization's data key versions with their state "
            "and credential counts, and the latest rewrap job." + _ADMIN_EXIT_CODES
        ),
    )
    status.add_argument("--organization", metavar="ID", default="", help="one organization only")
    add_connection_arguments(status)

    rotate = keys_commands.add_parser(
        "rotate",
        help="new primary root key (keyring file or KMS) and rewrap every data key under it",
        description=(
            "Make a new primary root key where the provider can (a keyring file or a KMS; "
            "with ENCRYPTION_KEY, configure the new key first) and rewrap every live data "
            "key under the primary; prints its id and how many data keys were rewrapped. "
            "Credentials themselves are not re-encrypted (that is `keys rewrap`). "
            "docs/key-rotation.md." + _ADMIN_EXIT_CODES
        ),
    )
    add_connection_arguments(rotate)

    rotate_data = keys_commands.add_parser(
        "rotate-data-key",
        help="new data key version for an organization (or all)",
        description=(
            "Add a new data key version for --organization, or for every organization with "
            "data keys, and print each new version. New credentials are sealed under it; "
            "`keys rewrap` moves the existing ones." + _ADMIN_EXIT_CODES
        ),
    )
    rotate_data.add_argument("--organization", metavar="ID", default="", help="default: all")
    add_connection_arguments(rotate_data)

    rewrap = keys_commands.add_parser(
        "rewrap",
        help="re-encrypt credentials onto their organization's newest data key",
        description=(
            "Start (or join the running) rewrap job, which re-encrypts every credential "
            "onto its organization's newest data key, and print the job; --wait follows "
            "it to the end, with progress on stderr. Exit codes: 0 started (with --wait: "
            "completed), 1 the vault answered with an error or the job was cancelled, 2 no "
            "API key found or bad configuration. Needs an admin API key."
        ),
    )
    rewrap.add_argument("--wait", action="store_true", help="follow the job until it ends")
    add_connection_arguments(rewrap)

    repair = keys_commands.add_parser(
        "repair",
        help="find credentials whose recorded data key version does not open them and "
        "correct the record (audited)",
        description=(
            "For --organization, or each organization with data keys, open every credential "
            "under its recorded data key version and, if that fails, under each other live "
            "version; correct the record to the version that opens it (audited as "
            "credential.key_version_repaired). Prints one line per organization (checked, "
            "repaired, unrecoverable) and one per credential changed or unrecoverable. "
            "Needs an admin API key. Exit codes: 0 nothing unrecoverable, 1 a credential "
            "opens under no live version, or the vault answered with an error (NOT_FOUND "
            "for an unknown organization), 2 no API key found or bad configuration."
        ),
    )
    repair.add_argument("--organization", metavar="ID", default="", help="default: all")
    add_connection_arguments(repair)

    retire = keys_commands.add_parser(
        "retire",
        help="retire a root key or a data key version",
        description=(
            "Retire a root key that wraps no live data key (--root-key), or a data key "
            "version that encrypts no credential or OAuth client secret (--organization "
            "with --version); prints "
            "`retired`." + _ADMIN_EXIT_CODES
        ),
    )
    target = retire.add_mutually_exclusive_group(required=True)
    target.add_argument("--root-key", metavar="ID", help="a root key id (see keys status)")
    target.add_argument("--organization", metavar="ID", help="with --version: a data key")
    retire.add_argument("--version", type=int, help="data key version")
    add_connection_arguments(retire)


def _run(args: argparse.Namespace, channel: grpc.Channel, key: str) -> int:
    stub = keys_pb2_grpc.KeyServiceStub(channel)
    auth = (("authorization", f"Bearer {key}"),)
    if args.keys_command == "status":
        status = stub.GetKeyStatus(
            keys_pb2.GetKeyStatusRequest(organization_id=args.organization), metadata=auth
        )
        print(f"provider: {status.provider}")
        for root in status.root_keys:
            mark = "*" if root.primary else " "
            print(f"root {mark} {root.id:<24} wraps {counted(root.data_key_count, 'data key')}")
        for data_key in status.data_keys:
            print(
                f"data   {data_key.organization_id} v{data_key.version:<3} {data_key.state:<9} "
                f"{counted(data_key.credential_count, 'credential')}  {data_key.root_key_id}"
            )
        if status.HasField("latest_rewrap_job"):
            _print_job(status.latest_rewrap_job)
        return 0
    if args.keys_command == "rotate":
        rotated = stub.RotateRootKey(keys_pb2.RotateRootKeyRequest(), metadata=auth)
        print(
            f"primary root key {rotated.primary_root_key_id}; "
            f"{counted(rotated.rewrapped_data_keys, 'data key')} rewrapped"
        )
        return 0
    if args.keys_command == "rotate-data-key":
        created = stub.RotateDataKey(
            keys_pb2.RotateDataKeyRequest(organization_id=args.organization), metadata=auth
        )
        for data_key in created.data_keys:
            print(f"{data_key.organization_id}: data key v{data_key.version}")
        print("run `singura-vault keys rewrap --wait` to move existing credentials onto it")
        return 0
    if args.keys_command == "repair":
        return _repair(stub, auth, args.organization)
    if args.keys_command == "retire":
        request = (
            keys_pb2.RetireKeyVersionRequest(root_key_id=args.root_key)
            if args.root_key
            else keys_pb2.RetireKeyVersionRequest(
                data_key=keys_pb2.DataKeyRef(
                    organization_id=args.organization, version=args.version or 0
                )
            )
        )
        stub.RetireKeyVersion(request, metadata=auth)
        print("retired")
        return 0
    job = stub.StartRewrap(keys_pb2.StartRewrapRequest(), metadata=auth).job
    _print_job(job)
    while args.wait and job.state == keys_pb2.REWRAP_JOB_STATE_RUNNING:
        time.sleep(1)  # polling a remote job's progress for a person, once a second
        job = stub.GetRewrapJob(keys_pb2.GetRewrapJobRequest(job_id=job.id), metadata=auth).job
        _progress(job)
    if args.wait:
        print(file=sys.stderr)
        _print_job(job)
    return 0 if job.state != keys_pb2.REWRAP_JOB_STATE_CANCELLED else 1


def _repair(stub: keys_pb2_grpc.KeyServiceStub, auth: Any, organization: str) -> int:
    """Repair one organization, or each organization with data keys, one line each;
    exit code 1 if any credential could not be opened under any live data key."""
    if organization:
        organizations = [organization]
    else:
        try:
            status = stub.GetKeyStatus(keys_pb2.GetKeyStatusRequest(), metadata=auth)
        except grpc.RpcError as exc:
            # Listing the organizations is this command's first step, not what was asked:
            # a refusal names the repair (the vault's own words for RepairCredentialKeys).
            if isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.PERMISSION_DENIED:
                print(
                    "error: PERMISSION_DENIED: only an admin API key may repair credential "
                    "key versions",
                    file=sys.stderr,
                )
                return 1
            raise
        organizations = sorted({k.organization_id for k in status.data_keys})
    unrecoverable = 0
    for index, org in enumerate(organizations, 1):
        report = stub.RepairCredentialKeys(
            keys_pb2.RepairCredentialKeysRequest(organization_id=org), metadata=auth
        )
        print(
            f"[{index}/{len(organizations)}] {org}: {report.checked} checked, "
            f"{len(report.repaired)} repaired, "
            f"{len(report.unrecoverable_credential_ids)} unrecoverable"
        )
        for fix in report.repaired:
            print(
                f"  repaired {fix.credential_id}: recorded v{fix.recorded_key_version}, "
                f"sealed under v{fix.sealed_key_version}"
            )
        for credential_id in report.unrecoverable_credential_ids:
            print(f"  unrecoverable {credential_id}: no live data key version opens it")
        unrecoverable += len(report.unrecoverable_credential_ids)
    return 1 if unrecoverable else 0


def _print_job(job: keys_pb2.RewrapJob) -> None:
    state = keys_pb2.RewrapJobState.Name(job.state).removeprefix("REWRAP_JOB_STATE_").lower()
    failed = (
        f", {job.failed} failed (see the credential_integrity_failure log events)"
        if job.failed
        else ""
    )
    print(f"rewrap job {job.id}: {state}, {job.done}/{job.total} credentials{failed}")


def _progress(job: keys_pb2.RewrapJob) -> None:
    share = job.done / job.total if job.total else 1.0
    if sys.stderr.isatty():
        bar = "#" * int(share * 30)
        print(f"\r[{bar:<30}] {job.done}/{job.total}", end="", file=sys.stderr, flush=True)
    else:
        print(f"rewrap: {job.done}/{job.total} ({share:.0%})", file=sys.stderr)
