"""Tenant isolation in the database itself, beneath the service layer.

These tests talk to PostgreSQL as the vault's own service role with no service
code in between, which is what a service-layer bug would amount to: whatever
SQL runs, row-level security confines it to the transaction's organization.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from singura_vault.db.pool import Database
from singura_vault.domain.connections import NewConnection, Platform
from singura_vault.domain.organizations import NewOrganization, Plan
from singura_vault.repositories.connections import ConnectionRepository
from singura_vault.repositories.organizations import OrganizationRepository


@pytest.fixture
async def two_tenants(db: Database) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """Organizations A and B, with one connection in A; returns (a, b, a_connection)."""
    orgs = OrganizationRepository(db)
    a, _ = await orgs.create(NewOrganization("A", "tenant-a", "a.example", Plan.FREE), None)
    b, _ = await orgs.create(NewOrganization("B", "tenant-b", "b.example", Plan.FREE), None)
    conn = await ConnectionRepository(db).create(
        NewConnection(a.id, Platform.SLACK, "U1", "T1", "A Slack"), None
    )
    return a.id, b.id, conn.id


@pytest.fixture
async def service_conn(service_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(service_dsn)
    yield conn
    await conn.close()


async def as_tenant(conn: asyncpg.Connection, org: uuid.UUID | None, sql: str) -> str:
    """Run one statement as the service role with the given tenant; return its status."""
    async with conn.transaction():
        if org is not None:
            await conn.execute("SELECT set_config('singura.organization_id', $1, true)", str(org))
        return await conn.execute(sql)


async def test_other_tenant_reads_updates_and_deletes_touch_zero_rows(
    two_tenants: tuple[uuid.UUID, uuid.UUID, uuid.UUID], service_conn: asyncpg.Connection
) -> None:
    """With B's setting, unfiltered SELECT/UPDATE/DELETE of connections touch 0 of A's rows."""
    a, b, _ = two_tenants
    assert await as_tenant(service_conn, b, "SELECT * FROM singura.platform_connections") == (
        "SELECT 0"
    )
    assert await as_tenant(
        service_conn, b, "UPDATE singura.platform_connections SET display_name = 'pwned'"
    ) == ("UPDATE 0")
    assert await as_tenant(service_conn, b, "DELETE FROM singura.platform_connections") == (
        "DELETE 0"
    )
    assert await as_tenant(service_conn, b, "DELETE FROM singura.organizations") == "DELETE 1"
    # Only B itself was deletable; A and its connection are untouched.
    assert await as_tenant(service_conn, a, "SELECT * FROM singura.platform_connections") == (
        "SELECT 1"
    )
    assert await as_tenant(service_conn, a, "SELECT * FROM singura.organizations") == "SELECT 1"


async def test_no_tenant_setting_sees_nothing(
    two_tenants: tuple[uuid.UUID, uuid.UUID, uuid.UUID], service_conn: asyncpg.Connection
) -> None:
    """Without a tenant setting the service role sees no tenant rows at all."""
    for table in (
        "organizations",
        "platform_connections",
        "encrypted_credentials",
        "data_keys",
        "audit_logs",
    ):
        assert await as_tenant(service_conn, None, f"SELECT * FROM singura.{table}") == "SELECT 0"


async def test_cannot_write_a_row_into_another_tenant(
    two_tenants: tuple[uuid.UUID, uuid.UUID, uuid.UUID], service_conn: asyncpg.Connection
) -> None:
    """Inserting or moving a row to another organization violates the policy."""
    a, b, conn_id = two_tenants
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="row-level security"):
        await as_tenant(
            service_conn,
            b,
            "INSERT INTO singura.platform_connections (organization_id, id, platform, "
            f"platform_user_id, display_name) VALUES ('{a}', gen_random_uuid(), 'slack', "
            "'U2', 'sneaky')",
        )
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="row-level security"):
        await as_tenant(
            service_conn,
            a,
            f"UPDATE singura.platform_connections SET organization_id = '{b}' "
            f"WHERE id = '{conn_id}'",
        )


async def test_admin_scope_lists_organizations_but_not_tenant_data(
    two_tenants: tuple[uuid.UUID, uuid.UUID, uuid.UUID], service_conn: asyncpg.Connection
) -> None:
    """Admin scope sees every organization row, but no connection and cannot update orgs."""
    async with service_conn.transaction():
        await service_conn.execute("SELECT set_config('singura.scope', 'admin', true)")
        assert await service_conn.execute("SELECT * FROM singura.organizations") == "SELECT 2"
        assert await service_conn.execute("SELECT * FROM singura.platform_connections") == (
            "SELECT 0"
        )
        assert await service_conn.execute("UPDATE singura.organizations SET name = 'x'") == (
            "UPDATE 0"
        )


async def test_service_role_cannot_bypass_or_disable_rls(
    service_conn: asyncpg.Connection, db: Database
) -> None:
    """The service role is no superuser, has no BYPASSRLS, owns nothing, and cannot ALTER."""
    role = await db.service_role()
    assert (role.superuser, role.bypass_rls, role.owned_relations) == (False, False, 0)
    assert role.in_service_group
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await service_conn.execute(
            "ALTER TABLE singura.platform_connections DISABLE ROW LEVEL SECURITY"
        )
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await service_conn.execute("SET row_security = off; SELECT * FROM singura.organizations")
    forced = await service_conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'singura' AND c.relkind = 'r' "
        "AND c.relrowsecurity AND c.relforcerowsecurity ORDER BY 1"
    )
    assert [r["relname"] for r in forced] == [
        "audit_logs",
        "audit_pending",
        "connection_refresh_state",
        "credential_expiry_notices",
        "data_keys",
        "encrypted_credentials",
        "events",
        "oauth_authorizations",
        "oauth_clients",
        "organization_key_migrations",
        "organization_key_providers",
        "organizations",
        "platform_connections",
        "provider_signals_seen",
        "webhook_attempts",
        "webhook_deliveries",
        "webhook_endpoints",
    ]


async def test_audit_log_is_append_only_for_the_service_role(
    two_tenants: tuple[uuid.UUID, uuid.UUID, uuid.UUID], service_conn: asyncpg.Connection
) -> None:
    """The service role may insert audit events but not update, delete or truncate them,
    chained or pending."""
    a, _, _ = two_tenants
    for statement in (
        "UPDATE singura.audit_logs SET actor = 'x'",
        "DELETE FROM singura.audit_logs",
        "TRUNCATE singura.audit_logs",
        "UPDATE singura.audit_pending SET actor = 'x'",
        "DELETE FROM singura.audit_pending",
        "TRUNCATE singura.audit_pending",
    ):
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await as_tenant(service_conn, a, statement)


async def test_one_statement_reads_keep_the_fence_and_leave_no_setting_behind(
    two_tenants: tuple[uuid.UUID, uuid.UUID, uuid.UUID], service_conn: asyncpg.Connection
) -> None:
    """The one-round-trip read functions (migration 013) run under row-level security:
    in B's scope, A's connection is not there even when asked for by A's id; the scope
    ends with the statement; and they accept no setting but a request scope."""
    a, b, conn = two_tenants
    get = "SELECT * FROM singura.connection_get_scoped($1, $2, 'actor', '', $3, $4)"
    scope = "singura.organization_id"
    assert len(await service_conn.fetch(get, scope, str(a), a, conn)) == 1
    assert await service_conn.fetch(get, scope, str(b), a, conn) == []
    # Autocommit: the statement was its own transaction, so its settings are gone.
    assert await service_conn.fetchval("SELECT singura.current_organization_id()") is None
    assert await service_conn.fetchval("SELECT count(*) FROM singura.platform_connections") == 0
    with pytest.raises(asyncpg.exceptions.InvalidParameterValueError, match="not a request scope"):
        await service_conn.fetch(get, "row_security", "off", a, conn)
