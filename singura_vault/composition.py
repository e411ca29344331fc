"""The composition root: the one place that builds the vault's object graph.

``Components`` turns a ``Database`` and the few things that differ between callers
(the key manager, the authentication service, the audit signer, OAuth settings)
into every repository, use case and background worker of one vault process. The
server, the CLI commands, the benchmarks and the tests all build through it, so a
new service is wired once and nobody assembles a partial graph of their own.
``Components.from_settings`` is the graph ``singura-vault serve`` runs, and
``background_jobs()`` says which loops that graph runs beside the gRPC server; it
starts none of them: ``server.VaultServer`` owns the process lifecycle and runs
them in its task registry (``tasks.BackgroundTasks``).

Each part is built on first use and then shared: ``singura-vault audit prune``
asks only for ``audit`` and never needs a key manager, while ``VaultServer`` asks
for everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from functools import cached_property, partial
from uuid import UUID

from singura_vault import keys
from singura_vault.clock import Clock, utc_now
from singura_vault.config import (
    DEFAULT_EXPIRY_REMINDERS,
    OAuthSettings,
    Settings,
    WebhookSettings,
)
from singura_vault.db.pool import Database
from singura_vault.providers import (
    EgressSettings,
    TokenEndpointClient,
    WebhookEgressSettings,
    WebhookSender,
)
from singura_vault.providers.signals import JwksCache, RiscSettings
from singura_vault.repositories.api_keys import ApiKeyRepository
from singura_vault.repositories.audit import AuditRepository
from singura_vault.repositories.audit_checkpoints import AuditCheckpointRepository
from singura_vault.repositories.connections import ConnectionRepository
from singura_vault.repositories.credential_reveals import CredentialReveals
from singura_vault.repositories.credential_store import CredentialStore
from singura_vault.repositories.credentials import CredentialRepository
from singura_vault.repositories.data_keys import DataKeyRepository
from singura_vault.repositories.events import EventRepository
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.repositories.oauth_authorizations import AuthorizationRepository
from singura_vault.repositories.organization_keys import OrganizationKeyRepository
from singura_vault.repositories.organizations import OrganizationRepository
from singura_vault.repositories.signals import SignalRepository
from singura_vault.repositories.webhooks import WebhookRepository
from singura_vault.service.access import AccessService, RateLimit
from singura_vault.service.api_key_cache import DEFAULT_TTL_S
from singura_vault.service.audit import AuditService, track_appended_total
from singura_vault.service.audit_checkpoints import AuditCheckpointService
from singura_vault.service.audit_sequencer import AuditSequencer
from singura_vault.service.authz import Authorizer
from singura_vault.service.connection_purge import (
    DEFAULT_INTERVAL_S as DEFAULT_PURGE_INTERVAL_S,
)
from singura_vault.service.connection_purge import ConnectionPurger
from singura_vault.service.connections import DEFAULT_RECOVERY_WINDOW, ConnectionService
from singura_vault.service.credentials import (
    DEFAULT_DESTROY_DELAY,
    CredentialService,
)
from singura_vault.service.event_sequencer import FALLBACK_INTERVAL_S as SEQUENCER_FALLBACK_S
from singura_vault.service.event_sequencer import EventSequencer
from singura_vault.service.events import DEFAULT_POLL_INTERVAL_S, EventService
from singura_vault.service.expiry_reminders import ExpiryReminderJob
from singura_vault.service.key_admin import KeyAdminService
from singura_vault.service.oauth_clients import OAuthClientService
from singura_vault.service.oauth_connect import ConnectService
from singura_vault.service.oauth_refresh import RefreshPolicy, TokenRefresher
from singura_vault.service.oauth_revocation import ProviderRevoker
from singura_vault.service.oauth_tokens import AccessTokenService
from singura_vault.service.oauth_worker import RefreshWorker
from singura_vault.service.organization_keys import (
    OrganizationKeyMigrationWorker,
    OrganizationKeyService,
)
from singura_vault.service.organizations import OrganizationService
from singura_vault.service.rewrap import BATCH_SIZE, RewrapWorker
from singura_vault.service.sealing import SealingService
from singura_vault.service.signals import SignalService
from singura_vault.service.version_destroyer import DEFAULT_INTERVAL_S, VersionDestroyer
from singura_vault.service.webhook_worker import DeliveryPolicy, WebhookWorker
from singura_vault.service.webhooks import WebhookService
from singura_vault.tasks import TaskFactory

# Tests of other parts and the benchmarks run without the background refresh.
NO_BACKGROUND_REFRESH = OAuthSettings(refresh_worker=False)
# Tests of other parts and the benchmarks run without the webhook delivery worker.
NO_WEBHOOK_WORKER = WebhookSettings(worker=False)
# What SINGURA_RATE_LIMIT_RPS=0 configures.
NO_RATE_LIMIT = RateLimit(0, 1)


def build_access(
    db: Database,
    auth_secret: bytes,
    rate_limit: RateLimit = NO_RATE_LIMIT,
    *,
    cache_ttl_s: float = DEFAULT_TTL_S,
) -> AccessService:
    """API-key authentication over ``db``, by default without rate limiting."""
    return AccessService(ApiKeyRepository(db), auth_secret, rate_limit, cache_ttl_s=cache_ttl_s)


def build_access_from(db: Database, settings: Settings, auth_secret: bytes) -> AccessService:
    """Authentication as ``singura-vault serve`` configures it."""
    return build_access(
        db,
        auth_secret,
        RateLimit(settings.rate_limit_rps, settings.rate_limit_burst),
        cache_ttl_s=settings.auth_cache_ttl_s,
    )


class Components:
    """Every service of one vault process over one Database, each built once."""

    def __init__(
        self,
        db: Database,
        *,
        key_manager: keys.KeyManager | None = None,
        access: AccessService | None = None,
        authorizer: Authorizer | None = None,
        audit_signer: keys.AuditSigner | None = None,
        oauth: OAuthSettings = NO_BACKGROUND_REFRESH,
        production: bool = False,
        rewrap_batch_size: int = BATCH_SIZE,
        event_poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        webhooks: WebhookSettings = NO_WEBHOOK_WORKER,
        destroy_delay: timedelta = DEFAULT_DESTROY_DELAY,
        destroy_interval_s: float = DEFAULT_INTERVAL_S,
        clock: Clock = utc_now,
        signal_clock: Callable[[], float] = time.time,
        event_sequencer_fallback_s: float = SEQUENCER_FALLBACK_S,
        expiry_reminders: tuple[tuple[str, float], ...] = DEFAULT_EXPIRY_REMINDERS,
        connection_recovery_window: timedelta = DEFAULT_RECOVERY_WINDOW,
        purge_interval_s: float = DEFAULT_PURGE_INTERVAL_S,
        rewrap_worker: bool = False,
        audit_checkpoint_interval_s: float = 0.0,
        audit_retention: timedelta | None = None,
        audit_metrics: bool = False,
    ) -> None:
        """``key_manager`` None: a graph without the credential path (audit pruning).
        ``access`` None disables authentication and ``authorizer`` replaces the
        service-layer checks: both exist for tests of the layers beneath.
        ``destroy_delay`` is SINGURA_DESTROY_DELAY; ``clock`` is what version
        destruction, the connection purge and the expiry reminder job take as now (a
        test moves it instead of sleeping). ``rewrap_worker``, a positive
        ``audit_checkpoint_interval_s``, ``audit_retention`` and ``audit_metrics`` add
        the loops only ``serve`` runs to ``background_jobs()``."""
        self.db = db
        self.access = access
        self._key_manager = key_manager
        self._authorizer = authorizer
        self._audit_signer = audit_signer
        self.oauth_settings = oauth
        self._production = production
        self._rewrap_batch_size = rewrap_batch_size
        self._event_poll_interval_s = event_poll_interval_s
        self.webhook_settings = webhooks
        self._destroy_delay = destroy_delay
        self._destroy_interval_s = destroy_interval_s
        self._clock = clock
        # Wall-clock time for the signals' freshness windows (tests inject theirs).
        self._signal_clock = signal_clock
        self._event_sequencer_fallback_s = event_sequencer_fallback_s
        self._expiry_reminders = expiry_reminders
        self._recovery_window = connection_recovery_window
        self._purge_interval_s = purge_interval_s
        self._rewrap_worker = rewrap_worker
        self._audit_checkpoint_interval_s = audit_checkpoint_interval_s
        self._audit_retention = audit_retention
        self._audit_metrics = audit_metrics
        self._organization_keys_attached = False

    @classmethod
    def from_settings(
        cls,
        db: Database,
        settings: Settings,
        *,
        key_manager: keys.KeyManager,
        access: AccessService,
        audit_signer: keys.AuditSigner | None,
    ) -> Components:
        """The graph ``singura-vault serve`` runs, every option from ``settings``; the
        arguments are what serve has opened or checked first (the pool, the root keys,
        API-key authentication, the audit signer)."""
        return cls(
            db,
            key_manager=key_manager,
            access=access,
            audit_signer=audit_signer,
            oauth=settings.oauth,
            production=settings.production,
            rewrap_batch_size=settings.rewrap_batch_size,
            webhooks=settings.webhooks,
            destroy_delay=timedelta(seconds=settings.destroy_delay_s),
            expiry_reminders=settings.expiry_reminders,
            connection_recovery_window=timedelta(seconds=settings.connection_recovery_window_s),
            rewrap_worker=True,
            audit_checkpoint_interval_s=settings.audit_checkpoint_interval_s,
            audit_retention=(
                timedelta(days=settings.audit_retention_days)
                if settings.audit_retention_days
                else None
            ),
            audit_metrics=settings.metrics_listen is not None,
        )

    def background_jobs(self) -> list[tuple[str, TaskFactory]]:
        """The loops this graph runs beside the gRPC server, each by its task name.

        Every process runs them (their shared state is in PostgreSQL); VaultServer
        starts them after it serves and cancels and awaits them when it stops.
        """
        jobs: list[tuple[str, TaskFactory]] = [("audit-sequencer", self.sequencer.run_forever)]
        if self.refresh_worker is not None:
            jobs.append(("oauth-refresh-worker", self.refresh_worker.run_forever))
        if self.webhook_worker is not None:
            jobs.append(("webhook-delivery-worker", self.webhook_worker.run_forever))
        jobs.append(("credential-version-destroyer", self.version_destroyer.run_forever))
        jobs.append(("connection-purge", self.connection_purger.run_forever))
        if self.access is not None:
            jobs.append(("api-key-changes", self.access.watch_key_changes))
        jobs.append(("event-sequencer", self.event_sequencer.run_forever))
        jobs.append(("expiry-reminders", self.expiry_reminders.run_forever))
        jobs.append(("event-wakeups", self.events.follow_other_processes))
        if self._rewrap_worker:
            # Key work of the operators (KeyService): rewrap jobs, and moving an
            # organization's data keys to or from its own root key.
            jobs.append(("rewrap-worker", self.rewrap.run_forever))
            jobs.append(("organization-key-migration", self.organization_key_migration.run_forever))
        if self._audit_metrics:
            jobs.append(("audit-metrics", partial(track_appended_total, self.audit_repository)))
        if self._audit_checkpoint_interval_s > 0 and self.audit_checkpoints.enabled:
            jobs.append(
                (
                    "audit-checkpoints",
                    partial(self.audit_checkpoints.run_forever, self._audit_checkpoint_interval_s),
                )
            )
        if self._audit_retention is not None:
            jobs.append(
                ("audit-retention", partial(self.audit.prune_forever, self._audit_retention))
            )
        return jobs

    @property
    def key_manager(self) -> keys.KeyManager:
        if self._key_manager is None:
            raise RuntimeError("these components were built without a key manager")
        if not self._organization_keys_attached:
            # Data keys wrapped by an organization's own root key name their provider
            # row; the key manager reads it through this service (it has no database).
            self._organization_keys_attached = True
            self._key_manager.attach_organization_keys(
                self.organization_keys.load, allow_http=not self._production
            )
        return self._key_manager

    # -- tenants and credentials --------------------------------------------------------

    @cached_property
    def organizations(self) -> OrganizationService:
        return OrganizationService(
            OrganizationRepository(self.db), self._authorizer, on_erased=self._forget_keys
        )

    def _forget_keys(self, organization_id: UUID) -> None:
        if self._key_manager is not None:
            self.sealing.forget_organization_keys(organization_id)

    @cached_property
    def connection_repository(self) -> ConnectionRepository:
        return ConnectionRepository(self.db)

    @cached_property
    def connections(self) -> ConnectionService:
        return ConnectionService(
            self.connection_repository, self._authorizer, recovery_window=self._recovery_window
        )

    @cached_property
    def connection_purger(self) -> ConnectionPurger:
        """Removes deleted connections once their recovery window ends (every process)."""
        return ConnectionPurger(
            self.connection_repository, clock=self._clock, interval_s=self._purge_interval_s
        )

    @cached_property
    def credential_repository(self) -> CredentialRepository:
        return CredentialRepository(self.db)

    @cached_property
    def credential_store(self) -> CredentialStore:
        return CredentialStore(self.db, self.credential_repository)

    @cached_property
    def credential_reveals(self) -> CredentialReveals:
        return CredentialReveals(self.db, self.data_key_repository)

    @cached_property
    def credentials(self) -> CredentialService:
        return CredentialService(
            self.credential_repository,
            self.credential_store,
            self.credential_reveals,
            self.sealing,
            self._authorizer,
            destroy_delay=self._destroy_delay,
            clock=self._clock,
        )

    @cached_property
    def version_destroyer(self) -> VersionDestroyer:
        """The destruction job (every process runs it; its state is in PostgreSQL)."""
        return VersionDestroyer(
            self.credential_repository, clock=self._clock, interval_s=self._destroy_interval_s
        )

    # -- keys ---------------------------------------------------------------------------

    @cached_property
    def data_key_repository(self) -> DataKeyRepository:
        return DataKeyRepository(self.db)

    @cached_property
    def sealing(self) -> SealingService:
        """The one gateway that seals and opens values under data keys (credentials,
        OAuth client and signing secrets, PKCE verifiers, webhook signing secrets)."""
        return SealingService(
            self.data_key_repository,
            self.key_manager,
            organization_key_in_force=self.organization_keys.in_force,
        )

    @cached_property
    def key_admin_repository(self) -> KeyAdminRepository:
        return KeyAdminRepository(self.db)

    @cached_property
    def key_admin(self) -> KeyAdminService:
        return KeyAdminService(
            self.key_admin_repository,
            self.data_key_repository,
            self.key_manager,
            organization_key_in_force=self.organization_keys.in_force,
        )

    @cached_property
    def rewrap(self) -> RewrapWorker:
        return RewrapWorker(
            self.key_admin_repository, self.key_manager, batch_size=self._rewrap_batch_size
        )

    @cached_property
    def organization_key_repository(self) -> OrganizationKeyRepository:
        return OrganizationKeyRepository(self.db)

    @cached_property
    def organization_keys(self) -> OrganizationKeyService:
        """Customer-managed keys (docs/customer-managed-keys.md)."""
        if self._key_manager is None:
            raise RuntimeError("these components were built without a key manager")
        return OrganizationKeyService(
            self.organization_key_repository,
            self.key_admin_repository,
            self._key_manager,
            self._authorizer,
        )

    @cached_property
    def organization_key_migration(self) -> OrganizationKeyMigrationWorker:
        """Moves data keys between root keys (every process runs one; state in PostgreSQL)."""
        return OrganizationKeyMigrationWorker(
            self.organization_key_repository, self.organization_keys, self.key_manager
        )

    # -- audit --------------------------------------------------------------------------

    @cached_property
    def audit_repository(self) -> AuditRepository:
        return AuditRepository(self.db)

    @cached_property
    def sequencer(self) -> AuditSequencer:
        return AuditSequencer(self.audit_repository)

    @cached_property
    def audit(self) -> AuditService:
        return AuditService(self.audit_repository, self._authorizer, self.sequencer)

    @cached_property
    def audit_checkpoints(self) -> AuditCheckpointService:
        return AuditCheckpointService(
            AuditCheckpointRepository(self.db), self._audit_signer, self._authorizer
        )

    # -- events -------------------------------------------------------------------------

    @cached_property
    def event_repository(self) -> EventRepository:
        return EventRepository(self.db)

    @cached_property
    def events(self) -> EventService:
        """ListEvents and WatchEvents over the outbox (woken by this process's commits,
        its sequencer and other processes' sequencers)."""
        return EventService(
            self.event_repository, self._authorizer, poll_interval_s=self._event_poll_interval_s
        )

    @cached_property
    def event_sequencer(self) -> EventSequencer:
        """Numbers committed events for admin watches; wakes this process's watches."""
        return EventSequencer(
            self.event_repository,
            on_sequenced=self.events.wake,
            fallback_interval_s=self._event_sequencer_fallback_s,
        )

    @cached_property
    def expiry_reminders(self) -> ExpiryReminderJob:
        """credential.expiring / credential.expired (SINGURA_EXPIRY_REMINDERS)."""
        return ExpiryReminderJob(
            self.event_repository,
            self._expiry_reminders,
            now=self._clock,
            on_sent=self.event_sequencer.wake,
        )

    # -- webhooks -----------------------------------------------------------------------

    @cached_property
    def webhook_repository(self) -> WebhookRepository:
        return WebhookRepository(self.db)

    @cached_property
    def webhooks(self) -> WebhookService:
        return WebhookService(
            self.webhook_repository,
            self.sealing,
            production=self._production,
            secret_overlap=timedelta(seconds=self.webhook_settings.secret_overlap_s),
            authorizer=self._authorizer,
        )

    def webhook_worker_with(self, **options: object) -> WebhookWorker:
        """A delivery worker as configured; ``options`` are WebhookWorker's keyword
        options (tests give a clock and jitter of their own)."""
        settings = self.webhook_settings
        return WebhookWorker(
            self.webhook_repository,
            self.sealing,
            WebhookSender(
                WebhookEgressSettings(
                    connect_timeout_s=settings.connect_timeout_s,
                    timeout_s=settings.timeout_s,
                    production=self._production,
                )
            ),
            DeliveryPolicy(
                retry_for=timedelta(seconds=settings.retry_for_s),
                disable_after=timedelta(seconds=settings.disable_after_s),
                # Longer than an attempt can take (the egress timeout bounds it).
                lease=timedelta(seconds=2 * settings.timeout_s + 2),
            ),
            interval_s=settings.interval_s,
            **options,  # type: ignore[arg-type]  # WebhookWorker's keyword options, passed through
        )

    @cached_property
    def webhook_worker(self) -> WebhookWorker | None:
        """None when SINGURA_WEBHOOK_WORKER is off."""
        if not self.webhook_settings.worker:
            return None
        return self.webhook_worker_with()

    # -- OAuth --------------------------------------------------------------------------

    @cached_property
    def oauth_repository(self) -> OAuthRepository:
        return OAuthRepository(self.db)

    @cached_property
    def egress(self) -> EgressSettings:
        """The rules of every outbound call to a provider (providers/egress.py)."""
        settings = self.oauth_settings
        return EgressSettings(
            connect_timeout_s=settings.connect_timeout_s,
            total_timeout_s=settings.timeout_s,
            revoke_timeout_s=settings.revoke_timeout_s,
            proxy=settings.proxy,
            allow_loopback_http=not self._production,
        )

    @cached_property
    def token_endpoint(self) -> TokenEndpointClient:
        return TokenEndpointClient(self.egress)

    # -- provider signals ---------------------------------------------------------------

    @cached_property
    def risc_keys(self) -> JwksCache:
        """The RISC issuer's key set, fetched through the egress rules and cached."""
        settings = self.oauth_settings
        return JwksCache(
            RiscSettings(settings.risc_issuer, settings.risc_jwks_url, settings.risc_jwks_ttl_s),
            self.egress,
            time.monotonic,
        )

    @cached_property
    def signals(self) -> SignalService:
        """IngestProviderSignal: Slack Events API requests and Google RISC tokens."""
        settings = self.oauth_settings
        return SignalService(
            SignalRepository(self.db),
            self.sealing,
            self.risc_keys,
            RiscSettings(settings.risc_issuer, settings.risc_jwks_url, settings.risc_jwks_ttl_s),
            self._authorizer,
            clock=self._signal_clock,
        )

    @cached_property
    def refresher(self) -> TokenRefresher:
        settings = self.oauth_settings
        return TokenRefresher(
            self.oauth_repository,
            self.sealing,
            self.token_endpoint,
            RefreshPolicy(
                cooldown=timedelta(seconds=settings.refresh_cooldown_s),
                margin=timedelta(seconds=settings.refresh_margin_s),
                # A waiting refresh outlasts the provider call it waits for.
                lock_wait_s=settings.timeout_s + 10.0,
            ),
        )

    @cached_property
    def refresh_worker(self) -> RefreshWorker | None:
        """None when SINGURA_REFRESH_WORKER is off."""
        settings = self.oauth_settings
        if not settings.refresh_worker:
            return None
        return RefreshWorker(
            self.oauth_repository,
            self.refresher,
            keepalive=timedelta(seconds=settings.refresh_keepalive_s),
            interval_s=settings.refresh_interval_s,
        )

    @cached_property
    def oauth_clients(self) -> OAuthClientService:
        return OAuthClientService(
            self.oauth_repository,
            self.sealing,
            allow_loopback_http=not self._production,
            authorizer=self._authorizer,
        )

    @cached_property
    def connect(self) -> ConnectService:
        """StartAuthorization and CompleteAuthorization (the connect flow)."""
        settings = self.oauth_settings
        return ConnectService(
            AuthorizationRepository(self.db),
            self.oauth_repository,
            self.sealing,
            self.token_endpoint,
            allow_loopback_http=not self._production,
            state_ttl=timedelta(seconds=settings.state_ttl_s),
            refresh_margin=timedelta(seconds=settings.refresh_margin_s),
            # A waiting completion outlasts the code exchange it waits for.
            lock_wait_s=settings.timeout_s + 10.0,
            authorizer=self._authorizer,
        )

    @cached_property
    def access_tokens(self) -> AccessTokenService:
        return AccessTokenService(
            self.refresher,
            self.credentials,
            self.credential_repository,
            self.connection_repository,
            self._authorizer,
        )

    @cached_property
    def revoker(self) -> ProviderRevoker:
        """revoke_at_provider of DeleteConnection and RevokeCredential."""
        return ProviderRevoker(
            self.oauth_repository,
            self.sealing,
            self.connection_repository,
            self.token_endpoint,
            self._authorizer,
        )

    async def aclose(self) -> None:
        """Drain what must finish and release outbound connections (pool left open)."""
        if "refresher" in self.__dict__:
            # A refresh whose callers are gone still commits what the provider answered.
            await self.refresher.drain()
        if "token_endpoint" in self.__dict__:
            await self.token_endpoint.aclose()
        worker = self.__dict__.get("webhook_worker")
        if worker is not None:
            await worker.aclose()
        if "risc_keys" in self.__dict__:
            await self.risc_keys.aclose()
