"""The process lifecycle: one vault process from its start to its stop.

``VaultServer`` serves the vault's services plus standard health and reflection
on one port, and owns the process's background tasks (one ``BackgroundTasks``
registry: what ``Components.background_jobs()`` names, and the embedded
PostgreSQL supervisor). ``serve`` is what ``singura-vault serve`` runs: load the
keys, prepare the database, build the graph (``composition.Components``, the
composition root), start serving, and on SIGTERM/SIGINT shut down in order
(health goes NOT_SERVING, in-flight calls get SINGURA_SHUTDOWN_GRACE seconds,
every background task is cancelled and awaited, then the pool and the embedded
PostgreSQL stop). This module builds no service of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from singura_vault import metrics, tracing
from singura_vault.api.access import AccessServicer
from singura_vault.api.audit import AuditServicer
from singura_vault.api.connections import ConnectionServicer
from singura_vault.api.credentials import CredentialServicer
from singura_vault.api.events import EventServicer
from singura_vault.api.interceptors import AccessLog, VaultInterceptor
from singura_vault.api.keys import KeyServicer
from singura_vault.api.oauth import OAuthServicer
from singura_vault.api.organizations import OrganizationServicer
from singura_vault.api.reflection import add_reflection
from singura_vault.api.request_checks import MAX_TRANSPORT_BYTES
from singura_vault.api.signals import SignalServicer
from singura_vault.api.webhooks import WebhookServicer
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
from singura_vault.health import HealthMonitor, HealthServicer
from singura_vault.local import is_loopback
from singura_vault.logs import get_logger
from singura_vault.proto.singura.vault.v1 import (
    access_pb2,
    access_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    connections_pb2,
    connections_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    oauth_pb2,
    oauth_pb2_grpc,
    organizations_pb2,
    organizations_pb2_grpc,
    signals_pb2,
    signals_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from singura_vault.service.access import load_auth_secret
from singura_vault.service.audit_checkpoints import (
    AuditSigner,
    check_audit_signer,
    load_audit_signer,
)
from singura_vault.service.data_keys import load_key_manager
from singura_vault.tasks import BackgroundTasks
from singura_vault.tls import TlsSettings, server_credentials, tls_settings_from_env
from singura_vault.workers import WORKER_DSN_ENV, WORKER_INDEX_ENV, run_workers

log = get_logger(__name__)

VAULT_SERVICES = (
    organizations_pb2.DESCRIPTOR.services_by_name["OrganizationService"].full_name,
    connections_pb2.DESCRIPTOR.services_by_name["ConnectionService"].full_name,
    credentials_pb2.DESCRIPTOR.services_by_name["CredentialService"].full_name,
    access_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    oauth_pb2.DESCRIPTOR.services_by_name["OAuthService"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    webhooks_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    signals_pb2.DESCRIPTOR.services_by_name["SignalService"].full_name,
)


def check_listen_address(listen: str, *, allow_insecure: bool, tls: bool = False) -> None:
    """Refuse plaintext gRPC beyond loopback unless explicitly allowed (TLS may listen anywhere)."""
    if not tls and not is_loopback(listen_host(listen)) and not allow_insecure:
        raise ConfigError(
            f"refusing to serve plaintext gRPC on non-loopback address {listen}; "
            "set SINGURA_TLS_CERT and SINGURA_TLS_KEY, listen on 127.0.0.1 (the default), "
            "or set SINGURA_ALLOW_INSECURE=1 behind a TLS-terminating proxy"
        )


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


class VaultServer:
    """A started gRPC server over one vault's Components."""

    def __init__(
        self,
        components: Components,
        *,
        health_interval_s: float = 5.0,
        access_log: AccessLog = "errors",
        reuse_port: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        self.components = components
        db = components.db
        # Every background task of this process, started by start() (and by serve for
        # the embedded PostgreSQL supervisor), cancelled and awaited by stop().
        self.tasks = BackgroundTasks()
        self._started = False
        self._server = grpc.aio.server(
            interceptors=[
                VaultInterceptor(components.access, access_log=access_log, tracer=tracer)
            ],
            # Without this, a second vault on the same port would silently share it;
            # the workers of `serve --workers N` share it on purpose (the parent has
            # checked that nobody else uses the port).
            options=[
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                # Clients that ping to notice a host cut off from the network
                # (docs/high-availability.md) may do so every 10 s, with or without
                # calls in flight, instead of being sent away after 5 minutes' worth.
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                # Above the vault's own request limit (MAX_REQUEST_BYTES, 1 MiB), so that
                # an oversized request gets INVALID_ARGUMENT with details rather than
                # gRPC's bare RESOURCE_EXHAUSTED; beyond 16 MiB gRPC still refuses it
                # unread (docs/errors.md#request-size).
                ("grpc.max_receive_message_length", MAX_TRANSPORT_BYTES),
            ],
        )
        self._add_servicers(components)
        db.on_write_committed(components.sequencer.wake)
        db.on_change_committed(components.events.wake)
        if components.webhook_worker is not None:
            db.on_change_committed(components.webhook_worker.wake)
        db.on_change_committed(components.event_sequencer.wake)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        add_reflection(
            self._server,
            (
                *VAULT_SERVICES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
        )
        self._monitor = HealthMonitor(self._health, VAULT_SERVICES, db.ping, health_interval_s)
        db.on_unavailable(self._monitor.check_soon)
        self.port = 0

    def _add_servicers(self, parts: Components) -> None:
        server = self._server
        organizations_pb2_grpc.add_OrganizationServiceServicer_to_server(
            OrganizationServicer(parts.organizations), server
        )
        connections_pb2_grpc.add_ConnectionServiceServicer_to_server(
            ConnectionServicer(parts.connections, parts.revoker), server
        )
        credentials_pb2_grpc.add_CredentialServiceServicer_to_server(
            CredentialServicer(parts.credentials, parts.revoker), server
        )
        audit_pb2_grpc.add_AuditServiceServicer_to_server(
            AuditServicer(parts.audit, parts.audit_checkpoints), server
        )
        keys_pb2_grpc.add_KeyServiceServicer_to_server(
            KeyServicer(parts.key_admin, parts.organization_keys), server
        )
        oauth_pb2_grpc.add_OAuthServiceServicer_to_server(
            OAuthServicer(parts.oauth_clients, parts.access_tokens, parts.connect), server
        )
        events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(parts.events), server)
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(
            WebhookServicer(parts.webhooks), server
        )
        signals_pb2_grpc.add_SignalServiceServicer_to_server(SignalServicer(parts.signals), server)
        if parts.access is not None:
            access_pb2_grpc.add_AccessServiceServicer_to_server(
                AccessServicer(parts.access), server
            )

    def check_health_soon(self) -> None:
        """Probe the database now (the embedded supervisor saw it die or come back)."""
        self._monitor.check_soon()

    async def start(
        self, listen: str, *, allow_insecure: bool = False, tls: TlsSettings | None = None
    ) -> int:
        """Bind and start serving (TLS when tls is given); returns the bound port."""
        check_listen_address(listen, allow_insecure=allow_insecure, tls=tls is not None)
        try:
            if tls is None:
                self.port = self._server.add_insecure_port(listen)
            else:
                self.port = self._server.add_secure_port(listen, server_credentials(tls))
        except RuntimeError:
            # gRPC says only "failed to bind", also when it rejects the certificate;
            # tls_settings_from_env has already checked that the pair loads and matches.
            raise ConfigError(
                f"could not listen on SINGURA_LISTEN={listen}; is another process using the port?"
                + ("" if tls is None else " (GRPC_VERBOSITY=debug shows gRPC's TLS errors)")
            ) from None
        await self._monitor.check_once()
        await self._server.start()
        self._monitor.start()
        for name, factory in self.components.background_jobs():
            self.tasks.start(name, factory)
        self._started = True
        return self.port

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING first, then let in-flight calls finish within grace_s."""
        await self._monitor.stop()
        await self._server.stop(grace_s)
        # Awaited, not only cancelled: a task cancelled mid-statement must hand its
        # connection back before the pool closes (BackgroundTasks.stop awaits them all,
        # serve's embedded PostgreSQL supervisor too, before PostgreSQL is stopped).
        await self.tasks.stop()
        await self.components.aclose()
        if self._started:
            # Chain what the drained calls recorded, rather than leave it to the next
            # process's fallback run, and number what they emitted, for admin watches
            # elsewhere.
            await self.components.sequencer.run_once()
            await self.components.event_sequencer.run_once()


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
