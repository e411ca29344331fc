"""``singura-vault migrate``, ``backup`` and ``restore``: the database itself."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from singura_vault import backup, restore
from singura_vault.cli._common import run_async
from singura_vault.config import Settings
from singura_vault.db import setup
from singura_vault.db.migrations import (
    MigrationError,
    create_migration_file,
    default_migrations_dir,
    load_migrations,
)
from singura_vault.errors import ConfigError


def add_parsers(commands: Any) -> None:
    migrate = commands.add_parser("migrate", help="database schema migrations")
    migrate_commands = migrate.add_subparsers(
        dest="migrate_command", metavar="COMMAND", required=True
    )
    migrate_commands.add_parser(
        "up",
        help="apply pending migrations (as the schema owner)",
        description=(
            "Apply every pending migration as the schema owner (DATABASE_OWNER_URL; set "
            "DATABASE_URL too, or the embedded database is migrated). Vaults that start "
            "together apply each migration once (an advisory lock)."
        ),
    )
    migrate_commands.add_parser(
        "status",
        help="list applied and pending migrations",
        description=(
            "List the migrations the database has applied (`applied  NNN_name  TIME`) and "
            "those still pending (`pending  FILE`), and any problem on stderr (`problem  "
            "...`: an applied file that was edited or is missing). Changes nothing. It reads "
            "DATABASE_OWNER_URL, else DATABASE_URL, else the embedded database. Exit codes: "
            "0 consistent (pending migrations are fine), 1 problems found, 2 bad "
            "configuration."
        ),
    )
    migrate_commands.add_parser(
        "validate",
        help="check file names and that applied files were not edited",
        description=(
            "Check the shipped migration files' names (three digits, consecutive) and that "
            "no file the database applied was edited since (SHA-256), then print the status "
            "as `migrate status` does and `ok` or `invalid`. Changes nothing. Exit codes: "
            "0 ok, 1 invalid, 2 malformed file names or bad configuration."
        ),
    )
    create = migrate_commands.add_parser(
        "create",
        help="write a new, empty migration file",
        description=(
            "Development only: write the next numbered, empty migration file "
            "(NNN_NAME.sql) into --dir and print its path. Uses no database and reads no "
            "environment. Exit codes: 0 created, 1 bad name."
        ),
    )
    create.add_argument("name", help="short description, e.g. add_credential_indexes")
    create.add_argument(
        "--dir", type=Path, default=Path("migrations"), help="migrations directory (./migrations)"
    )

    for name in ("up", "status", "validate"):
        migrate_commands.choices[name].set_defaults(run=_migrate, needs_settings=True)
    create.set_defaults(run=_create_migration, needs_settings=False)

    backup_parser = commands.add_parser(
        "backup",
        help="write a logical backup (pg_dump) of the vault's database",
        description=(
            "Dump the vault's schema and rows (pg_dump --format=custom --schema=singura) into "
            "a new file, mode 0600. Embedded mode dumps the embedded database as its "
            "superuser. With an external database, pg_dump connects as DATABASE_BACKUP_URL "
            "(else DATABASE_OWNER_URL), which must be a superuser or a role with BYPASSRLS. "
            "The backup holds ciphertext only: keep the root key, SINGURA_AUTH_SECRET and the "
            "audit signing key (in development: keyring.json, auth-secret and "
            "audit-signing-key in the data dir) backed up separately, to restore it "
            "(docs/backup-restore.md)."
        ),
    )
    backup_parser.add_argument(
        "--output",
        "-o",
        type=Path,
        required=True,
        metavar="FILE",
        help="the backup file to create (mode 0600); an existing file is never overwritten",
    )
    restore_parser = commands.add_parser(
        "restore",
        help="restore a backup into an empty database",
        description=(
            "Restore a file made by `singura-vault backup`, in one transaction, as the schema "
            "owner: into the embedded database of SINGURA_DATA_DIR (roles and database are "
            "created first), or into DATABASE_OWNER_URL's database. Refused if the target "
            "already has a singura schema. Start the vault afterwards with the backed-up "
            "vault's root key, SINGURA_AUTH_SECRET and audit signing key (in development: "
            "copy keyring.json, auth-secret and audit-signing-key into the data dir); without "
            "the signing key the vault refuses to start until `singura-vault audit "
            "rotate-signing-key` starts a new one (docs/backup-restore.md)."
        ),
    )
    restore_parser.add_argument("file", type=Path, metavar="FILE", help="a backup file")
    backup_parser.set_defaults(run=_backup, needs_settings=True)
    restore_parser.set_defaults(run=_restore, needs_settings=True)


def _create_migration(args: argparse.Namespace) -> int:
    try:
        path = create_migration_file(args.dir, args.name)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"created {path}")
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(_migrate_async(settings, args.migrate_command))


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    backup_url = os.environ.get(backup.BACKUP_URL_VARIABLE, "").strip() or None
    return _report(
        lambda: run_async(backup.run_backup(settings, args.output, backup_url=backup_url))
    )


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    return _report(lambda: run_async(restore.run_restore(settings, args.file)))


def _report(run: Any) -> int:
    try:
        run()
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _migrate_async(settings: Settings, command: str) -> int:
    directory = default_migrations_dir()
    if command == "validate":
        load_migrations(directory)
    async with AsyncExitStack() as stack:
        if settings.embedded:
            embedded = setup.embedded_for_command(settings)
            _, superuser_dsn, dsn, _ = await stack.enter_async_context(embedded)
            await setup.bootstrap_embedded_roles(superuser_dsn)
        else:
            dsn_or_none = settings.database_owner_url or (
                settings.database_url if command != "up" else None
            )
            if dsn_or_none is None:
                raise ConfigError("migrate up needs DATABASE_OWNER_URL (the schema owner's login)")
            dsn = dsn_or_none
        if command == "up":
            count = await setup.apply_migrations(dsn, directory)
            print(f"applied {count} migration(s)")
            return 0
        status = await setup.read_migration_status(dsn, directory)
        for row in status.applied:
            print(f"applied  {row.version:03d}_{row.name}  {row.applied_at.isoformat()}")
        for migration in status.pending:
            print(f"pending  {migration.filename}")
        for problem in status.problems:
            print(f"problem  {problem}", file=sys.stderr)
        if command == "validate":
            print("ok" if not status.problems else "invalid")
        return 1 if status.problems else 0
