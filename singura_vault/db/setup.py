"""Get a database ready to serve: embedded or external, roles, migrations, safety checks.

Embedded mode (no DATABASE_URL): start PostgreSQL from the wheel in the data
dir, then, as its superuser, create three roles and the ``singura`` database:
``singura_owner`` (owns the schema, runs migrations), ``singura_app`` (NOLOGIN
group that migrations grant privileges to) and ``singura_service`` (the login
the vault serves as: member of singura_app, owns nothing, no BYPASSRLS).

External mode: DATABASE_URL is the service login; DATABASE_OWNER_URL, if set,
is used to apply migrations first. Either way the vault refuses to serve as a
role that row-level security would not bind.

Once at start, `serve` reads the server's connection limits and warns when this
host's pools cannot all fit (the connection budget, docs/scaling.md), and, behind
a declared transaction pooler, checks that the connections it gets carry the
session settings the vault cannot send through the pooler (db/checks.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from singura_vault.config import Settings
from singura_vault.db.checks import check_server_settings, setup_connection
from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.db.errors import map_driver_errors
from singura_vault.db.migrations import (
    MigrationError,
    MigrationStatus,
    default_migrations_dir,
    migrate_up,
    migration_status,
)
from singura_vault.db.reachability import wait_until_reachable
from singura_vault.db.serve_lock import ServeLock, serving
from singura_vault.errors import ConfigError
from singura_vault.logs import get_logger

log = get_logger(__name__)

DATABASE_NAME = "singura"
OWNER_ROLE = "singura_owner"
SERVICE_ROLE = "singura_service"

# Role and database names are fixed identifiers (never user input), so they are
# written into the DDL directly; DDL cannot take $n parameters.
_BOOTSTRAP_ROLES_SQL = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'singura_owner') THEN
        CREATE ROLE singura_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'singura_app') THEN
        CREATE ROLE singura_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'singura_service') THEN
        CREATE ROLE singura_service LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
            IN ROLE singura_app;
    END IF;
END
$$;
"""


@dataclass(frozen=True)
class PreparedDatabase:
    """Where to connect, and the embedded server to stop at shutdown (if any)."""

    service_dsn: str
    embedded: EmbeddedPostgres | None


async def bootstrap_embedded_roles(superuser_dsn: str, database: str = DATABASE_NAME) -> None:
    """Create the vault's roles and database in a cluster we are superuser of."""
    conn = await setup_connection(superuser_dsn)
    try:
        with map_driver_errors():
            await conn.execute(_BOOTSTRAP_ROLES_SQL)
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{database}" OWNER singura_owner')
    finally:
        await conn.close()


async def apply_migrations(owner_dsn: str, directory: Path | None = None) -> int:
    """Apply pending migrations as the owner; returns how many were applied."""
    conn = await setup_connection(owner_dsn)
    try:
        applied = await migrate_up(conn, directory or default_migrations_dir())
    finally:
        await conn.close()
    return len(applied)


async def read_migration_status(dsn: str, directory: Path | None = None) -> MigrationStatus:
    """Compare the migration files with the database's history."""
    conn = await setup_connection(dsn)
    try:
        return await migration_status(conn, directory or default_migrations_dir())
    finally:
        await conn.close()


async def ensure_schema_current(dsn: str, directory: Path | None = None) -> None:
    """Refuse to serve against a schema older (or newer, or edited) than this vault."""
    status = await read_migration_status(dsn, directory)
    if status.problems:
        raise MigrationError("; ".join(status.problems))
    if status.pending:
        names = ", ".join(m.filename for m in status.pending)
        raise ConfigError(
            f"the database schema is behind this vault (pending: {names}); run "
            "`singura-vault migrate up` with DATABASE_OWNER_URL set, or set "
            "DATABASE_OWNER_URL so that `serve` applies them"
        )


def prepare_embedded(settings: Settings) -> tuple[EmbeddedPostgres, str, str, str]:
    """Start the embedded server; returns (server, superuser, owner and service DSNs)."""
    server = EmbeddedPostgres(settings.data_dir)
    cluster = server.start()
    return (
        server,
        cluster.dsn(cluster.superuser, "postgres"),
        cluster.dsn(OWNER_ROLE, DATABASE_NAME),
        cluster.dsn(SERVICE_ROLE, DATABASE_NAME),
    )


def claim_data_dir(settings: Settings) -> ServeLock:
    """For `serve` in embedded mode, before anything is written to the data directory:
    check that the embedded server could live there (path, parents traversable by its
    OS user), make the directory, and take its serve lock (ConfigError if another
    serve holds it)."""
    EmbeddedPostgres(settings.data_dir).prepare_data_dir()
    return ServeLock.acquire(settings.data_dir, settings.listen)


@asynccontextmanager
async def embedded_for_command(
    settings: Settings,
) -> AsyncIterator[tuple[EmbeddedPostgres, str, str, str]]:
    """The embedded server for a one-off command (migrate, prune, backup, restore):
    started if it is not running, and stopped afterwards only if this command started
    it and no ``serve`` has taken the data directory meanwhile (that serve now owns the
    server: db/serve_lock.py), so that a running ``serve`` is left alone. Yields what
    :func:`prepare_embedded` returns."""
    server = EmbeddedPostgres(settings.data_dir)
    started_here = not server.is_running()
    prepared = await asyncio.to_thread(prepare_embedded, settings)
    try:
        yield prepared
    finally:
        if started_here and serving(settings.data_dir) is None:
            await asyncio.to_thread(server.stop)


# An external database (DATABASE_OWNER_URL set) serves through the service role's URL.
NEEDS_DATABASE_URL = (
    "DATABASE_OWNER_URL is set but DATABASE_URL is not: with an external PostgreSQL the "
    "vault connects as the service role through DATABASE_URL (docs/operations.md); unset "
    "DATABASE_OWNER_URL to use the embedded PostgreSQL instead"
)


async def prepare_database(settings: Settings) -> PreparedDatabase:
    """Start (if embedded), bootstrap, migrate and check; ready for Database.connect."""
    if settings.embedded:
        server, superuser_dsn, owner_dsn, service_dsn = await asyncio.to_thread(
            prepare_embedded, settings
        )
        await bootstrap_embedded_roles(superuser_dsn)
        await apply_migrations(owner_dsn)
        await check_server_settings(service_dsn, settings)
        return PreparedDatabase(service_dsn, server)
    if settings.database_url is None:
        raise ConfigError(NEEDS_DATABASE_URL)
    if settings.database_owner_url is not None:
        await wait_until_reachable(
            settings.database_owner_url, "DATABASE_OWNER_URL", settings.db_wait_s
        )
        await apply_migrations(settings.database_owner_url)
    await wait_until_reachable(settings.database_url, "DATABASE_URL", settings.db_wait_s)
    if settings.database_listen_url is not None:
        await wait_until_reachable(
            settings.database_listen_url, "DATABASE_LISTEN_URL", settings.db_wait_s
        )
    await check_server_settings(settings.database_url, settings)
    await ensure_schema_current(settings.database_url)
    return PreparedDatabase(settings.database_url, None)
