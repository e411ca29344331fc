"""The outbound parts of the object graph: webhooks, OAuth and provider signals.

``OutboundParts`` adds to the core (``composition/core.py``) everything that talks to
the outside through the providers' egress: webhook delivery, the OAuth clients,
token refresh and revocation, the connect flow, and the signals of providers. Each is
built on first use from ``OAuthSettings`` and ``WebhookSettings``; ``Components.aclose``
releases the outbound connections of those that were built.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from functools import cached_property

from singura_vault.composition.core import CoreParts
from singura_vault.config import OAuthSettings, WebhookSettings
from singura_vault.providers import (
    EgressSettings,
    TokenEndpointClient,
    WebhookEgressSettings,
    WebhookSender,
)
from singura_vault.providers.signals import JwksCache, RiscSettings
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.repositories.oauth_authorizations import AuthorizationRepository
from singura_vault.repositories.signals import SignalRepository
from singura_vault.repositories.webhooks import WebhookRepository
from singura_vault.service.oauth_clients import OAuthClientService
from singura_vault.service.oauth_connect import ConnectService
from singura_vault.service.oauth_refresh import RefreshPolicy, TokenRefresher
from singura_vault.service.oauth_revocation import ProviderRevoker
from singura_vault.service.oauth_tokens import AccessTokenService
from singura_vault.service.oauth_worker import RefreshWorker
from singura_vault.service.signals import SignalService
from singura_vault.service.webhook_worker import DeliveryPolicy, WebhookWorker
from singura_vault.service.webhooks import WebhookService


class OutboundParts(CoreParts):
    """Webhooks, OAuth and provider signals, each built once over the core parts."""

    oauth_settings: OAuthSettings
    webhook_settings: WebhookSettings
    _signal_clock: Callable[[], float]

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
