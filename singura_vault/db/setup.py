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
session settings the vault cannot send through the pooler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from singura_vault.config import Pooler, Settings
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
from singura_vault.errors import ConfigError, InvariantBroken
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


async def _connect(dsn: str) -> asyncpg.Connection:
    """One connection for setup work; an unreachable server becomes Unavailable.
    Without a statement cache: setup runs each statement about once, and DATABASE_URL
    may lead through a transaction pooler, where a cached (named) prepared statement
    would be looked for on another server connection."""
    with map_driver_errors():
        return await asyncpg.connect(dsn, timeout=10, statement_cache_size=0)


@dataclass(frozen=True)
class PreparedDatabase:
    """Where to connect, and the embedded server to stop at shutdown (if any)."""

    service_dsn: str
    embedded: EmbeddedPostgres | None


async def bootstrap_embedded_roles(superuser_dsn: str, database: str = DATABASE_NAME) -> None:
    """Create the vault's roles and database in a cluster we are superuser of."""
    conn = await _connect(superuser_dsn)
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
    conn = await _connect(owner_dsn)
    try:
        applied = await migrate_up(conn, directory or default_migrations_dir())
    finally:
        await conn.close()
    return len(applied)


async def read_migration_status(dsn: str, directory: Path | None = None) -> MigrationStatus:
    """Compare the migration files with the database's history."""
    conn = await _connect(dsn)
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


@dataclass(frozen=True)
class ConnectionBudget:
    """The connections this host's vault processes open on PostgreSQL itself, against
    the slots PostgreSQL has for a role like the service role (docs/scaling.md)."""

    processes: int
    pool_max: int
    pooler: Pooler
    max_connections: int
    reserved: int  # superuser_reserved_connections (+ reserved_connections, PostgreSQL 16+)

    @property
    def per_process(self) -> int:
        """Each process's pool (unless a pooler takes it) and its LISTEN connection."""
        return 1 if self.pooler != "none" else self.pool_max + 1

    @property
    def needed(self) -> int:
        return self.processes * self.per_process

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved

    @property
    def fits(self) -> bool:
        return self.needed <= self.available


_SERVER_LIMITS_SQL = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
     + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,
       current_schemas(false) AS schemas,
       format('ALTER ROLE %I IN DATABASE %I SET', current_user, current_database()) AS alter_role
"""

# Of PoolSettings.session_settings(), what a role default must supply behind a pooler.
# The keepalives are left out: PostgreSQL applies them to the pooler's own connection,
# which PgBouncer's tcp_keepalive settings look after (and a Unix socket has none).
_POOLED_SESSION_CHECKED = (
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
)


async def check_server_settings(dsn: str, settings: Settings) -> ConnectionBudget:
    """Read the server's connection limits once at start and log the connection budget
    (a warning when this host's processes alone cannot all connect). Behind a declared
    pooler, also refuse connections without the vault's search_path (every unqualified
    name would resolve elsewhere) and warn when the timeouts differ from
    DB_QUERY_TIMEOUT: there they are the login role's defaults, not what the vault
    sends."""
    pool = settings.pool
    conn = await _connect(dsn)
    try:
        with map_driver_errors():
            row = await conn.fetchrow(_SERVER_LIMITS_SQL)
            if row is None:
                raise InvariantBroken("check_server_settings: row is None")
            rows = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                list(_POOLED_SESSION_CHECKED),
            )
            actual: dict[str, str] = {r["name"]: r["setting"] for r in rows}
    finally:
        await conn.close()
    if pool.pooler != "none":
        _check_pooled_session(settings, row["schemas"], actual, row["alter_role"])
    budget = ConnectionBudget(
        processes=settings.workers,
        pool_max=pool.max_size,
        pooler=pool.pooler,
        max_connections=row["max_connections"],
        reserved=row["reserved"],
    )
    _log_budget(budget)
    return budget


def _check_pooled_session(
    settings: Settings, schemas: list[str], actual: dict[str, str], alter_role: str
) -> None:
    pooler = settings.pool.pooler
    if schemas[:1] != ["singura"]:
        raise ConfigError(
            f"DATABASE_POOLER={pooler}: the pooler does not pass the vault's search_path "
            f"on, and the connections it gives have search_path {', '.join(schemas) or '(empty)'}"
            f"; make it the service role's default: {alter_role} search_path = singura; "
            "then let the pooler open new server connections (docs/operations.md#behind-pgbouncer)"
        )
    wanted = settings.pool.session_settings()
    differ = {
        name: {"vault": wanted[name], "server": actual.get(name)}
        for name in _POOLED_SESSION_CHECKED
        if actual.get(name) != wanted[name]
    }
    if differ:
        log.warning(
            "db_pooled_session_settings_differ",
            pooler=pooler,
            settings=differ,
            fix=f"{alter_role} <name> = <value> for each (milliseconds, DB_QUERY_TIMEOUT)",
        )


def _log_budget(budget: ConnectionBudget) -> None:
    fields: dict[str, object] = {
        "processes": budget.processes,
        "pool_max": budget.pool_max,
        "needed": budget.needed,
        "max_connections": budget.max_connections,
        "reserved": budget.reserved,
        "available": budget.available,
        "pooler": budget.pooler,
    }
    if budget.pooler != "none":
        # The pools connect to the pooler; PostgreSQL sees the pooler's server
        # connections (its pool sizes, which the vault cannot read) and the LISTENs.
        fields["pooler_clients"] = budget.processes * budget.pool_max
        fields["counts"] = "LISTEN connections only; the pools count against the pooler"
    if budget.fits:
        log.info("db_connection_budget", **fields)
        return
    log.warning(
        "db_connection_budget_exceeded",
        **fields,
        advice=(
            "this host's vault processes alone need more connections than PostgreSQL "
            "allows the service role: lower DB_POOL_MAX or the worker count, raise "
            "max_connections, or put PgBouncer in between (docs/scaling.md#the-connection-budget)"
        ),
    )


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
