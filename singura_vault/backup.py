"""Logical backup of the vault's database (docs/backup-restore.md); restore.py loads one.

A backup is ``pg_dump --format=custom --schema=singura``: every table of the vault
(``schema_migrations`` included, which lives in that schema), its functions, triggers,
row-level security policies and grants, and their rows. What it holds is ciphertext,
wrapped data keys, API-key digests and the audit trail; it is useless without the root
key and ``SINGURA_AUTH_SECRET``, which are never in the database.

Who runs the tools:

- **Embedded mode** (neither ``DATABASE_URL`` nor ``DATABASE_OWNER_URL`` set): the wheel's
  ``pg_dump`` connects as the cluster's superuser over the private Unix socket. As root
  the tools run as root: they are clients, and only the server refuses root.
- **External mode**: ``pg_dump`` from PATH (else the wheel's). It connects as
  ``DATABASE_BACKUP_URL``, else ``DATABASE_OWNER_URL``, and must bypass row-level
  security: the tenant tables are ``FORCE ROW LEVEL SECURITY``, so even their owner sees
  only the organization its session names, and a dump as the owner would be refused
  (or, with ``--enable-row-security``, silently incomplete). We check this before
  dumping.

What backup and restore share lives here too: the schema name, ``BackupError``, the
progress reporter, locating the tools and running a command against the embedded
server. Passwords never go on a command line (other users can read it): a password in
a URL is moved to ``PGPASSWORD`` in the tool's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from singura_vault.config import Settings
from singura_vault.db import pg_tools, setup
from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.db.pg_tools import (
    Tool,
    embedded_tool_env,
    external_tool_env,
    libpq_target,
    run_streaming,
    tool_failure,
    tool_version,
)
from singura_vault.private_files import fsync_directory, link_without_replacing
from singura_vault.repositories.backup_checks import DatabaseCheckError, backup_source_facts

__all__ = [
    "SCHEMA",
    "BackupError",
    "BackupResult",
    "Progress",
    "backup_database",
    "check_backup_source",
    "find_pg_tool",
    "libpq_target",
    "run_backup",
    "stderr_progress",
    "with_embedded",
]

SCHEMA = "singura"
BACKUP_URL_VARIABLE = "DATABASE_BACKUP_URL"

Progress = Callable[[str], None]

_LOCK_WAIT_TIMEOUT = "60s"
_TAKEN = "{output} appeared while the backup ran; nothing was replaced"
# pg_dump --verbose lines that say which table's rows are being copied.
_DUMP_TABLE = re.compile(r'dumping contents of table "([^"]+)"')


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


# -- the CLI command ------------------------------------------------------------------------


async def with_embedded(
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

        await with_embedded(settings, dump)
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
