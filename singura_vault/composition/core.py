"""The core of the object graph: tenants, credentials, keys, audit and events.

``CoreParts`` builds, on first use, every repository and use case that the vault's
own data needs, and the key manager it hands to the sealing path. ``Components``
(``singura_vault.composition``) sets the options declared here; the outbound parts
(``composition/outbound.py``) build on these. Nothing here starts a task.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from uuid import UUID

from singura_vault import keys
from singura_vault.clock import Clock
from singura_vault.db.pool import Database
from singura_vault.repositories.audit import AuditRepository
from singura_vault.repositories.audit_checkpoints import AuditCheckpointRepository
from singura_vault.repositories.connections import ConnectionRepository
from singura_vault.repositories.credential_reveals import CredentialReveals
from singura_vault.repositories.credential_store import CredentialStore
from singura_vault.repositories.credentials import CredentialRepository
from singura_vault.repositories.data_keys import DataKeyRepository
from singura_vault.repositories.events import EventRepository
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.repositories.organization_keys import OrganizationKeyRepository
from singura_vault.repositories.organizations import OrganizationRepository
from singura_vault.service.access import AccessService
from singura_vault.service.audit import AuditService
from singura_vault.service.audit_checkpoints import AuditCheckpointService
from singura_vault.service.audit_sequencer import AuditSequencer
from singura_vault.service.authz import Authorizer
from singura_vault.service.connection_purge import ConnectionPurger
from singura_vault.service.connections import ConnectionService
from singura_vault.service.credentials import (
    CredentialService,
)
from singura_vault.service.event_sequencer import EventSequencer
from singura_vault.service.events import EventService
from singura_vault.service.expiry_reminders import ExpiryReminderJob
from singura_vault.service.key_admin import KeyAdminService
from singura_vault.service.organization_keys import (
    OrganizationKeyMigrationWorker,
    OrganizationKeyService,
)
from singura_vault.service.organizations import OrganizationService
from singura_vault.service.rewrap import RewrapWorker
from singura_vault.service.sealing import SealingService
from singura_vault.service.version_destroyer import VersionDestroyer


class CoreParts:
    """Tenants, credentials, keys, audit and events over one Database, each built once.

    The attributes are the graph's options; ``Components.__init__`` sets them.
    """

    db: Database
    access: AccessService | None
    _key_manager: keys.KeyManager | None
    _authorizer: Authorizer | None
    _audit_signer: keys.AuditSigner | None
    _production: bool
    _rewrap_batch_size: int
    _event_poll_interval_s: float
    _destroy_delay: timedelta
    _destroy_interval_s: float
    _clock: Clock
    _event_sequencer_fallback_s: float
    _expiry_reminders: tuple[tuple[str, float], ...]
    _recovery_window: timedelta
    _purge_interval_s: float
    _organization_keys_attached: bool

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
