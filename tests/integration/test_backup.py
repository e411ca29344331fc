"""Backup and restore (singura_vault.backup): a dump restores into an empty database
and serves the same values with the same keys, and nothing readable without them."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from singura_vault import backup, keys, restore
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.config.environment import load_settings
from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.db.pool import Database
from singura_vault.db.setup import OWNER_ROLE, SERVICE_ROLE
from singura_vault.proto.singura.vault.v1 import audit_pb2, audit_pb2_grpc
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as pb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.canaries import canary
from tests.support.messages import connection_message, org_message
from tests.support.postgres import PostgresServer
from tests.support.status import expect_status
from tests.support.vault import Stubs, Vault, start_vault, stop_vault

ACCESS = pb.CREDENTIAL_TYPE_ACCESS_TOKEN
REFRESH = pb.CREDENTIAL_TYPE_REFRESH_TOKEN
POOL = PoolSettings(min_size=1, max_size=3, connect_timeout_ms=5000)

# Row-level security, owners' view of the schema, triggers and policies: what a
# restore must bring back exactly (owners may differ: --no-owner re-owns to the restorer).
SCHEMA_SHAPE_SQL = """
SELECT
    (SELECT array_agg(format('%s rls=%s force=%s', relname, relrowsecurity, relforcerowsecurity)
                      ORDER BY relname)
       FROM pg_class WHERE relnamespace = 'singura'::regnamespace AND relkind = 'r') AS tables,
    (SELECT array_agg(format('%s.%s', c.relname, p.polname) ORDER BY c.relname, p.polname)
       FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
      WHERE c.relnamespace = 'singura'::regnamespace) AS policies,
    (SELECT array_agg(format('%s.%s', c.relname, t.tgname) ORDER BY c.relname, t.tgname)
       FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
      WHERE c.relnamespace = 'singura'::regnamespace AND NOT t.tgisinternal) AS triggers,
    (SELECT array_agg(format('%s %s', c.relname, c.relacl) ORDER BY c.relname)
       FROM pg_class c WHERE c.relnamespace = 'singura'::regnamespace
        AND c.relkind = 'r') AS grants
"""


async def tenant_with_connection(stubs: Stubs) -> tuple[str, str]:
    org = (
        await stubs.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message())
        )
    ).organization
    conn = (
        await stubs.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org.id))
        )
    ).connection
    return org.id, conn.id


async def store(stubs: Stubs, org: str, conn: str, value: str, type_: int = ACCESS) -> None:
    await stubs.credentials.StoreCredential(
        pb.StoreCredentialRequest(organization_id=org, connection_id=conn, type=type_, value=value)
    )


def reveal_call(stubs: Stubs, org: str, conn: str, type_: int = ACCESS, version: int = 0) -> object:
    return stubs.credentials.RevealCredential(
        pb.RevealCredentialRequest(
            organization_id=org, connection_id=conn, type=type_, version=version
        )
    )


async def reveal(stubs: Stubs, org: str, conn: str, type_: int = ACCESS, version: int = 0) -> str:
    response = await stubs.credentials.RevealCredential(
        pb.RevealCredentialRequest(
            organization_id=org, connection_id=conn, type=type_, version=version
        )
    )
    return response.value


async def verify_chain(stubs: Stubs, org: str) -> audit_pb2.VerifyAuditChainResponse:
    return await audit_pb2_grpc.AuditServiceStub(stubs.channel).VerifyAuditChain(
        audit_pb2.VerifyAuditChainRequest(organization_id=org)
    )


async def superuser_execute(postgres: PostgresServer, sql: str) -> None:
    conn = await asyncpg.connect(postgres.superuser_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def schema_shape(dsn: str) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(SCHEMA_SHAPE_SQL)
    finally:
        await conn.close()
    assert row is not None
    return row


@pytest.fixture
async def empty_database(postgres: PostgresServer) -> AsyncIterator[str]:
    """A new, empty database owned by the schema owner (template1: no vault schema)."""
    name = f"singura_restore_{uuid.uuid4().hex[:12]}"
    await superuser_execute(postgres, f'CREATE DATABASE "{name}" OWNER {OWNER_ROLE}')
    yield name
    await superuser_execute(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def vault_on(dsn: str, root_key: str, auth_secret: bytes) -> tuple[Database, Vault]:
    """An in-process vault on another database, with the given root key and auth secret."""
    db = await Database.connect(dsn, POOL)
    manager = keys.KeyManager(keys.LocalKeyring.from_encryption_key(root_key))
    access = build_access(db, auth_secret)
    return db, await start_vault(Components(db, key_manager=manager, access=access))


async def sql_text(archive: Path) -> str:
    """The archive as SQL (pg_restore --file=-), to search it for plaintext."""
    tool = backup.find_pg_tool("pg_restore", prefer_path=False)
    process = await asyncio.create_subprocess_exec(
        str(tool),
        "--file=-",
        str(archive),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode(errors="replace")


async def test_backup_restores_into_an_empty_database_and_needs_the_same_keys(
    vault: Vault,
    postgres: PostgresServer,
    database_name: str,
    owner_dsn: str,
    empty_database: str,
    root_key: str,
    auth_secret: bytes,
    tmp_path: Path,
) -> None:
    """Back up a vault, restore it into a fresh database and serve it again: with the
    same root key and auth secret every value, API key and audit chain is back; with
    another root key a reveal fails with a message about the key, never with garbage."""
    org, conn = await tenant_with_connection(vault)
    first, second, refresh = canary("backup-v1"), canary("backup-v2"), canary("backup-refresh")
    await store(vault, org, conn, first)
    await store(vault, org, conn, second)
    await store(vault, org, conn, refresh, REFRESH)
    assert await reveal(vault, org, conn) == second

    pg_dump = backup.find_pg_tool("pg_dump", prefer_path=False)
    pg_restore = backup.find_pg_tool("pg_restore", prefer_path=False)
    archive = tmp_path / "vault.dump"

    # The owner is bound by FORCE ROW LEVEL SECURITY: refused up front, no file left.
    with pytest.raises(backup.BackupError, match="row-level security binds"):
        await backup.backup_database(
            owner_dsn, archive, pg_dump=pg_dump, env=dict(os.environ), progress=print
        )
    assert os.listdir(tmp_path) == []

    lines: list[str] = []
    result = await backup.backup_database(
        postgres.dsn("postgres", database_name),
        archive,
        pg_dump=pg_dump,
        env=dict(os.environ),
        progress=lines.append,
    )
    assert result.path == archive
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["vault.dump"]  # no partial file left
    for table in ("encrypted_credentials", "data_keys", "api_keys", "audit_logs"):
        assert f"singura.{table}" in result.tables
        assert f"backup: dumping singura.{table}" in lines
    assert "singura.schema_migrations" in result.tables
    assert lines[-1].startswith(f"backup: wrote {archive} (")
    # One table of contents, with data offsets: not a second one appended at the end.
    assert archive.read_bytes().count(b"CREATE TABLE singura.schema_migrations") == 1
    dumped = await sql_text(archive)
    assert org in dumped  # a complete dump of every tenant...
    for secret in (first, second, refresh):
        assert secret not in dumped  # ...with no value in it
    with pytest.raises(backup.BackupError, match="already exists"):
        await backup.backup_database(
            postgres.dsn("postgres", database_name),
            archive,
            pg_dump=pg_dump,
            env=dict(os.environ),
            progress=lines.append,
        )

    restore_dsn = postgres.dsn(OWNER_ROLE, empty_database)
    restored_lines: list[str] = []
    restored = await restore.restore_database(
        archive,
        restore_dsn,
        pg_restore=pg_restore,
        env=dict(os.environ),
        progress=restored_lines.append,
    )
    assert set(restored.tables) == set(result.tables)
    assert not restored.migrations.pending
    assert not restored.migrations.problems
    assert "restore: loading singura.encrypted_credentials" in restored_lines
    assert await schema_shape(postgres.dsn("postgres", empty_database)) == await schema_shape(
        postgres.dsn("postgres", database_name)
    )
    with pytest.raises(backup.BackupError, match="already has a singura schema"):
        await restore.restore_database(
            archive, restore_dsn, pg_restore=pg_restore, env=dict(os.environ), progress=print
        )

    # The same root key and auth secret: values, the old admin key and the chain are back.
    service_dsn = postgres.dsn(SERVICE_ROLE, empty_database)
    db, again = await vault_on(service_dsn, root_key, auth_secret)
    try:
        old_admin = again.as_key(vault.admin_key)
        assert await reveal(old_admin, org, conn) == second
        assert await reveal(again, org, conn, version=1) == first
        assert await reveal(again, org, conn, REFRESH) == refresh
        # The restored database takes new writes (sequences, triggers, chain heads).
        third = canary("after-restore")
        await store(again, org, conn, third)
        assert await reveal(again, org, conn) == third
        chain = await verify_chain(again, org)
        assert chain.ok, chain.problem
    finally:
        await stop_vault(again)
        await db.close()

    # Another root key (and another auth secret): a clear key error, never a value.
    other_key = keys.generate_encryption_key()
    db, wrong = await vault_on(service_dsn, other_key, os.urandom(32))
    try:
        await expect_status(
            reveal_call(wrong, org, conn), grpc.StatusCode.FAILED_PRECONDITION, "not in the keyring"
        )
        await expect_status(
            reveal_call(wrong.as_key(vault.admin_key), org, conn), grpc.StatusCode.UNAUTHENTICATED
        )
    finally:
        await stop_vault(wrong)
        await db.close()


async def test_restore_refuses_what_is_not_a_vault_backup(owner_dsn: str, tmp_path: Path) -> None:
    """A file that is no archive, and a target that already holds a vault, are refused."""
    pg_restore = backup.find_pg_tool("pg_restore", prefer_path=False)
    junk = tmp_path / "junk.dump"
    junk.write_text("not a backup\n")
    with pytest.raises(backup.BackupError, match="not a pg_dump custom-format archive"):
        await restore.inspect_archive(junk, pg_restore=pg_restore)
    with pytest.raises(backup.BackupError, match="does not exist"):
        await restore.inspect_archive(tmp_path / "missing.dump", pg_restore=pg_restore)
    with pytest.raises(backup.BackupError, match="already has a singura schema"):
        await restore.check_restore_target(owner_dsn)


def test_passwords_never_reach_the_command_line() -> None:
    """A URL's password moves to PGPASSWORD; the --dbname argument has none."""
    target, env = backup.libpq_target(
        "postgresql://singura_owner:s%40cret@db.internal:5432/singura?sslmode=verify-full",
        {"PATH": "/usr/bin"},
    )
    assert target == "postgresql://singura_owner@db.internal:5432/singura?sslmode=verify-full"
    assert env == {"PATH": "/usr/bin", "PGPASSWORD": "s@cret"}
    target, env = backup.libpq_target("postgresql://u@/singura?host=/run&password=pw", {})
    assert "pw" not in target
    assert env == {"PGPASSWORD": "pw"}
    socket_url = "postgresql://postgres@/singura?host=/tmp/run&port=5432"
    assert backup.libpq_target(socket_url, {}) == (socket_url, {})


async def test_embedded_restore_and_backup_commands(
    vault: Vault, postgres: PostgresServer, database_name: str, tmp_path: Path
) -> None:
    """run_restore into a new embedded data dir creates the roles and database and loads
    the archive; run_backup dumps it again; each stops the server only if it started it."""
    org, conn = await tenant_with_connection(vault)
    await store(vault, org, conn, canary("embedded"))
    archive = tmp_path / "source.dump"
    await backup.backup_database(
        postgres.dsn("postgres", database_name),
        archive,
        pg_dump=backup.find_pg_tool("pg_dump", prefer_path=False),
        env=dict(os.environ),
        progress=print,
    )
    data_dir = Path(tempfile.mkdtemp(prefix="sv-bak-"))
    settings = load_settings({"SINGURA_DATA_DIR": str(data_dir)})
    try:
        with pytest.raises(backup.BackupError, match="no embedded database"):
            await backup.run_backup(settings, tmp_path / "none.dump", backup_url=None)
        lines: list[str] = []
        restored = await restore.run_restore(settings, archive, progress=lines.append)
        assert "singura.encrypted_credentials" in restored.tables
        assert lines[0] == f"restore: embedded PostgreSQL in {data_dir}"
        assert lines[-1].startswith(f"restore: warning: {data_dir} has no keyring.json")
        assert not EmbeddedPostgres(data_dir).is_running()  # stopped: it started it
        # A running server (a vault serving, say) is used and left running.
        await asyncio.to_thread(EmbeddedPostgres(data_dir).start)
        with pytest.raises(backup.BackupError, match="restore into a new, empty SINGURA_DATA"):
            await restore.run_restore(settings, archive, progress=print)
        copy = tmp_path / "copy.dump"
        made = await backup.run_backup(settings, copy, backup_url=None, progress=print)
        assert set(made.tables) == set(restored.tables)
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert EmbeddedPostgres(data_dir).is_running()
    finally:
        EmbeddedPostgres(data_dir).stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_a_read_only_bypassrls_role_can_back_up(
    vault: Vault, postgres: PostgresServer, database_name: str, tmp_path: Path
) -> None:
    """docs/backup-restore.md's backup role (LOGIN BYPASSRLS, pg_read_all_data) dumps
    every table, and nothing about that role ends up in the archive."""
    org, conn = await tenant_with_connection(vault)
    await store(vault, org, conn, canary("backup-role"))
    role = f"singura_backup_{uuid.uuid4().hex[:8]}"
    await superuser_execute(
        postgres,
        f"CREATE ROLE {role} LOGIN BYPASSRLS NOSUPERUSER NOCREATEDB NOCREATEROLE; "
        f"GRANT pg_read_all_data TO {role}",
    )
    try:
        archive = tmp_path / "role.dump"
        made = await backup.backup_database(
            postgres.dsn(role, database_name),
            archive,
            pg_dump=backup.find_pg_tool("pg_dump", prefer_path=False),
            env=dict(os.environ),
            progress=print,
        )
        assert "singura.encrypted_credentials" in made.tables
        dumped = await sql_text(archive)
        assert org in dumped
        assert role not in dumped
    finally:
        await superuser_execute(postgres, f"DROP ROLE IF EXISTS {role}")


async def test_a_failed_restore_leaves_the_target_empty(
    vault: Vault,
    postgres: PostgresServer,
    database_name: str,
    empty_database: str,
    tmp_path: Path,
) -> None:
    """A truncated archive fails part-way through pg_restore; one transaction means the
    target is still empty afterwards, so the restore can be retried with a good file."""
    org, conn = await tenant_with_connection(vault)
    await store(vault, org, conn, canary("truncated"))
    archive = tmp_path / "full.dump"
    await backup.backup_database(
        postgres.dsn("postgres", database_name),
        archive,
        pg_dump=backup.find_pg_tool("pg_dump", prefer_path=False),
        env=dict(os.environ),
        progress=print,
    )
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.dump"
    # The table of contents (at the start) stays whole; the last data block is cut.
    truncated.write_bytes(data[:-64])
    pg_restore = backup.find_pg_tool("pg_restore", prefer_path=False)
    target = postgres.dsn(OWNER_ROLE, empty_database)
    with pytest.raises(backup.BackupError, match="nothing was restored") as failed:
        await restore.restore_database(
            truncated, target, pg_restore=pg_restore, env=dict(os.environ), progress=print
        )
    assert "pg_restore failed (exit 1)" in str(failed.value)
    await restore.check_restore_target(target)  # still empty: no singura schema
    restored = await restore.restore_database(
        archive, target, pg_restore=pg_restore, env=dict(os.environ), progress=print
    )
    assert "singura.encrypted_credentials" in restored.tables
