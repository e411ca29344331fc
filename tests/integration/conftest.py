"""Fixtures of the integration tests: a real PostgreSQL and a real gRPC server on port 0.

PostgreSQL is the embedded server started once per test session in a throwaway
directory -- or, when SINGURA_TEST_DATABASE_URL names a superuser connection to
an existing server, that server. Migrations build a template database once;
each test gets its own database cloned from it (``CREATE DATABASE ... TEMPLATE``)
and dropped ``WITH (FORCE)`` afterwards, so tests never see each other's rows.

The fixtures used by more than one test file live here too (a CLI environment, an
audit signer, the OAuth connect browser and Slack setup, the gated database); the
builders they use are in tests/support/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.db.pool import Database
from singura_vault.db.setup import (
    OWNER_ROLE,
    SERVICE_ROLE,
    apply_migrations,
    bootstrap_embedded_roles,
)
from singura_vault.service.access import AccessService
from singura_vault.service.credentials import CredentialService
from singura_vault.service.sealing import SealingService
from tests.support.cli import cli_environment
from tests.support.gated_database import GatedDatabase
from tests.support.oauth_connect import Setup, connect_setup
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.postgres import PostgresServer
from tests.support.vault import Vault, start_vault, stop_vault
from tests.support.vault_process import serve_process

TEMPLATE_DB = "singura_test_template"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (embedded unless SINGURA_TEST_DATABASE_URL is set)."""
    external = os.environ.get("SINGURA_TEST_DATABASE_URL")
    if external:
        yield PostgresServer(external, None)
        return
    base_dir = Path(tempfile.mkdtemp(prefix="sv-test-"))
    server = EmbeddedPostgres(base_dir)
    try:
        cluster = server.start()
        yield PostgresServer(cluster.dsn(cluster.superuser, "postgres"), server)
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_database(postgres: PostgresServer) -> str:
    """A database with the vault's roles and every migration applied, used as template."""
    conn = await asyncpg.connect(postgres.superuser_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
    finally:
        await conn.close()
    await bootstrap_embedded_roles(postgres.superuser_dsn, TEMPLATE_DB)
    await apply_migrations(postgres.dsn(OWNER_ROLE, TEMPLATE_DB))
    return TEMPLATE_DB


@pytest.fixture
async def database_name(postgres: PostgresServer, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"singura_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres.superuser_dsn)
    try:
        await conn.execute(
            f'CREATE DATABASE "{name}" TEMPLATE "{template_database}" OWNER {OWNER_ROLE}'
        )
    finally:
        await conn.close()
    yield name
    conn = await asyncpg.connect(postgres.superuser_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def service_dsn(postgres: PostgresServer, database_name: str) -> str:
    """The DSN the vault serves with: the unprivileged service role."""
    return postgres.dsn(SERVICE_ROLE, database_name)


@pytest.fixture
def owner_dsn(postgres: PostgresServer, database_name: str) -> str:
    """The schema owner's DSN (what migrations run as)."""
    return postgres.dsn(OWNER_ROLE, database_name)


@pytest.fixture(scope="session")
def root_key() -> str:
    """The session's root key (ENCRYPTION_KEY form), generated at test time."""
    return keys.generate_encryption_key()


@pytest.fixture
def key_manager(root_key: str) -> keys.KeyManager:
    """A key manager with an empty data-key cache, on the session's root key."""
    return keys.KeyManager(keys.LocalKeyring.from_encryption_key(root_key))


@pytest.fixture
def components(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService
) -> Components:
    """The vault's object graph on the test database, as ``serve`` builds it (no
    background refresh); ``vault`` serves exactly these."""
    return Components(db, key_manager=key_manager, access=access_service)


@pytest.fixture
def credential_service(components: Components) -> CredentialService:
    return components.credentials


@pytest.fixture
def sealing(components: Components) -> SealingService:
    """The sealing gateway of ``components`` (and so of ``vault``)."""
    return components.sealing


@pytest.fixture
def provider() -> Iterator[FakeOAuthProvider]:
    """A real OAuth 2.0 provider on loopback (tests/support/oauth_provider.py); test_transit
    has a `provider` of its own, the transit key provider."""
    with FakeOAuthProvider() as running:
        yield running


@pytest.fixture
def auth_secret() -> bytes:
    return os.urandom(32)


@pytest.fixture
async def vault(components: Components) -> AsyncIterator[Vault]:
    """A vault serving on 127.0.0.1:<random port>, with an admin-key channel."""
    running = await start_vault(components)
    yield running
    await stop_vault(running)


@pytest.fixture
async def second_process(
    vault: Vault, service_dsn: str, auth_secret: bytes, root_key: str
) -> AsyncIterator[str]:
    """`singura-vault serve` in another process on the same database; yields its address."""
    async with serve_process(vault, service_dsn, auth_secret, root_key) as address:
        yield address


@pytest.fixture
async def db(service_dsn: str) -> AsyncIterator[Database]:
    """The vault's pool on the test database."""
    database = await Database.connect(
        service_dsn, PoolSettings(min_size=1, max_size=5, connect_timeout_ms=5000)
    )
    yield database
    await database.close()


@pytest.fixture
def access_service(db: Database, auth_secret: bytes) -> AccessService:
    """Authentication with rate limiting off (tests of the limit configure their own)."""
    return build_access(db, auth_secret)


@pytest.fixture
def cli_env() -> Iterator[dict[str, str]]:
    """An environment with a private data dir and a free port, and no DATABASE_URL."""
    data_dir = Path(tempfile.mkdtemp(prefix="sv-cli-"))
    env = cli_environment(data_dir)
    yield env
    EmbeddedPostgres(data_dir).stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def signer(tmp_path: Path) -> keys.AuditSigner:
    return keys.AuditSigner.generate_file(tmp_path / "audit-signing-key")


@pytest.fixture
async def signing_vault(
    db: Database,
    key_manager: keys.KeyManager,
    access_service: AccessService,
    signer: keys.AuditSigner,
) -> AsyncIterator[Vault]:
    running = await start_vault(
        Components(db, key_manager=key_manager, access=access_service, audit_signer=signer)
    )
    yield running
    await stop_vault(running)


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        yield client


@pytest.fixture
async def slack(
    vault: Vault, provider: FakeOAuthProvider, browser: httpx.AsyncClient
) -> AsyncIterator[Setup]:
    async for setup in connect_setup(vault, provider, browser, "slack"):
        yield setup


@pytest.fixture
async def gated(service_dsn: str, root_key: str) -> AsyncIterator[tuple[Vault, GatedDatabase]]:
    db = await GatedDatabase.connect(
        service_dsn, PoolSettings(min_size=1, max_size=5, connect_timeout_ms=5000)
    )
    assert isinstance(db, GatedDatabase)
    db.batches = []
    components = Components(
        db,
        key_manager=keys.KeyManager(keys.LocalKeyring.from_encryption_key(root_key)),
        access=build_access(db, b"\x01" * 32),
    )
    db.components = components
    vault = await start_vault(components)
    yield vault, db
    await stop_vault(vault)
    await db.close()
