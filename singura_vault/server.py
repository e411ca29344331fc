"""The gRPC server of one vault process, and the background tasks it owns.

``VaultServer`` serves the vault's services plus standard health and reflection
on one port, and owns the process's background tasks (one ``BackgroundTasks``
registry: what ``Components.background_jobs()`` names, and the embedded
PostgreSQL supervisor that ``serve`` adds). ``start`` serves, then starts them;
``stop`` turns health NOT_SERVING, gives in-flight calls their grace, then cancels
and awaits every task. ``VAULT_SERVICES`` is the registry of the vault's services
that health and reflection serve. ``serve`` (``singura_vault/process.py``) runs a
whole process around it. This module builds no service of its own.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import Tracer

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
from singura_vault.config import listen_host
from singura_vault.errors import ConfigError
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
from singura_vault.tasks import BackgroundTasks
from singura_vault.tls import TlsSettings, server_credentials

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
