"""What the vault checks of its PostgreSQL before it serves: the login role (bound by
row-level security), the server's connection limits and, behind a transaction pooler,
the session settings the vault cannot send itself.

They read the server's catalogue and settings and refuse (ConfigError) or warn; they
change nothing. The pool (db/pool.py) runs the role check on its own connections;
db/setup.py runs the settings check once at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from singura_vault.config import Pooler, Settings
from singura_vault.db.errors import map_driver_errors
from singura_vault.errors import ConfigError, InvariantBroken
from singura_vault.logs import get_logger

log = get_logger(__name__)

# The role every vault login role must be a member of; migrations grant to it.
SERVICE_GROUP_ROLE = "singura_app"

# "Owns" includes membership in the owning role: a member could SET ROLE to
# the owner and disable row-level security.
_ROLE_CHECK_SQL = """
SELECT r.rolname,
       r.rolsuper,
       r.rolbypassrls,
       pg_has_role(current_user, $1, 'MEMBER') AS in_group,
       (SELECT count(*) FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'singura' AND c.relkind IN ('r', 'p')
           AND pg_has_role(current_user, c.relowner, 'MEMBER'))
     + (SELECT count(*) FROM pg_namespace n
         WHERE n.nspname = 'singura' AND pg_has_role(current_user, n.nspowner, 'MEMBER'))
       AS owned
  FROM pg_roles r
 WHERE r.rolname = current_user
"""


@dataclass(frozen=True)
class ServiceRole:
    """What the runtime login role may do, as PostgreSQL reports it."""

    name: str
    superuser: bool
    bypass_rls: bool
    in_service_group: bool
    owned_relations: int


async def read_service_role(conn: Any) -> ServiceRole:
    """The powers of ``conn``'s login role, as PostgreSQL reports them."""
    row = await conn.fetchrow(_ROLE_CHECK_SQL, SERVICE_GROUP_ROLE)
    if row is None:
        raise InvariantBroken("service_role: row is None")
    return ServiceRole(
        name=row["rolname"],
        superuser=row["rolsuper"],
        bypass_rls=row["rolbypassrls"],
        in_service_group=row["in_group"],
        owned_relations=row["owned"],
    )


def refuse_unsafe_service_role(role: ServiceRole, variable: str) -> None:
    """Refuse to serve as a role that row-level security would not bind; ``variable``
    names the setting the pool was opened from, for the message."""
    fix = (
        f"connect {variable} as a login role that is a member of "
        f"{SERVICE_GROUP_ROLE}, owns nothing and has no BYPASSRLS "
        "(docs/operations.md shows the SQL)"
    )
    if role.superuser or role.bypass_rls:
        raise ConfigError(
            f"{variable} connects as role {role.name!r}, which bypasses row-level "
            f"security (superuser or BYPASSRLS); {fix}"
        )
    if role.owned_relations:
        raise ConfigError(
            f"{variable} connects as role {role.name!r}, which owns (or is a member "
            f"of the owner of) {role.owned_relations} vault tables or the schema and "
            f"could disable row-level security; {fix}"
        )
    if not role.in_service_group:
        raise ConfigError(f"role {role.name!r} is not a member of {SERVICE_GROUP_ROLE}; {fix}")


async def setup_connection(dsn: str) -> asyncpg.Connection:
    """One connection for setup work; an unreachable server becomes Unavailable.
    Without a statement cache: setup runs each statement about once, and DATABASE_URL
    may lead through a transaction pooler, where a cached (named) prepared statement
    would be looked for on another server connection."""
    with map_driver_errors():
        return await asyncpg.connect(dsn, timeout=10, statement_cache_size=0)


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
    conn = await setup_connection(dsn)
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
