"""The process lifecycle: one vault process from its start to its stop.

``serve`` is what ``singura-vault serve`` runs: refuse an unsafe transport, load the
keys, prepare the database, build the graph (``composition.Components``, the
composition root) and its ``VaultServer`` (``singura_vault/server.py``), start
serving, and on SIGTERM/SIGINT shut down in order (health goes NOT_SERVING,
in-flight calls get SINGURA_SHUTDOWN_GRACE seconds, every background task is
cancelled and awaited, then the pool and the embedded PostgreSQL stop). With
``--workers N`` the first process bootstraps once and supervises N worker processes
(``workers.py``), each a whole ``serve``. This module starts no task of its own but
the embedded PostgreSQL supervisor, which it hands to the server's registry.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

from opentelemetry.sdk.trace import TracerProvider

from singura_vault import heap, metrics, tracing
from singura_vault.composition import Components
from singura_vault.composition.access import build_access, build_access_from
from singura_vault.config import Settings, listen_host
from singura_vault.db.pool import Database
from singura_vault.db.reachability import hosts_of
from singura_vault.db.serve_lock import ServeLock
from singura_vault.db.setup import (
    NEEDS_DATABASE_URL,
    PreparedDatabase,
    claim_data_dir,
    prepare_database,
)
from singura_vault.db.supervisor import EmbeddedSupervisor
from singura_vault.errors import ConfigError, Unavailable
from singura_vault.logs import get_logger
from singura_vault.server import VaultServer, check_listen_address
from singura_vault.service.access import load_auth_secret
from singura_vault.service.audit_checkpoints import (
    AuditSigner,
    check_audit_signer,
    load_audit_signer,
)
from singura_vault.service.data_keys import load_key_manager
from singura_vault.tls import TlsSettings, tls_settings_from_env
from singura_vault.workers import WORKER_DSN_ENV, WORKER_INDEX_ENV, run_workers

log = get_logger(__name__)


def check_production_transport(settings: Settings, *, tls_enabled: bool) -> None:
    """SINGURA_ENV=production: TLS on the gRPC port (or an explicit, documented
    SINGURA_ALLOW_INSECURE behind a TLS proxy) and TLS to an external PostgreSQL."""
    if not settings.production:
        return
    if not tls_enabled and not settings.allow_insecure:
        raise ConfigError(
            "SINGURA_ENV=production requires TLS on the gRPC port: set SINGURA_TLS_CERT and "
            "SINGURA_TLS_KEY, or SINGURA_ALLOW_INSECURE=1 if a TLS-terminating proxy or mesh "
            "is in front of the vault"
        )
    for variable, url in (
        ("DATABASE_URL", settings.database_url),
        ("DATABASE_REPLICA_URL", settings.database_replica_url),
        ("DATABASE_LISTEN_URL", settings.database_listen_url),
    ):
        if url is not None and not database_url_uses_tls(url):
            raise ConfigError(
                "SINGURA_ENV=production requires TLS to PostgreSQL: add sslmode=verify-full "
                f"(or require / verify-ca) to {variable}, or connect through a Unix socket "
                "(host=/path)"
            )


def database_url_uses_tls(url: str) -> bool:
    """True when the URL asks for TLS, or reaches every host over a local Unix socket."""
    if all(host.startswith("/") for host, _ in hosts_of(url)):
        return True
    query = parse_qs(urlsplit(url).query)
    return query.get("sslmode", [""])[-1] in ("require", "verify-ca", "verify-full")


async def _serve_as_parent(
    settings: Settings,
    prepared: PreparedDatabase,
    auth_secret: bytes,
    audit_signer: AuditSigner | None,
) -> None:
    """`serve --workers N`: bootstrap once, then run and supervise N workers."""
    try:
        # settings.pool's pooler too: the bootstrap may go through PgBouncer.
        db = await Database.connect(
            prepared.service_dsn, replace(settings.pool, min_size=1, max_size=2)
        )
        try:
            await db.ensure_safe_service_role()
            # Before any worker loads the key: they read the file this may write.
            await check_audit_signer(db, audit_signer, settings)
            access = build_access(db, auth_secret)
            await access.bootstrap_admin_key(settings.data_dir, settings.bootstrap_admin_key)
        finally:
            await db.close()
        supervisor = (
            EmbeddedSupervisor(prepared.embedded, on_down=lambda: None)
            if prepared.embedded is not None
            else None
        )
        await run_workers(settings, prepared.service_dsn, supervisor)
    finally:
        if prepared.embedded is not None:
            await asyncio.to_thread(prepared.embedded.stop)
        log.info("vault_stopped")


async def attach_replica(db: Database, url: str, settings: Settings) -> None:
    """DATABASE_REPLICA_URL: reads that tolerate staleness may go there. A replica
    that is down at start is not fatal (reads stay on the primary until it answers);
    one whose login could bypass row-level security is."""
    replica = await Database.connect(url, replace(settings.pool, min_size=0))
    try:
        await replica.ensure_safe_service_role("DATABASE_REPLICA_URL")
    except ConfigError:
        await replica.close()
        raise
    except Unavailable as exc:
        log.warning("replica_unreachable", problem=exc.message)
    db.attach_replica(replica, settings.replica_max_lag_s)
    log.info("replica_attached", max_lag_s=settings.replica_max_lag_s)


def _worker_metrics_listen(listen: str, worker: int | None) -> str:
    """Worker i of `serve --workers N` serves its metrics on the configured port + i."""
    if not worker:
        return listen
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + worker}"


async def serve(settings: Settings) -> None:
    """Run the vault until SIGTERM or SIGINT."""
    # Read here, not in load_settings: only serving needs the certificate files
    # (a migrate job may share the environment without mounting them).
    tls = tls_settings_from_env(os.environ)
    if not settings.embedded and settings.database_url is None:
        raise ConfigError(NEEDS_DATABASE_URL)
    check_listen_address(
        settings.listen, allow_insecure=settings.allow_insecure, tls=tls is not None
    )
    # A worker of `serve --workers N`: the parent owns the data directory, the
    # database and the bootstrap.
    worker_dsn = os.environ.get(WORKER_DSN_ENV)
    # Before any key file is written there: a data directory the embedded server could
    # not use, or one that another serve already serves, is refused with nothing
    # written (and the other serve's PostgreSQL left alone).
    lock = (
        await asyncio.to_thread(claim_data_dir, settings)
        if settings.embedded and worker_dsn is None
        else None
    )
    try:
        await _serve(settings, tls, worker_dsn, lock)
    finally:
        if lock is not None:
            lock.release()


async def _serve(
    settings: Settings, tls: TlsSettings | None, worker_dsn: str | None, lock: ServeLock | None
) -> None:
    # Keys first: a bad ENCRYPTION_KEY should stop the vault before it touches data.
    key_manager = load_key_manager(settings)
    audit_signer = load_audit_signer(settings)
    # A remote root key (SINGURA_KMS=transit) is checked before anything is served.
    await key_manager.connect()
    auth_secret = load_auth_secret(settings)
    check_production_transport(settings, tls_enabled=tls is not None)
    worker = int(os.environ.get(WORKER_INDEX_ENV, "0")) if worker_dsn else None
    prepared = (
        PreparedDatabase(worker_dsn, None)
        if worker_dsn is not None
        else await prepare_database(settings)
    )
    if worker is None and settings.workers > 1:
        await _serve_as_parent(settings, prepared, auth_secret, audit_signer)
        return
    db: Database | None = None
    spans = tracing.tracer_provider()
    try:
        db = await _open_database(prepared.service_dsn, settings, audit_signer)
        access = build_access_from(db, settings, auth_secret)
        if worker is None:
            await access.bootstrap_admin_key(settings.data_dir, settings.bootstrap_admin_key)
        components = Components.from_settings(
            db, settings, key_manager=key_manager, access=access, audit_signer=audit_signer
        )
        server = VaultServer(
            components,
            health_interval_s=settings.health_interval_s,
            access_log=settings.access_log,
            reuse_port=worker is not None,
            tracer=tracing.tracer_from(spans),
        )
        if settings.metrics_listen is not None:
            metrics_listen = _worker_metrics_listen(settings.metrics_listen, worker)
            metrics_port = metrics.serve_metrics(metrics_listen)
            log.info("metrics_serving", listen=metrics_listen, port=metrics_port)
        await _serve_until_signalled(server, settings, tls, worker, lock, prepared)
    finally:
        await _release(spans, db, prepared)


async def _open_database(
    service_dsn: str, settings: Settings, audit_signer: AuditSigner | None
) -> Database:
    """The pool serve runs on, its login and audit signer checked, the replica attached."""
    db = await Database.connect(service_dsn, settings.pool, listen_dsn=settings.database_listen_url)
    try:
        await db.ensure_safe_service_role()
        await check_audit_signer(db, audit_signer, settings)
        if settings.database_replica_url is not None:
            await attach_replica(db, settings.database_replica_url, settings)
    except BaseException:
        await db.close()
        raise
    return db


async def _serve_until_signalled(
    server: VaultServer,
    settings: Settings,
    tls: TlsSettings | None,
    worker: int | None,
    lock: ServeLock | None,
    prepared: PreparedDatabase,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop the server (which awaits its tasks)."""
    # Before serving, so that a SIGTERM right after `vault_serving` is a graceful stop
    # rather than the default action (the process killed mid-start).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = await server.start(settings.listen, allow_insecure=settings.allow_insecure, tls=tls)
    # Startup is over: what it built lives as long as the process (singura_vault/heap.py).
    frozen = heap.freeze_startup_heap()
    log.info(
        "vault_serving",
        listen=settings.listen,
        port=port,
        pid=os.getpid(),
        worker=worker,
        tls="off" if tls is None else "mutual" if tls.mutual else "server",
        # settings.embedded, not prepared.embedded: a worker of `serve --workers N`
        # serves the parent's embedded server without owning it.
        database="embedded" if settings.embedded else "external",
        data_dir=str(settings.data_dir) if settings.embedded else None,
        heap_frozen=frozen,
    )
    if lock is not None:
        lock.record(f"{listen_host(settings.listen)}:{port}")
    if prepared.embedded is not None:
        # In the server's registry, so stop() awaits it before PostgreSQL is stopped
        # (_release): it cannot restart the server being shut down.
        server.tasks.start(
            "embedded-postgres-supervisor",
            EmbeddedSupervisor(prepared.embedded, server.check_health_soon).run_forever,
        )
    await stop.wait()
    log.info("vault_stopping", grace_s=settings.shutdown_grace_s)
    await server.stop(settings.shutdown_grace_s)


async def _release(
    spans: TracerProvider | None, db: Database | None, prepared: PreparedDatabase
) -> None:
    """The last steps of serve: flush spans, close the pool, stop embedded PostgreSQL."""
    if spans is not None:
        # Export what the drained calls recorded before the process ends.
        await asyncio.to_thread(spans.shutdown)
    if db is not None:
        await db.close()
    if prepared.embedded is not None:
        await asyncio.to_thread(prepared.embedded.stop)
    log.info("vault_stopped")
