"""The composition root: the one place that builds the vault's object graph.

``Components`` turns a ``Database`` and the few things that differ between callers
(the key manager, the authentication service, the audit signer, OAuth settings)
into every repository, use case and background worker of one vault process. The
server, the CLI commands, the benchmarks and the tests all build through it, so a
new service is wired once and nobody assembles a partial graph of their own.
``Components.from_settings`` is the graph ``singura-vault serve`` runs, and
``background_jobs()`` says which loops that graph runs beside the gRPC server; it
starts none of them: ``server.VaultServer`` runs them in its task registry
(``tasks.BackgroundTasks``), inside the process lifecycle that ``process.serve`` owns.

Each part is built on first use and then shared: ``singura-vault audit prune``
asks only for ``audit`` and never needs a key manager, while ``VaultServer`` asks
for everything.

The package splits the graph by area: this module holds ``Components`` itself (its
options, ``from_settings``, ``background_jobs`` and ``aclose``), ``core.py`` the
tenants, credentials, keys, audit and events, ``outbound.py`` webhooks, OAuth and
provider signals (built over the core), and ``access.py`` API-key authentication,
which the server and the tests build apart from the graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial

from singura_vault import keys
from singura_vault.clock import Clock, utc_now
from singura_vault.composition.outbound import OutboundParts
from singura_vault.config import DEFAULT_EXPIRY_REMINDERS, OAuthSettings, Settings, WebhookSettings
from singura_vault.db.pool import Database
from singura_vault.service.access import AccessService
from singura_vault.service.audit import track_appended_total
from singura_vault.service.authz import Authorizer
from singura_vault.service.connection_purge import DEFAULT_INTERVAL_S as DEFAULT_PURGE_INTERVAL_S
from singura_vault.service.connections import DEFAULT_RECOVERY_WINDOW
from singura_vault.service.credentials import DEFAULT_DESTROY_DELAY
from singura_vault.service.event_sequencer import FALLBACK_INTERVAL_S as SEQUENCER_FALLBACK_S
from singura_vault.service.events import DEFAULT_POLL_INTERVAL_S
from singura_vault.service.rewrap import BATCH_SIZE
from singura_vault.service.version_destroyer import DEFAULT_INTERVAL_S
from singura_vault.tasks import TaskFactory

# Tests of other parts and the benchmarks run without the background refresh.
NO_BACKGROUND_REFRESH = OAuthSettings(refresh_worker=False)
# Tests of other parts and the benchmarks run without the webhook delivery worker.
NO_WEBHOOK_WORKER = WebhookSettings(worker=False)


class Components(OutboundParts):
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
