"""Shared fixtures: a real PostgreSQL and a real gRPC server on port 0.

PostgreSQL is the embedded server started once per test session in a throwaway
directory -- or, when SINGURA_TEST_DATABASE_URL names a superuser connection to
an existing server, that server. Migrations build a template database once;
each test gets its own database cloned from it (``CREATE DATABASE ... TEMPLATE``)
and dropped ``WITH (FORCE)`` afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
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
from singura_vault.logs import configure_logging
from singura_vault.proto.singura.vault.v1 import (
    access_pb2_grpc,
    connections_pb2_grpc,
    credentials_pb2_grpc,
    keys_pb2_grpc,
    oauth_pb2_grpc,
    organizations_pb2_grpc,
)
from singura_vault.server import VaultServer
from singura_vault.service.access import AccessService
from singura_vault.service.credentials import CredentialService
from singura_vault.service.sealing import SealingService
from tests import canaries
from tests.helpers import bearer, new_key_text
from tests.oauth_provider import FakeOAuthProvider

TEMPLATE_DB = "singura_test_template"


@dataclass(frozen=True)
class PostgresServer:
    """How tests reach the throwaway PostgreSQL server."""

    superuser_dsn: str
    embedded: EmbeddedPostgres | None

    def dsn(self, user: str, database: str) -> str:
        if self.embedded is not None:
            return self.embedded.cluster().dsn(user, database)
        parts = urlsplit(self.superuser_dsn)
        host = parts.hostname or "localhost"
        netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


@pytest.fixture(scope="session", autouse=True)
def run_log() -> Iterator[Path]:
    """Every log event of the whole run goes to one JSON file; at the end it is
    scanned for the plaintext canaries the tests stored: none may appear."""
    path = Path(tempfile.mkdtemp(prefix="sv-log-")) / "run.jsonl"
    with path.open("w", encoding="utf-8") as stream:
        configure_logging("debug", "json", stream=stream, cache_loggers=False)
        yield path
        stream.flush()
    text = path.read_text(encoding="utf-8")
    leaked = [c for c in canaries.issued() if c in text]
    shutil.rmtree(path.parent, ignore_errors=True)
    assert not leaked, f"{len(leaked)} stored secret values appeared in the run's logs"


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


@pytest.fixture
async def db(service_dsn: str) -> AsyncIterator[Database]:
    """The vault's pool on the test database."""
    database = await Database.connect(
        service_dsn, PoolSettings(min_size=1, max_size=5, connect_timeout_ms=5000)
    )
    yield database
    await database.close()


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


@dataclass
class Stubs:
    """Client stubs of every vault service on one channel."""

    channel: grpc.aio.Channel
    organizations: organizations_pb2_grpc.OrganizationServiceStub
    connections: connections_pb2_grpc.ConnectionServiceStub
    credentials: credentials_pb2_grpc.CredentialServiceStub
    access: access_pb2_grpc.AccessServiceStub
    keys: keys_pb2_grpc.KeyServiceStub
    oauth: oauth_pb2_grpc.OAuthServiceStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> Stubs:
        return cls(
            channel=channel,
            organizations=organizations_pb2_grpc.OrganizationServiceStub(channel),
            connections=connections_pb2_grpc.ConnectionServiceStub(channel),
            credentials=credentials_pb2_grpc.CredentialServiceStub(channel),
            access=access_pb2_grpc.AccessServiceStub(channel),
            keys=keys_pb2_grpc.KeyServiceStub(channel),
            oauth=oauth_pb2_grpc.OAuthServiceStub(channel),
        )


@dataclass
class Vault(Stubs):
    """A running vault, and stubs authenticated with its admin key."""

    server: VaultServer
    address: str
    admin_key: str
    access_service: AccessService
    db: Database
    _channels: list[grpc.aio.Channel]

    def as_key(self, key: str | None) -> Stubs:
        """Stubs on a new channel that send ``key`` (None: no authorization at all)."""
        interceptors = bearer(key) if key is not None else []
        channel = grpc.aio.insecure_channel(self.address, interceptors=interceptors)
        self._channels.append(channel)
        return Stubs.on(channel)


@pytest.fixture
def provider() -> Iterator[FakeOAuthProvider]:
    """A real OAuth 2.0 provider on loopback (tests/oauth_provider.py); test_transit
    has a `provider` of its own, the transit key provider."""
    with FakeOAuthProvider() as running:
        yield running


@pytest.fixture
def auth_secret() -> bytes:
    return os.urandom(32)


@pytest.fixture
def access_service(db: Database, auth_secret: bytes) -> AccessService:
    """Authentication with rate limiting off (tests of the limit configure their own)."""
    return build_access(db, auth_secret)


async def start_vault(components: Components, **server_options: object) -> Vault:
    """Serve ``components`` on 127.0.0.1:<random port> with a fresh admin key and a
    channel using it; ``server_options`` are VaultServer's keyword options."""
    access = components.access
    assert access is not None, "start_vault serves an authenticating vault"
    admin_key = new_key_text()
    await access.bootstrap_admin_key(Path("/nonexistent"), admin_key)
    server = VaultServer(
        components,
        health_interval_s=0.2,
        **server_options,  # type: ignore[arg-type]  # VaultServer's keyword options, passed through
    )
    port = await server.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address, interceptors=bearer(admin_key))
    stubs = Stubs.on(channel)
    return Vault(
        channel=channel,
        organizations=stubs.organizations,
        connections=stubs.connections,
        credentials=stubs.credentials,
        access=stubs.access,
        keys=stubs.keys,
        oauth=stubs.oauth,
        server=server,
        address=address,
        admin_key=admin_key,
        access_service=access,
        db=components.db,
        _channels=[channel],
    )


async def stop_vault(vault: Vault) -> None:
    for channel in vault._channels:
        await channel.close()
    await vault.server.stop(0)


@pytest.fixture
async def vault(components: Components) -> AsyncIterator[Vault]:
    """A vault serving on 127.0.0.1:<random port>, with an admin-key channel."""
    running = await start_vault(components)
    yield running
    await stop_vault(running)


@asynccontextmanager
async def serve_process(
    vault: Vault, service_dsn: str, auth_secret: bytes, root_key: str, **env_overrides: str
) -> AsyncIterator[str]:
    """`singura-vault serve` in another process on the same database; yields its address."""
    async with serve_process_handle(vault, service_dsn, auth_secret, root_key, **env_overrides) as (
        address,
        _,
    ):
        yield address


@asynccontextmanager
async def serve_process_handle(
    vault: Vault | str,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
    *,
    host: str = "127.0.0.1",
    log: list[str] | None = None,
    **env_overrides: str,
) -> AsyncIterator[tuple[str, subprocess.Popen[str]]]:
    """Like serve_process, and yields the process too (for tests that kill it).
    ``vault`` is the vault whose admin key the process bootstraps, or that key;
    ``host`` a loopback address of its own (127.0.0.2, ...: another "host"); ``log``,
    when given, receives the process's stderr lines once it has stopped."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    admin_key = vault if isinstance(vault, str) else vault.admin_key
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env.update(
        DATABASE_URL=service_dsn,
        ENCRYPTION_KEY=root_key,
        SINGURA_AUTH_SECRET=base64.b64encode(auth_secret).decode(),
        SINGURA_BOOTSTRAP_ADMIN_KEY=admin_key,
        SINGURA_LISTEN=f"{host}:{port}",
        SINGURA_RATE_LIMIT_RPS="0",
        # Long enough that only a change notification can explain a key dropping out
        # of the cache within a test.
        SINGURA_AUTH_CACHE_TTL="300",
        # Tests that want the background refresh turn it on; others count provider calls.
        SINGURA_REFRESH_WORKER="off",
    )
    env.update(env_overrides)
    # Popen only starts the process; its output is read in a thread below.
    process = subprocess.Popen(  # noqa: ASYNC220 - Popen only starts it; output is read in a thread
        [sys.executable, "-m", "singura_vault", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = await asyncio.to_thread(_read_until_serving, process)
    assert lines, "the second vault exited before serving"
    # Keep reading: a full pipe would stall the process. The lines are kept so that a
    # process that does not stop can say what it was doing.
    drain = threading.Thread(target=lines.extend, args=(process.stderr,), daemon=True)
    drain.start()
    try:
        yield f"{host}:{port}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 60)
        except subprocess.TimeoutExpired:
            process.kill()
            tail = "".join(lines[-40:])
            raise AssertionError(
                f"the second vault ignored SIGTERM for 60 s; its log:\n{tail}"
            ) from None
        if log is not None:
            await asyncio.to_thread(drain.join, 10)  # the pipe ends when the process does
            log.extend(lines)


@pytest.fixture
async def second_process(
    vault: Vault, service_dsn: str, auth_secret: bytes, root_key: str
) -> AsyncIterator[str]:
    """`singura-vault serve` in another process on the same database; yields its address."""
    async with serve_process(vault, service_dsn, auth_secret, root_key) as address:
        yield address


def _read_until_serving(process: subprocess.Popen[str]) -> list[str]:
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if '"vault_serving"' in line:
            return lines
    return []
