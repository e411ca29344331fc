"""The vault under test, wired to a :class:`~.postgres.Postgres`: roles, migrations,
pool, services and a ``VaultServer`` on ``127.0.0.1:<random port>`` with a fresh admin
key -- built by ``singura_vault.composition``, as ``serve`` and the tests build it --
and the small helpers that talk to it (keys, call metadata, server logs, audit chain).
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from singura_vault import heap, keys
from singura_vault.api.interceptors import AccessLog
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.db.setup import apply_migrations, bootstrap_embedded_roles
from singura_vault.logs import configure_logging
from singura_vault.server import VaultServer

from .postgres import Postgres


def quiet_server_logs(path: str) -> None:
    """Render the vault's log lines as in production (level info), but into ``path``
    (default /dev/null) rather than the terminal."""
    stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    configure_logging("info", "json", stream=stream)


def new_key_text() -> str:
    """A well-formed API key (svk_<16>_<43>) that no vault knows yet (as tests/support/auth.py)."""
    alphabet = string.ascii_lowercase + string.digits
    key_id = "".join(secrets.choice(alphabet) for _ in range(16))
    return f"svk_{key_id}_{secrets.token_urlsafe(32)}"


def auth(key: str) -> tuple[tuple[str, str], ...]:
    """Per-call metadata that authenticates with ``key`` (cheaper than an interceptor)."""
    return (("authorization", f"Bearer {key}"),)


@dataclass(frozen=True)
class Vault:
    address: str
    admin_key: str
    db: Database
    server: VaultServer


@asynccontextmanager
async def running_vault(
    pg: Postgres, pool: PoolSettings, *, access_log: AccessLog = "errors"
) -> AsyncIterator[Vault]:
    """Migrate, connect, and serve plaintext gRPC on 127.0.0.1:<random port>.

    Rate limiting is off (``RateLimit(0, 1)``), as SINGURA_RATE_LIMIT_RPS=0 would do.
    """
    await bootstrap_embedded_roles(pg.superuser_dsn)
    await apply_migrations(pg.owner_dsn)
    db = await Database.connect(pg.service_dsn, pool)
    try:
        await db.ensure_safe_service_role()
        key_manager = keys.KeyManager(
            keys.LocalKeyring.from_encryption_key(keys.generate_encryption_key())
        )
        access = build_access(db, os.urandom(32))
        admin_key = new_key_text()
        await access.bootstrap_admin_key(Path("/nonexistent"), admin_key)
        server = VaultServer(
            Components(db, key_manager=key_manager, access=access), access_log=access_log
        )
        port = await server.start("127.0.0.1:0")
        # As serve does once it serves (singura_vault/heap.py).
        heap.freeze_startup_heap()
        try:
            yield Vault(f"127.0.0.1:{port}", admin_key, db, server)
        finally:
            await server.stop(0)
    finally:
        await db.close()


async def chain_pending_audit(conn: asyncpg.Connection) -> None:
    """Chain audit events loaded straight into the table (they wait in audit_pending
    for the sequencer, migration 012) in large batches, before measuring reads."""
    while await conn.fetchval("SELECT singura.audit_sequence(50000)"):
        pass
