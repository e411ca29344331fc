"""Logical backup and restore of the vault's database (docs/backup-restore.md).

A backup is ``pg_dump --format=custom --schema=singura``: every table of the vault
(``schema_migrations`` included, which lives in that schema), its functions, triggers,
row-level security policies and grants, and their rows. What it holds is ciphertext,
wrapped data keys, API-key digests and the audit trail; it is useless without the root
key and ``SINGURA_AUTH_SECRET``, which are never in the database.

Who runs the tools:

- **Embedded mode** (neither ``DATABASE_URL`` nor ``DATABASE_OWNER_URL`` set): the wheel's
  ``pg_dump`` connects as the cluster's superuser over the private Unix socket; the
  wheel's ``pg_restore`` restores as ``singura_owner`` into the ``singura`` database,
  created (with the roles) first if missing. As root the tools run as root: they are
  clients, and only the server refuses root.
- **External mode**: ``pg_dump``/``pg_restore`` from PATH (else the wheel's).
  ``pg_dump`` connects as ``DATABASE_BACKUP_URL``, else ``DATABASE_OWNER_URL``, and must
  bypass row-level security: the tenant tables are ``FORCE ROW LEVEL SECURITY``, so even
  their owner sees only the organization its session names, and a dump as the owner
  would be refused (or, with ``--enable-row-security``, silently incomplete). We check
  this before dumping. ``pg_restore`` runs as ``DATABASE_OWNER_URL``.

A restore goes only into a database that has no ``singura`` schema, in one transaction
(``--single-transaction``): it either lands whole or leaves the database as it was.
Objects are re-owned by the restoring role (``--no-owner``), so the owner's name may
differ between source and target; ``singura_app`` must exist, as the grants name it.

Passwords never go on a command line (other users can read it): a password in a URL is
moved to ``PGPASSWORD`` in the tool's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from singura_vault.config import Settings
from singura_vault.db import pg_tools, setup
from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.db.migrations import MigrationStatus
from singura_vault.db.pg_tools import (
    Tool,
    embedded_tool_env,
    external_tool_env,
    libpq_target,
    run_captured,
    run_streaming,
    tool_failure,
    tool_version,
)
from singura_vault.local import (
    DEVELOPMENT_AUTH_SECRET_FILE as DEVELOPMENT_AUTH_SECRET,
)
from singura_vault.local import (
    DEVELOPMENT_KEYRING_FILE as DEVELOPMENT_KEYRING,
)
from singura_vault.local import (
    DEVELOPMENT_SIGNING_KEY_FILE as DEVELOPMENT_SIGNING_KEY,
)
from singura_vault.private_files import fsync_directory, link_without_replacing
from singura_vault.repositories.backup_checks import (
    DatabaseCheckError,
    backup_source_facts,
    restore_target_facts,
)

__all__ = [
    "SCHEMA",
    "BackupError",
    "BackupResult",
    "Progress",
    "RestoreResult",
    "backup_database",
    "check_backup_source",
    "check_restore_target",
    "find_pg_tool",
    "inspect_archive",
    "libpq_target",
    "restore_database",
    "run_backup",
    "run_restore",
    "stderr_progress",
]

SCHEMA = "singura"
APP_ROLE = "singura_app"
BACKUP_URL_VARIABLE = "DATABASE_BACKUP_URL"

Progress = Callable[[str], None]

_ARCHIVE_MAGIC = b"PGDMP"
_LOCK_WAIT_TIMEOUT = "60s"
_TAKEN = "{output} appeared while the backup ran; nothing was replaced"
# pg_dump/pg_restore --verbose lines that say which table's rows are being copied.
_DUMP_TABLE = re.compile(r'dumping contents of table "([^"]+)"')
_RESTORE_TABLE = re.compile(r'processing data for table "([^"]+)"')
# "3261; 0 16412 TABLE DATA singura organizations singura_owner" in pg_restore --list.
_TOC_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")
_TOC_SCHEMA = re.compile(r"^\d+; \d+ \d+ SCHEMA - (\S+) ")


class BackupError(Exception):
    """A backup or restore could not be made; the message says why and what to do."""


def stderr_progress(message: str) -> None:
    """The CLI's progress reporter: one line on stderr per step."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BackupResult:
    """What ``backup_database`` wrote."""

    path: Path
    size_bytes: int
    tables: tuple[str, ...]
    tool: Path


@dataclass(frozen=True)
class RestoreResult:
    """What ``restore_database`` restored, and where the schema now stands."""

    tables: tuple[str, ...]
    migrations: MigrationStatus = field(repr=False)


# -- tools and connections -------------------------------------------------------------------


def find_pg_tool(name: Tool, *, prefer_path: bool) -> Path:
    """Locate ``pg_dump`` or ``pg_restore`` (see db/pg_tools.py); BackupError if absent."""
    try:
        return pg_tools.find_pg_tool(name, prefer_path=prefer_path)
    except pg_tools.PgToolNotFound as exc:
        raise BackupError(str(exc)) from None


# -- backup ----------------------------------------------------------------------------------


async def check_backup_source(dsn: str) -> str:
    """Refuse a source that pg_dump could not read completely; returns the role name.

    The role must see every organization's rows: a superuser or a role with BYPASSRLS.
    """
    try:
        facts = await backup_source_facts(dsn, SCHEMA)
    except DatabaseCheckError as exc:
        raise BackupError(str(exc)) from None
    if not facts.has_schema:
        raise BackupError(
            f"database {facts.database!r} has no {SCHEMA} schema: there is no vault to back up"
        )
    if not facts.bypasses_rls:
        raise BackupError(
            f"the backup connects as role {facts.role!r}, which row-level security binds: "
            "the tenant tables are FORCE ROW LEVEL SECURITY, so it cannot read every "
            f"organization's rows and the dump would be refused or incomplete; set "
            f"{BACKUP_URL_VARIABLE} to a superuser or to a role with BYPASSRLS and "
            "pg_read_all_data (docs/backup-restore.md has the SQL)"
        )
    return facts.role


async def backup_database(
    dsn: str,
    output: Path,
    *,
    pg_dump: Path,
    env: Mapping[str, str],
    progress: Progress = stderr_progress,
) -> BackupResult:
    """Dump schema ``singura`` of ``dsn``'s database into ``output`` (custom format, 0600).

    ``dsn`` must bypass row-level security (checked first). ``output`` must not exist;
    the archive is written to a temporary file beside it and renamed into place only
    when pg_dump succeeded, so a failed backup never leaves a truncated file behind.
    """
    output, partial, fd = _open_partial(output)
    try:
        role = await check_backup_source(dsn)
        target, tool_env = libpq_target(dsn, env)
        progress(f"backup: {await tool_version(pg_dump)} as role {role}")
        tables: list[str] = []

        def on_line(line: str) -> None:
            match = _DUMP_TABLE.search(line)
            if match:
                tables.append(match[1])
                progress(f"backup: dumping {match[1]}")

        code, tail = await run_streaming(
            [
                str(pg_dump),
                "--format=custom",
                f"--schema={SCHEMA}",
                f"--lock-wait-timeout={_LOCK_WAIT_TIMEOUT}",
                "--no-password",
                "--verbose",
                # --file, not our descriptor as stdout: on a seekable stdout pg_dump 18
                # appends its final table of contents (the one with data offsets) after
                # the data instead of rewriting it in place, doubling the size. The file
                # is ours, opened through /dev/fd so that no path is looked up again;
                # fopen("w") truncates it and keeps its mode.
                f"--file={_fd_path(fd, partial)}",
                f"--dbname={target}",
            ],
            tool_env,
            stdout=asyncio.subprocess.DEVNULL,
            on_line=on_line,
            pass_fds=(fd,),
        )
        if code != 0:
            raise BackupError(tool_failure(pg_dump, code, tail))
        _check_same_file(fd, partial)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    os.close(fd)
    size = _publish(partial, output)
    progress(f"backup: wrote {output} ({size:,} bytes, {len(tables)} tables, mode 0600)")
    return BackupResult(output, size, tuple(tables), pg_dump)


def _check_output(output: Path) -> Path:
    output = output.absolute()
    if output.exists() or output.is_symlink():
        raise BackupError(f"{output} already exists; choose a new file name")
    if not output.parent.is_dir():
        raise BackupError(f"directory {output.parent} does not exist")
    return output


def _open_partial(output: Path) -> tuple[Path, Path, int]:
    """Check ``output`` and open a new 0600 temporary file beside it for the archive."""
    output = _check_output(output)
    partial = output.with_name(f".{output.name}.{secrets.token_hex(4)}.partial")
    # O_EXCL | O_NOFOLLOW: a file (or symlink) planted at the name is never written through.
    fd = os.open(
        partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    os.fchmod(fd, 0o600)  # whatever the umask
    return output, partial, fd


def _fd_path(fd: int, partial: Path) -> str:
    return f"/dev/fd/{fd}" if os.path.isdir("/dev/fd") else str(partial)


def _check_same_file(fd: int, partial: Path) -> None:
    """The file pg_dump wrote is the 0600 one we created, not one swapped in meanwhile."""
    ours, now = os.fstat(fd), os.stat(partial, follow_symlinks=False)
    if (ours.st_dev, ours.st_ino) != (now.st_dev, now.st_ino):
        raise BackupError(f"{partial} was replaced while pg_dump wrote it; nothing was kept")


def _publish(partial: Path, output: Path) -> int:
    """Give the finished archive its name, durably; returns its size."""
    try:
        # Unlike rename, fails if the name was taken meanwhile.
        link_without_replacing(partial, output, _TAKEN.format(output=output), error=BackupError)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    fsync_directory(output.parent)
    return output.stat().st_size


# -- restore ---------------------------------------------------------------------------------


async def inspect_archive(archive: Path, *, pg_restore: Path) -> tuple[str, ...]:
    """Check that ``archive`` is a vault backup; returns the tables whose rows it holds."""
    try:
        with archive.open("rb") as fh:
            magic = fh.read(len(_ARCHIVE_MAGIC))
    except FileNotFoundError:
        raise BackupError(f"{archive} does not exist") from None
    except IsADirectoryError:
        raise BackupError(f"{archive} is a directory, not a backup file") from None
    if magic != _ARCHIVE_MAGIC:
        raise BackupError(
            f"{archive} is not a pg_dump custom-format archive (made by `singura-vault backup`)"
        )
    code, listing, errors = await run_captured(
        [str(pg_restore), "--list", str(archive)], embedded_tool_env()
    )
    if code != 0:
        raise BackupError(f"{pg_restore.name} cannot read {archive}: {errors.strip()}")
    schemas = {m[1] for line in listing.splitlines() if (m := _TOC_SCHEMA.match(line))}
    tables = tuple(
        f"{m[1]}.{m[2]}" for line in listing.splitlines() if (m := _TOC_TABLE_DATA.match(line))
    )
    if SCHEMA not in schemas or f"{SCHEMA}.schema_migrations" not in tables:
        raise BackupError(
            f"{archive} is a PostgreSQL archive but not a vault backup "
            f"(no {SCHEMA} schema with its schema_migrations table)"
        )
    return tables


async def check_restore_target(owner_dsn: str, *, hint: str = "") -> str:
    """Refuse a target that is not an empty database the schema owner may build in.

    Returns the role name. ``hint`` is appended to the "not empty" refusal.
    """
    try:
        facts = await restore_target_facts(owner_dsn, SCHEMA, APP_ROLE)
    except DatabaseCheckError as exc:
        raise BackupError(str(exc)) from None
    database = facts.database
    if facts.has_schema:
        raise BackupError(
            f"database {database!r} already has a {SCHEMA} schema; a backup is restored only "
            f"into an empty database, never over a vault{hint}"
        )
    if facts.superuser:
        raise BackupError(
            f"restore connects as {facts.role!r}, a superuser: the restored tables and "
            "SECURITY DEFINER functions would belong to it; connect DATABASE_OWNER_URL as the "
            "schema owner (docs/operations.md)"
        )
    if not facts.has_app_role:
        raise BackupError(
            f"role {APP_ROLE} does not exist in the target cluster; the backup's grants name "
            "it: create it first (docs/operations.md, 'SQL for the DBA')"
        )
    if not facts.may_create:
        raise BackupError(
            f"role {facts.role!r} may not create schemas in database {database!r}; make it "
            f"the database's owner (CREATE DATABASE {database} OWNER {facts.role})"
        )
    return facts.role


async def restore_database(
    archive: Path,
    owner_dsn: str,
    *,
    pg_restore: Path,
    env: Mapping[str, str],
    progress: Progress = stderr_progress,
    target_hint: str = "",
) -> RestoreResult:
    """Restore ``archive`` into ``owner_dsn``'s database, which must be empty.

    Runs as the schema owner, in one transaction, re-owning every object to that role.
    The vault's migrations are not applied here: ``serve`` (embedded, or with
    DATABASE_OWNER_URL) or ``migrate up`` applies any that are newer than the backup.
    """
    tables = await inspect_archive(archive, pg_restore=pg_restore)
    role = await check_restore_target(owner_dsn, hint=target_hint)
    target, tool_env = libpq_target(owner_dsn, env)
    progress(f"restore: {await tool_version(pg_restore)} as role {role}, {len(tables)} tables")

    def on_line(line: str) -> None:
        match = _RESTORE_TABLE.search(line)
        if match:
            progress(f"restore: loading {match[1]}")

    code, tail = await run_streaming(
        [
            str(pg_restore),
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-password",
            "--verbose",
            f"--dbname={target}",
            str(archive),
        ],
        tool_env,
        stdout=asyncio.subprocess.DEVNULL,
        on_line=on_line,
    )
    if code != 0:
        raise BackupError(
            tool_failure(pg_restore, code, tail) + "\nnothing was restored (one transaction)"
        )
    status = await setup.read_migration_status(owner_dsn)
    latest = max((row.version for row in status.applied), default=0)
    progress(
        f"restore: done; schema at migration {latest:03d}, {len(status.pending)} pending "
        "(`serve` or `migrate up` applies them)"
    )
    for problem in status.problems:
        progress(f"restore: warning: {problem}")
    return RestoreResult(tables, status)


# -- the CLI commands ------------------------------------------------------------------------


async def _with_embedded(
    settings: Settings,
    work: Callable[[EmbeddedPostgres, str], Awaitable[object]],
) -> None:
    """Start the embedded server (if it is not running), run ``work(server, superuser
    DSN)``, and stop the server again if we started it."""
    async with setup.embedded_for_command(settings) as (server, superuser_dsn, _, _):
        await work(server, superuser_dsn)


async def run_backup(
    settings: Settings,
    output: Path,
    *,
    backup_url: str | None,
    progress: Progress = stderr_progress,
) -> BackupResult:
    """``singura-vault backup``: embedded or external, as the settings say."""
    _check_output(output)
    if settings.embedded and backup_url is None:
        pgdata = settings.data_dir / "postgres"
        if not (pgdata / "PG_VERSION").is_file():
            raise BackupError(
                f"no embedded database in {settings.data_dir} (SINGURA_DATA_DIR); nothing to "
                "back up (set DATABASE_OWNER_URL or DATABASE_BACKUP_URL for an external one)"
            )
        results: list[BackupResult] = []

        async def dump(server: EmbeddedPostgres, _: str) -> None:
            cluster = server.cluster()
            progress(f"backup: embedded PostgreSQL in {settings.data_dir}")
            results.append(
                await backup_database(
                    cluster.dsn(cluster.superuser, setup.DATABASE_NAME),
                    output,
                    pg_dump=find_pg_tool("pg_dump", prefer_path=False),
                    env=embedded_tool_env(),
                    progress=progress,
                )
            )

        await _with_embedded(settings, dump)
        return results[0]
    if backup_url is not None and not backup_url.startswith(("postgresql://", "postgres://")):
        raise BackupError(f"{BACKUP_URL_VARIABLE} must be a PostgreSQL URL (postgresql://...)")
    dsn = backup_url or settings.database_owner_url
    if dsn is None:
        raise BackupError(
            f"backup needs {BACKUP_URL_VARIABLE} (a superuser, or a role with BYPASSRLS and "
            "pg_read_all_data) or DATABASE_OWNER_URL; DATABASE_URL's service role cannot "
            "read every organization"
        )
    return await backup_database(
        dsn,
        output,
        pg_dump=find_pg_tool("pg_dump", prefer_path=True),
        env=external_tool_env(),
        progress=progress,
    )


async def run_restore(
    settings: Settings,
    archive: Path,
    *,
    progress: Progress = stderr_progress,
) -> RestoreResult:
    """``singura-vault restore``: into the embedded ``singura`` database (roles and
    database are created first) or into DATABASE_OWNER_URL's database."""
    if settings.embedded:
        # The file first: no server is started for a file that is no backup.
        await inspect_archive(archive, pg_restore=find_pg_tool("pg_restore", prefer_path=False))
        results: list[RestoreResult] = []

        async def load(server: EmbeddedPostgres, superuser_dsn: str) -> None:
            progress(f"restore: embedded PostgreSQL in {settings.data_dir}")
            await setup.bootstrap_embedded_roles(superuser_dsn)
            results.append(
                await restore_database(
                    archive,
                    server.cluster().dsn(setup.OWNER_ROLE, setup.DATABASE_NAME),
                    pg_restore=find_pg_tool("pg_restore", prefer_path=False),
                    env=embedded_tool_env(),
                    progress=progress,
                    target_hint=(
                        f" (SINGURA_DATA_DIR={settings.data_dir} already holds one; restore "
                        "into a new, empty SINGURA_DATA_DIR)"
                    ),
                )
            )

        await _with_embedded(settings, load)
        _warn_missing_secrets(settings, progress)
        return results[0]
    if settings.database_owner_url is None:
        raise BackupError(
            "restore needs DATABASE_OWNER_URL (the schema owner's login) with an external "
            "DATABASE_URL"
        )
    return await restore_database(
        archive,
        settings.database_owner_url,
        pg_restore=find_pg_tool("pg_restore", prefer_path=True),
        env=external_tool_env(),
        progress=progress,
        target_hint=" (create a new database as in docs/operations.md)",
    )


def _warn_missing_secrets(settings: Settings, progress: Progress) -> None:
    """In embedded development mode, `serve` generates a root key and an auth secret when
    none is configured: new ones that open nothing in the restored database. Without the
    audit signing key it refuses to start once the restored database holds checkpoints."""
    data_dir = settings.data_dir
    missing = []
    root_key_set = settings.encryption_key is not None or settings.keyring_file is not None
    if not root_key_set and not (data_dir / DEVELOPMENT_KEYRING).exists():
        missing.append(f"{DEVELOPMENT_KEYRING} (or ENCRYPTION_KEY / SINGURA_KEYRING_FILE)")
    if settings.auth_secret is None and not (data_dir / DEVELOPMENT_AUTH_SECRET).exists():
        missing.append(f"{DEVELOPMENT_AUTH_SECRET} (or SINGURA_AUTH_SECRET)")
    if (
        settings.audit_signing_key_file is None
        and not (data_dir / DEVELOPMENT_SIGNING_KEY).exists()
    ):
        missing.append(f"{DEVELOPMENT_SIGNING_KEY} (or SINGURA_AUDIT_SIGNING_KEY_FILE)")
    if missing:
        progress(
            f"restore: warning: {data_dir} has no {' and no '.join(missing)}; copy the "
            "backed-up vault's files there before `serve`. Without the root key and auth "
            "secret it would generate new ones that cannot decrypt the restored credentials "
            "or check its API keys; without the key that signed the restored audit "
            "checkpoints it refuses to start (if that key is lost, start a new one with "
            "`singura-vault audit rotate-signing-key`: docs/backup-restore.md)"
        )
