"""Restoring a logical backup of the vault's database (docs/backup-restore.md).

The archive is one ``singura-vault backup`` wrote (backup.py): ``pg_restore`` loads it,
as the schema owner, into a database that has no ``singura`` schema, in one
transaction (``--single-transaction``): it either lands whole or leaves the database
as it was. Objects are re-owned by the restoring role (``--no-owner``), so the owner's
name may differ between source and target; the service group role
(``SERVICE_GROUP_ROLE``, db/checks.py) must exist, as the grants name it.

Who runs the tool:

- **Embedded mode**: the wheel's ``pg_restore`` restores as ``singura_owner`` into the
  ``singura`` database, created (with the roles) first if missing.
- **External mode**: ``pg_restore`` from PATH (else the wheel's), as
  ``DATABASE_OWNER_URL``.

The vault's migrations are not applied here: ``serve`` or ``migrate up`` applies any
that are newer than the backup. Before loading anything, a restore refuses a file that
is no vault backup and a target that is not empty.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from singura_vault.backup import (
    SCHEMA,
    BackupError,
    Progress,
    find_pg_tool,
    stderr_progress,
    with_embedded,
)
from singura_vault.config import Settings
from singura_vault.db import setup
from singura_vault.db.checks import SERVICE_GROUP_ROLE
from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.db.migrations import MigrationStatus
from singura_vault.db.pg_tools import (
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
from singura_vault.repositories.backup_checks import DatabaseCheckError, restore_target_facts

__all__ = [
    "RestoreResult",
    "check_restore_target",
    "inspect_archive",
    "restore_database",
    "run_restore",
]

_ARCHIVE_MAGIC = b"PGDMP"
# pg_restore --verbose lines that say which table's rows are being copied.
_RESTORE_TABLE = re.compile(r'processing data for table "([^"]+)"')
# "3261; 0 16412 TABLE DATA singura organizations singura_owner" in pg_restore --list.
_TOC_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")
_TOC_SCHEMA = re.compile(r"^\d+; \d+ \d+ SCHEMA - (\S+) ")


@dataclass(frozen=True)
class RestoreResult:
    """What ``restore_database`` restored, and where the schema now stands."""

    tables: tuple[str, ...]
    migrations: MigrationStatus = field(repr=False)


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
        facts = await restore_target_facts(owner_dsn, SCHEMA, SERVICE_GROUP_ROLE)
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
            f"role {SERVICE_GROUP_ROLE} does not exist in the target cluster; the backup's "
            "grants name it: create it first (docs/operations.md, 'SQL for the DBA')"
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


# -- the CLI command ---------------------------------------------------------------------


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

        await with_embedded(settings, load)
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
