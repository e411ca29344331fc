"""The migration runner and the schema it builds."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from singura_vault.db.migrations import (
    MigrationError,
    create_migration_file,
    default_migrations_dir,
    load_migrations,
    migrate_up,
    migration_status,
)
from singura_vault.repositories.queries import QUERIES


async def test_every_named_query_prepares_against_the_migrated_schema(service_dsn: str) -> None:
    """Each repository query is valid SQL for the schema, as the service role sees it."""
    conn = await asyncpg.connect(service_dsn, server_settings={"search_path": "singura"})
    try:
        for name, sql in QUERIES.items():
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:  # pragma: no cover - failure path
                pytest.fail(f"query {name} does not fit the schema: {exc}")
    finally:
        await conn.close()
    assert {"organization_insert", "connection_list_scoped", "audit_append"} <= set(QUERIES)


async def test_status_reports_everything_applied(owner_dsn: str) -> None:
    """On the migrated test database, every file is applied and nothing is pending."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        status = await migration_status(conn, default_migrations_dir())
        again = await migrate_up(conn, default_migrations_dir())
    finally:
        await conn.close()
    files = load_migrations(default_migrations_dir())
    assert [a.version for a in status.applied] == [m.version for m in files]
    assert status.pending == ()
    assert status.problems == ()
    assert again == ()


async def test_an_edited_applied_migration_is_refused(owner_dsn: str, tmp_path: Path) -> None:
    """Changing a file after it was applied makes migrate up fail and name the file."""
    edited = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), edited)
    first = sorted(edited.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    conn = await asyncpg.connect(owner_dsn)
    try:
        status = await migration_status(conn, edited)
        with pytest.raises(MigrationError, match=f"{first.name} was edited after it was applied"):
            await migrate_up(conn, edited)
    finally:
        await conn.close()
    assert len(status.problems) == 1


async def test_new_migration_is_applied_once(owner_dsn: str, tmp_path: Path) -> None:
    """A created migration file is pending, then applied exactly once."""
    directory = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), directory)
    path = create_migration_file(directory, "Add a Note table")
    assert path.name.endswith("_add_a_note_table.sql")
    path.write_text(path.read_text() + "CREATE TABLE singura.notes (id int);\n")
    conn = await asyncpg.connect(owner_dsn)
    try:
        before = await migration_status(conn, directory)
        applied = await migrate_up(conn, directory)
        again = await migrate_up(conn, directory)
        exists = await conn.fetchval("SELECT to_regclass('singura.notes') IS NOT NULL")
    finally:
        await conn.close()
    assert [m.filename for m in before.pending] == [path.name]
    assert [m.filename for m in applied] == [path.name]
    assert again == ()
    assert exists


def test_malformed_and_gapped_file_names_are_refused(tmp_path: Path) -> None:
    """Files must be NNN_name.sql with consecutive numbers."""
    (tmp_path / "001_first.sql").write_text("SELECT 1;")
    (tmp_path / "003_third.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="expected migration number 002"):
        load_migrations(tmp_path)
    (tmp_path / "003_third.sql").unlink()
    (tmp_path / "2_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNN_description\.sql"):
        load_migrations(tmp_path)
