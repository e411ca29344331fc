"""Declaring a pooler (DATABASE_POOLER, DATABASE_LISTEN_URL) and the start-up checks of
db/checks.check_server_settings: the connection budget against max_connections, and,
behind PgBouncer, the session settings the vault cannot send through it."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from structlog.testing import capture_logs

from singura_vault.config import PoolSettings, Settings
from singura_vault.config.environment import load_settings
from singura_vault.db.checks import ConnectionBudget, check_server_settings
from singura_vault.db.pool import Database
from singura_vault.db.setup import SERVICE_ROLE
from singura_vault.errors import ConfigError
from tests.support.pgbouncer import PgBouncer, pooled_role_defaults, running_pgbouncer
from tests.support.postgres import PostgresServer

POOLED = "pgbouncer-transaction"
EXTERNAL = "postgresql://vault@db.internal:5432/singura"
DIRECT = "postgresql://vault@db-primary.internal:5432/singura"


# -- configuration ------------------------------------------------------------------------


def test_a_declared_pooler_needs_a_direct_url_for_listen() -> None:
    """LISTEN through a transaction pooler would miss notifications silently, so the
    vault refuses to start without DATABASE_LISTEN_URL, and names it."""
    with pytest.raises(ConfigError, match="DATABASE_LISTEN_URL"):
        load_settings({"DATABASE_URL": EXTERNAL, "DATABASE_POOLER": POOLED})
    settings = load_settings(
        {"DATABASE_URL": EXTERNAL, "DATABASE_POOLER": POOLED, "DATABASE_LISTEN_URL": DIRECT}
    )
    assert (settings.pool.pooler, settings.database_listen_url) == (POOLED, DIRECT)
    plain = load_settings({"DATABASE_URL": EXTERNAL})
    assert (plain.pool.pooler, plain.database_listen_url) == ("none", None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_POOLER": "pgbouncer-session"}, "DATABASE_POOLER='pgbouncer-session'"),
        ({"DATABASE_POOLER": POOLED}, "embedded"),
        ({"DATABASE_LISTEN_URL": DIRECT}, "DATABASE_URL is not"),
        ({"DATABASE_URL": EXTERNAL, "DATABASE_LISTEN_URL": "db:5432"}, "DATABASE_LISTEN_URL"),
    ],
    ids=["unknown-pooler", "pooler-without-database-url", "listen-url-alone", "not-a-url"],
)
def test_pooler_settings_that_cannot_work_stop_the_vault(env: dict[str, str], message: str) -> None:
    """Each half-configured pooler setting is a ConfigError naming what to fix."""
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


async def test_listen_refuses_to_go_through_a_declared_pooler(service_dsn: str) -> None:
    """A pool opened behind a pooler without a listen URL does not LISTEN through it."""
    db = await Database.connect(service_dsn, PoolSettings(min_size=0, max_size=1, pooler=POOLED))
    try:
        with pytest.raises(ConfigError, match="DATABASE_LISTEN_URL"):
            await db.listen("singura_api_keys", lambda _p: None, lambda _s: None)
    finally:
        await db.close()


# -- the connection budget ------------------------------------------------------------------


def _settings(dsn: str, **env: str) -> Settings:
    return load_settings({"DATABASE_URL": dsn, **env})


async def _server_limits(superuser_dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(superuser_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('max_connections')::int AS m, "
            "current_setting('superuser_reserved_connections')::int AS r"
        )
    finally:
        await conn.close()
    assert row is not None
    return row["m"], row["r"]


def test_the_budget_arithmetic() -> None:
    """Direct: each process needs its pool and its LISTEN connection; behind a pooler
    only the LISTEN reaches PostgreSQL (the pools count against the pooler)."""
    direct = ConnectionBudget(
        processes=24, pool_max=20, pooler="none", max_connections=500, reserved=3
    )
    assert (direct.needed, direct.available, direct.fits) == (504, 497, False)
    pooled = ConnectionBudget(
        processes=24, pool_max=20, pooler=POOLED, max_connections=100, reserved=3
    )
    assert (pooled.needed, pooled.fits) == (24, True)


async def test_start_warns_once_when_the_pools_cannot_fit(
    postgres: PostgresServer, service_dsn: str
) -> None:
    """8 workers x DB_POOL_MAX 20 (+ a LISTEN each) is more than the test server's
    max_connections: one structured warning with the figures; the defaults fit."""
    max_connections, reserved = await _server_limits(postgres.superuser_dsn)
    with capture_logs() as events:
        budget = await check_server_settings(
            service_dsn, _settings(service_dsn, SINGURA_WORKERS="8", DB_POOL_MAX="20")
        )
    assert (budget.max_connections, budget.reserved) == (max_connections, reserved)
    assert budget.needed == 8 * 21 > budget.available
    warnings = [e for e in events if e["event"] == "db_connection_budget_exceeded"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert (warnings[0]["needed"], warnings[0]["available"]) == (168, max_connections - reserved)
    assert "DB_POOL_MAX" in warnings[0]["advice"]

    with capture_logs() as events:
        await check_server_settings(service_dsn, _settings(service_dsn))
    assert [e["event"] for e in events] == ["db_connection_budget"]
    assert events[0]["log_level"] == "info"
    assert events[0]["needed"] == 21


# -- behind PgBouncer -----------------------------------------------------------------------


@pytest.fixture
def pgbouncer(postgres: PostgresServer) -> Iterator[PgBouncer]:
    with running_pgbouncer(postgres.superuser_dsn, [SERVICE_ROLE], default_pool_size=2) as b:
        yield b


async def test_behind_pgbouncer_the_budget_counts_the_listen_connections(
    postgres: PostgresServer, database_name: str, service_dsn: str, pgbouncer: PgBouncer
) -> None:
    """The same 8 x 20 behind a declared pooler fits: PostgreSQL sees the 8 LISTEN
    connections, and the log says the pools count against the pooler."""
    await pooled_role_defaults(postgres.superuser_dsn, SERVICE_ROLE, database_name, PoolSettings())
    pooled = pgbouncer.dsn(SERVICE_ROLE, database_name)
    settings = _settings(
        pooled,
        SINGURA_WORKERS="8",
        DB_POOL_MAX="20",
        DATABASE_POOLER=POOLED,
        DATABASE_LISTEN_URL=service_dsn,
    )
    with capture_logs() as events:
        budget = await check_server_settings(pooled, settings)
    assert (budget.needed, budget.fits) == (8, True)
    assert [e["event"] for e in events] == ["db_connection_budget"]
    assert events[0]["pooler_clients"] == 160
    assert "pooler" in events[0]["counts"]


async def test_behind_pgbouncer_start_refuses_a_role_without_the_search_path(
    database_name: str, service_dsn: str, pgbouncer: PgBouncer
) -> None:
    """PgBouncer does not pass search_path on: without it as the role's default every
    unqualified name would resolve elsewhere, so start stops with the SQL to run."""
    pooled = pgbouncer.dsn(SERVICE_ROLE, database_name)
    settings = _settings(pooled, DATABASE_POOLER=POOLED, DATABASE_LISTEN_URL=service_dsn)
    with pytest.raises(ConfigError) as info:
        await check_server_settings(pooled, settings)
    assert "search_path" in str(info.value)
    assert f"ALTER ROLE {SERVICE_ROLE} IN DATABASE {database_name} SET" in str(info.value)


async def test_behind_pgbouncer_start_warns_when_the_role_timeouts_differ(
    postgres: PostgresServer, database_name: str, service_dsn: str, pgbouncer: PgBouncer
) -> None:
    """Role defaults made for DB_QUERY_TIMEOUT=60000 while this vault runs with 20000:
    the vault cannot apply its own through the pooler, so it says which differ."""
    await pooled_role_defaults(postgres.superuser_dsn, SERVICE_ROLE, database_name, PoolSettings())
    pooled = pgbouncer.dsn(SERVICE_ROLE, database_name)
    settings = _settings(
        pooled,
        DATABASE_POOLER=POOLED,
        DATABASE_LISTEN_URL=service_dsn,
        DB_QUERY_TIMEOUT="20000",
    )
    with capture_logs() as events:
        await check_server_settings(pooled, settings)
    differ = [e for e in events if e["event"] == "db_pooled_session_settings_differ"]
    assert len(differ) == 1
    assert differ[0]["settings"] == {
        name: {"vault": "20000", "server": "60000"}
        for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
    }
