"""The migration runner: append-only SQL files applied in order, once each.

Files are ``migrations/NNN_description.sql``. Each is applied in its own
transaction and recorded in ``singura.schema_migrations`` with a SHA-256 of its
bytes; a file edited after it was applied is refused, because the databases
that already ran it would silently differ from new ones. Runs hold a
PostgreSQL advisory lock, so several vault processes starting together apply
each migration exactly once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import asyncpg

from singura_vault.db.errors import map_driver_errors

_FILE_PATTERN = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# Arbitrary but fixed: the advisory-lock key that serializes migration runs.
_MIGRATION_LOCK_KEY = 0x5147_0001

_BOOTSTRAP_SQL = """
CREATE SCHEMA IF NOT EXISTS singura;
CREATE TABLE IF NOT EXISTS singura.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(Exception):
    """The migration files or the applied history are inconsistent."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path
    checksum: str

    @property
    def filename(self) -> str:
        return self.path.name

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class AppliedMigration:
    """A row of singura.schema_migrations."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class MigrationStatus:
    """What is applied, what is pending, and what is wrong."""

    applied: tuple[AppliedMigration, ...]
    pending: tuple[Migration, ...]
    problems: tuple[str, ...]


def default_migrations_dir() -> Path:
    """The migrations shipped with the package (wheel) or in the source tree."""
    packaged = Path(str(resources.files("singura_vault"))) / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Path) -> tuple[Migration, ...]:
    """Read and order the migration files; refuse malformed names and gaps."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name}: migration files must be named NNN_description.sql "
                "(three digits, lowercase letters, digits and underscores)"
            )
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        migrations.append(Migration(int(match[1]), match[2], path, checksum))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{migration.filename}: expected migration number {expected:03d}; "
                "numbers must be consecutive and unique"
            )
    return tuple(migrations)


async def migration_status(conn: asyncpg.Connection, directory: Path) -> MigrationStatus:
    """Compare the files with the database's history (does not change anything)."""
    files = load_migrations(directory)
    with map_driver_errors():
        exists = await conn.fetchval("SELECT to_regclass('singura.schema_migrations') IS NOT NULL")
        rows = (
            await conn.fetch(
                "SELECT version, name, checksum, applied_at "
                "FROM singura.schema_migrations ORDER BY version"
            )
            if exists
            else []
        )
    applied = tuple(AppliedMigration(**dict(row)) for row in rows)
    return _compare(files, applied)


async def migrate_up(conn: asyncpg.Connection, directory: Path) -> tuple[Migration, ...]:
    """Apply every pending migration, each in its own transaction; return those applied.

    ``conn`` must be the schema owner's connection (DATABASE_OWNER_URL).
    """
    applied_now: list[Migration] = []
    with map_driver_errors():
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            await conn.execute(_BOOTSTRAP_SQL)
            status = await migration_status(conn, directory)
            if status.problems:
                raise MigrationError("; ".join(status.problems))
            for migration in status.pending:
                async with conn.transaction():
                    await conn.execute(migration.sql())
                    await conn.execute(
                        "INSERT INTO singura.schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(migration)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return tuple(applied_now)


def create_migration_file(directory: Path, name: str) -> Path:
    """Write an empty, numbered migration file and return its path."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise MigrationError("a migration name needs at least one letter or digit")
    existing = load_migrations(directory)
    version = len(existing) + 1
    path = directory / f"{version:03d}_{slug}.sql"
    path.write_text(
        f"-- {version:03d}_{slug}: describe what this migration does and why.\n"
        "-- Migrations are append-only: once applied anywhere, never edit this file.\n",
        encoding="utf-8",
    )
    return path


def _compare(
    files: tuple[Migration, ...], applied: tuple[AppliedMigration, ...]
) -> MigrationStatus:
    by_version = {m.version: m for m in files}
    problems: list[str] = []
    for row in applied:
        file = by_version.get(row.version)
        if file is None:
            problems.append(
                f"migration {row.version:03d}_{row.name} is applied in the database but "
                "its file is missing; this vault is older than the database schema"
            )
        elif file.checksum != row.checksum:
            problems.append(
                f"{file.filename} was edited after it was applied (checksum "
                f"{row.checksum[:12]} in the database, {file.checksum[:12]} on disk); "
                "migrations are append-only: revert the edit and put the change in a "
                "new migration (singura-vault migrate create NAME)"
            )
    done = {row.version for row in applied}
    pending = tuple(m for m in files if m.version not in done)
    return MigrationStatus(applied=applied, pending=pending, problems=tuple(problems))
