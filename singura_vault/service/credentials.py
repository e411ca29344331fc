"""Credential use cases: the only code that holds plaintext, and only briefly.

It is one of the few importers of the sealed ``keys`` package (the allow-list is
the "key package is sealed" contract in pyproject.toml, which the build checks).
Values arrive as UTF-8 text, are sealed with AES-256-GCM under the organization's
current data key for the row the store has planned, and leave again only through
:meth:`reveal`, whose audit event the repository commits before the value is
returned.
No value, key or ciphertext byte is ever logged or put into an error message.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from singura_vault import keys
from singura_vault.clock import Clock, utc_now
from singura_vault.config import Settings
from singura_vault.context import Role
from singura_vault.domain import (
    Credential,
    CredentialSlot,
    CredentialState,
    CredentialType,
    CredentialVersionState,
    EncryptedCredential,
    EncryptedValue,
    OAuthClientRecord,
    PageCursor,
    SealedCredential,
    StoredDataKey,
    VersionTransition,
)
from singura_vault.errors import (
    ConfigError,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    InvariantBroken,
    PermissionDenied,
    VaultError,
)
from singura_vault.logs import get_logger
from singura_vault.repositories.credentials import (
    CredentialRepository,
    LiveDataKeys,
    NoDataKey,
    RevealTarget,
    StoreRequest,
    VersionChange,
)
from singura_vault.service import pagination, sealing, validation
from singura_vault.service.authz import (
    READ,
    REVEAL,
    REVEAL_ANY,
    REVEAL_REFRESH_TOKEN,
    WRITE,
    Authorizer,
)

log = get_logger(__name__)

MAX_VALUE_BYTES = 64 * 1024
MAX_EXPIRY_WINDOW = timedelta(days=3650)
MAX_BATCH_REVEAL = 100
# SINGURA_DESTROY_DELAY's default: GCP Secret Manager's version_destroy_ttl is a day too.
DEFAULT_DESTROY_DELAY = timedelta(hours=24)

# The organization's own root key in force, if any (service/organization_keys.py).
OrganizationKeyInForce = Callable[[UUID], Awaitable[keys.OrganizationKeyRecord | None]]


@dataclass(frozen=True)
class CredentialPage:
    credentials: tuple[Credential, ...]
    next_page_token: str


def load_key_manager(settings: Settings) -> keys.KeyManager:
    """Build the key manager from configuration; ConfigError explains a bad setup."""
    try:
        provider, mode = keys.load_key_provider(settings)
    except keys.KeyConfigError as exc:
        raise ConfigError(str(exc)) from None
    manager = keys.KeyManager(
        provider, organization_key_ttl_s=settings.organization_key_cache_ttl_s
    )
    log.info("root_keys_loaded", mode=mode, provider=manager.provider_description)
    return manager


def _slot_binding(slot: CredentialSlot, key: keys.DataKey) -> keys.CredentialBinding:
    return sealing.binding(
        slot.organization_id,
        slot.connection_id,
        slot.credential_id,
        slot.type.value,
        slot.version,
        key.version,
    )


def _reveal_roles(credential_type: CredentialType | None) -> tuple[Role, ...]:
    """The roles that may reveal a credential of this type: refresh tokens have a role
    of their own (#29; GetAccessToken refreshes inside the vault, so a client rarely
    needs one), every other type needs revealer."""
    return REVEAL_REFRESH_TOKEN if credential_type is CredentialType.REFRESH_TOKEN else REVEAL


def _reveal_action(credential_type: CredentialType | None) -> str:
    if credential_type is CredentialType.REFRESH_TOKEN:
        return "reveal refresh tokens"
    return "reveal credentials"


def _value_bytes(value: str) -> bytes:
    if not value:
        raise InvalidArgument("value", "is required")
    raw = value.encode("utf-8")
    if len(raw) > MAX_VALUE_BYTES:
        raise InvalidArgument(
            "value", f"is {len(raw)} bytes; the limit is {MAX_VALUE_BYTES} bytes (64 KiB)"
        )
    return raw


class CredentialService:
    """Store, list, reveal and revoke credentials of connections."""

    def __init__(
        self,
        repository: CredentialRepository,
        key_manager: keys.KeyManager,
        authorizer: Authorizer | None = None,
        *,
        destroy_delay: timedelta = DEFAULT_DESTROY_DELAY,
        clock: Clock = utc_now,
        organization_key_in_force: OrganizationKeyInForce | None = None,
    ) -> None:
        """``destroy_delay``: SINGURA_DESTROY_DELAY; ``clock``: what "now" is when a
        destruction is scheduled (the destruction job reads the same one);
        ``organization_key_in_force``: the organization's own root key, if it has one,
        that a new data key is wrapped by (customer-managed keys)."""
        self._repository = repository
        self._keys = key_manager
        self._authz = authorizer or Authorizer()
        self._destroy_delay = destroy_delay
        self._clock = clock
        self._organization_key_in_force = organization_key_in_force

    @property
    def key_manager(self) -> keys.KeyManager:
        """The key manager this service seals and opens with (key administration and
        the rewrap worker must use the same one, and its cache)."""
        return self._keys

    async def store(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        value: str,
        expires_at: datetime | None,
        request_id: str,
        expected_version: int | None = None,
    ) -> Credential:
        """Store the next version; with ``expected_version`` (0: none yet) only if the
        current version is that one, else ABORTED (CREDENTIAL_VERSION_MISMATCH)."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "store credentials")
        conn_id = validation.parse_uuid("connection_id", connection_id)
        if credential_type is None:
            raise InvalidArgument("type", "is required", example=CredentialType.ACCESS_TOKEN)
        plaintext = _value_bytes(value)
        key = validation.parse_optional_uuid("request_id", request_id)
        if expected_version is not None and expected_version < 0:
            raise InvalidArgument(
                "expected_version",
                "must be 0 (no version stored yet) or the version you expect to be current",
            )
        store = StoreRequest(conn_id, credential_type, expires_at, key, expected_version)

        async def seal(slot: CredentialSlot) -> EncryptedValue:
            return await self.seal_for(slot, plaintext)

        try:
            return await self._repository.store(org_id, store, seal)
        except NoDataKey:
            # The organization's first credential (or first after its keys were
            # shredded): make a data key, then store again. A concurrent store
            # may have made one already; then ours is simply not inserted.
            await self._create_data_key(org_id)
            return await self._repository.store(org_id, store, seal)

    async def get(self, organization_id: str, credential_id: str) -> Credential:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "read credentials")
        return await self._repository.get(
            org_id, validation.parse_uuid("credential_id", credential_id)
        )

    async def list(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        state: CredentialState | None,
        page_size: int,
        page_token: str,
    ) -> CredentialPage:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "list credentials")
        conn_id = validation.parse_uuid("connection_id", connection_id)
        size = pagination.page_size(page_size)
        filters = (
            str(org_id),
            str(conn_id),
            credential_type.value if credential_type else "",
            state.value if state else "",
        )
        after = pagination.decode_token(page_token, filters)
        rows = await self._repository.for_connection(
            org_id, conn_id, credential_type, state, after, size + 1
        )
        items, token = pagination.next_page(
            rows, size, filters, lambda c: PageCursor(c.created_at, c.id)
        )
        return CredentialPage(items, token)

    async def versions(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        page_size: int,
        page_token: str,
    ) -> CredentialPage:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "list credential versions")
        conn_id = validation.parse_uuid("connection_id", connection_id)
        if credential_type is None:
            raise InvalidArgument("type", "is required", example=CredentialType.ACCESS_TOKEN)
        size = pagination.page_size(page_size)
        filters = ("versions", str(org_id), str(conn_id), credential_type.value)
        after = pagination.decode_token(page_token, filters)
        rows = await self._repository.versions(
            org_id, conn_id, credential_type, after.id if after else None, size + 1
        )
        items, token = pagination.next_page(
            rows, size, filters, lambda c: PageCursor(c.created_at, c.id)
        )
        return CredentialPage(items, token)

    async def expiring(
        self, organization_id: str, within: timedelta, page_size: int, page_token: str
    ) -> CredentialPage:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "list expiring credentials")
        if within <= timedelta(0) or within > MAX_EXPIRY_WINDOW:
            raise InvalidArgument("within", "must be a positive duration of at most 3650 days")
        size = pagination.page_size(page_size)
        filters = ("expiring", str(org_id), str(within.total_seconds()))
        after = pagination.decode_token(page_token, filters)
        before = datetime.now(UTC) + within
        rows = await self._repository.expiring(org_id, before, after, size + 1)

        def cursor(credential: Credential) -> PageCursor:
            if credential.expires_at is None:
                raise InvariantBroken("cursor: credential.expires_at is None")
            return PageCursor(credential.expires_at, credential.id)

        items, token = pagination.next_page(rows, size, filters, cursor)
        return CredentialPage(items, token)

    async def reveal(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        version: int,
    ) -> tuple[Credential, str]:
        """Decrypt one version; the repository commits the attempt's audit event first."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, _reveal_roles(credential_type), _reveal_action(credential_type))
        conn_id = validation.parse_uuid("connection_id", connection_id)
        if credential_type is None:
            raise InvalidArgument("type", "is required", example=CredentialType.ACCESS_TOKEN)
        if version < 0:
            raise InvalidArgument("version", "must be 0 (current) or a version number")
        return await self._repository.reveal(org_id, conn_id, credential_type, version, self._open)

    async def reveal_if(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType,
        wanted: Callable[[Credential], bool],
    ) -> tuple[Credential, str] | None:
        """The current version's value if ``wanted`` accepts its credential; None if it
        does not or there is none (then nothing is decrypted or audited). For a use case
        that has authorized REVEAL itself (GetAccessToken's fresh path)."""
        return await self._repository.reveal_if(
            organization_id, RevealTarget(connection_id, credential_type, 0), self._open, wanted
        )

    async def reveal_many(
        self, organization_id: str, items: Sequence[tuple[str, CredentialType | None, int]]
    ) -> Sequence[tuple[Credential | None, str | VaultError]]:
        """Decrypt up to MAX_BATCH_REVEAL credentials with one read and one audit
        statement; each item's outcome on its own (a value, or its error), each found
        one audited.

        A key with either reveal role may call it; an item whose type needs the role
        the key lacks (a refresh token without refresh_token_revealer) gets
        PERMISSION_DENIED on its own, is not read, not decrypted and not audited (as a
        refused RevealCredential is not), and the other items are revealed: per-item
        outcomes are this call's contract, and a client mixing types should not lose a
        whole batch to one refresh token."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, REVEAL_ANY, "reveal credentials")
        if not 1 <= len(items) <= MAX_BATCH_REVEAL:
            raise InvalidArgument(
                "items", f"must hold 1 to {MAX_BATCH_REVEAL} credentials, not {len(items)}"
            )
        targets: list[RevealTarget] = []
        refused: dict[int, PermissionDenied] = {}
        for index, (connection_id, credential_type, version) in enumerate(items):
            where = f"items[{index}]"
            if credential_type is None:
                raise InvalidArgument(f"{where}.type", "is required")
            if version < 0:
                raise InvalidArgument(f"{where}.version", "must be 0 (current) or a version")
            target = RevealTarget(
                validation.parse_uuid(f"{where}.connection_id", connection_id),
                credential_type,
                version,
            )
            try:
                self._authz.require(
                    org_id, _reveal_roles(credential_type), _reveal_action(credential_type)
                )
            except PermissionDenied as exc:
                refused[index] = exc
                continue
            targets.append(target)
        if not refused:
            return await self._repository.reveal_many(org_id, targets, self._open)
        revealed = iter(
            await self._repository.reveal_many(org_id, targets, self._open) if targets else []
        )
        return [
            (None, refused[index]) if index in refused else next(revealed)
            for index in range(len(items))
        ]

    async def revoke(
        self, organization_id: str, credential_id: str, all_versions: bool
    ) -> Sequence[Credential]:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "revoke credentials")
        return await self._repository.revoke(
            org_id,
            validation.parse_uuid("credential_id", credential_id),
            all_versions,
        )

    async def disable_version(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        version: int,
    ) -> Credential:
        """DISABLED: refused on reveal and skipped as the current version."""
        return await self._change_version(
            organization_id, connection_id, credential_type, version, VersionTransition.DISABLE
        )

    async def enable_version(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        version: int,
    ) -> Credential:
        return await self._change_version(
            organization_id, connection_id, credential_type, version, VersionTransition.ENABLE
        )

    async def destroy_version(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        version: int,
    ) -> Credential:
        """Schedule the erasure of a version's ciphertext after the destroy delay; the
        version is DISABLED until then (VersionDestroyer erases it)."""
        return await self._change_version(
            organization_id, connection_id, credential_type, version, VersionTransition.DESTROY
        )

    async def cancel_destroy(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        version: int,
    ) -> Credential:
        return await self._change_version(
            organization_id,
            connection_id,
            credential_type,
            version,
            VersionTransition.CANCEL_DESTROY,
        )

    async def _change_version(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        version: int,
        transition: VersionTransition,
    ) -> Credential:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, _TRANSITION_ACTIONS[transition])
        conn_id = validation.parse_uuid("connection_id", connection_id)
        if credential_type is None:
            raise InvalidArgument("type", "is required", example=CredentialType.ACCESS_TOKEN)
        if version < 1:
            raise InvalidArgument(
                "version",
                "must be a version number (1 or more): a state change names one version, "
                "never the current one (0)",
            )
        destroy_at = (
            self._clock() + self._destroy_delay if transition is VersionTransition.DESTROY else None
        )
        change = await self._repository.change_version_state(
            org_id, RevealTarget(conn_id, credential_type, version), transition, destroy_at
        )
        if change.refused is not None:
            raise _transition_refused(change, transition)
        return change.credential

    async def seal_for(self, slot: CredentialSlot, plaintext: bytes) -> EncryptedValue:
        """Seal a value for the row slot describes, under the slot's data key."""
        data_key = await self._unwrap(slot.data_key)
        sealed = self._keys.seal(data_key, plaintext, _slot_binding(slot, data_key))
        return EncryptedValue(
            sealed.nonce,
            sealed.ciphertext,
            self._keys.fingerprint(data_key, plaintext),
            data_key.version,
        )

    async def open_stored(self, encrypted: EncryptedCredential) -> str:
        """Decrypt a credential read by another use case (the OAuth refresh reads its
        refresh token this way); the caller audits what it does with it."""
        organization_id = encrypted.credential.organization_id

        async def live_keys() -> list[StoredDataKey]:
            return await self._repository.live_data_keys(organization_id)

        return await self._open(encrypted, live_keys)

    async def seal_client_secret(
        self, organization_id: UUID, client_row_id: UUID, secret: str, signing_secret: str = ""
    ) -> tuple[EncryptedValue, EncryptedValue | None]:
        """Seal an OAuth client secret, and its signing secret if it has one (Slack),
        under the organization's current data key: one key version seals both (the row
        records one)."""
        stored = await self._repository.current_data_key(organization_id)
        if stored is None:
            await self._create_data_key(organization_id)
            stored = await self._repository.current_data_key(organization_id)
            if stored is None:
                raise InvariantBroken("seal_client_secret: stored is None")
        data_key = await self._unwrap(stored)
        plaintext = secret.encode("utf-8")
        sealed = self._keys.seal(
            data_key,
            plaintext,
            sealing.client_secret_binding(organization_id, client_row_id, data_key.version),
        )
        signing: EncryptedValue | None = None
        if signing_secret:
            sealed_signing = self._keys.seal(
                data_key,
                signing_secret.encode("utf-8"),
                sealing.signing_secret_binding(organization_id, client_row_id, data_key.version),
            )
            signing = EncryptedValue(
                sealed_signing.nonce, sealed_signing.ciphertext, "", data_key.version
            )
        return EncryptedValue(sealed.nonce, sealed.ciphertext, "", data_key.version), signing

    async def open_signing_secrets(
        self, organization_id: UUID, sealed: Sequence[tuple[UUID, EncryptedValue]]
    ) -> builtins.list[tuple[UUID, bytes]]:
        """The signing secrets of an organization's OAuth clients (row id, sealed), for
        checking a provider's request signature (service/signals.py) and nothing else.
        One that cannot be opened (its data key destroyed, or altered) is left out and
        logged: a signal it would have verified is then refused, never accepted."""
        live = {k.version: k for k in await self._repository.live_data_keys(organization_id)}
        opened: builtins.list[tuple[UUID, bytes]] = []
        for row_id, value in sealed:
            stored = live.get(value.key_version)
            if stored is None:
                log.warning(
                    "oauth_signing_secret_unusable",
                    organization_id=str(organization_id),
                    key_version=value.key_version,
                )
                continue
            data_key = await self._unwrap(stored)
            try:
                plaintext = self._keys.open(
                    data_key,
                    keys.Sealed(nonce=value.nonce, ciphertext=value.ciphertext),
                    sealing.signing_secret_binding(organization_id, row_id, data_key.version),
                )
            except keys.IntegrityError:
                log.error(
                    "oauth_client_integrity_failure",
                    security_event=True,
                    organization_id=str(organization_id),
                    key_version=value.key_version,
                )
                continue
            opened.append((row_id, plaintext))
        return opened

    async def open_client_secret(self, client: OAuthClientRecord) -> str:
        """The secret of a stored OAuth client; FAILED_PRECONDITION if it cannot be
        opened (its data key destroyed), DATA_LOSS if it was altered."""
        organization_id = client.settings.organization_id
        if client.data_key is None:
            raise FailedPrecondition(
                f"the OAuth client secret for {client.settings.platform.value} cannot be "
                f"decrypted: data key version {client.secret.key_version} of organization "
                f"{organization_id} was destroyed; set the client again with SetOAuthClient"
            )
        data_key = await self._unwrap(client.data_key)
        try:
            plaintext = self._keys.open(
                data_key,
                keys.Sealed(nonce=client.secret.nonce, ciphertext=client.secret.ciphertext),
                sealing.client_secret_binding(organization_id, client.id, data_key.version),
            )
        except keys.IntegrityError:
            log.error(
                "oauth_client_integrity_failure",
                security_event=True,
                platform=client.settings.platform.value,
                key_version=client.secret.key_version,
            )
            raise DataLoss(
                f"the OAuth client secret for {client.settings.platform.value} in organization "
                f"{organization_id} failed its integrity check (altered or moved); set the "
                "client again with SetOAuthClient"
            ) from None
        return plaintext.decode("utf-8")

    async def seal_pkce_verifier(
        self, organization_id: UUID, authorization_id: UUID, verifier: str
    ) -> EncryptedValue:
        """Seal a PKCE verifier (the connect flow, migration 019) under the
        organization's current data key, bound to its authorization row."""
        stored = await self._repository.current_data_key(organization_id)
        if stored is None:
            await self._create_data_key(organization_id)
            stored = await self._repository.current_data_key(organization_id)
            if stored is None:
                raise InvariantBroken("seal_pkce_verifier: stored is None")
        data_key = await self._unwrap(stored)
        sealed = self._keys.seal(
            data_key,
            verifier.encode("utf-8"),
            sealing.pkce_verifier_binding(organization_id, authorization_id, data_key.version),
        )
        return EncryptedValue(sealed.nonce, sealed.ciphertext, "", data_key.version)

    async def open_pkce_verifier(
        self,
        organization_id: UUID,
        authorization_id: UUID,
        sealed: EncryptedValue,
        data_key: StoredDataKey | None,
    ) -> str:
        """A sealed PKCE verifier; FAILED_PRECONDITION if its data key is gone (the
        user starts again), DATA_LOSS if it was altered."""
        if data_key is None:
            raise FailedPrecondition(
                f"the authorization's PKCE verifier cannot be decrypted: data key version "
                f"{sealed.key_version} of organization {organization_id} is no longer live; "
                "start the authorization again",
                reason="OAUTH_STATE_UNUSABLE",
            )
        key = await self._unwrap(data_key)
        try:
            plaintext = self._keys.open(
                key,
                keys.Sealed(nonce=sealed.nonce, ciphertext=sealed.ciphertext),
                sealing.pkce_verifier_binding(organization_id, authorization_id, key.version),
            )
        except keys.IntegrityError:
            log.error(
                "oauth_verifier_integrity_failure",
                security_event=True,
                key_version=sealed.key_version,
            )
            raise DataLoss(
                f"the PKCE verifier of an authorization in organization {organization_id} "
                "failed its integrity check (altered or moved); start the authorization again"
            ) from None
        return plaintext.decode("utf-8")

    async def seal_webhook_secret(
        self, organization_id: UUID, endpoint_id: UUID, secret_id: UUID, secret: bytes
    ) -> EncryptedValue:
        """Seal a webhook signing secret (migration 026) under the organization's current
        data key, bound to its endpoint and its own id."""
        stored = await self._repository.current_data_key(organization_id)
        if stored is None:
            await self._create_data_key(organization_id)
            stored = await self._repository.current_data_key(organization_id)
            if stored is None:
                raise InvariantBroken("seal_webhook_secret: stored is None")
        data_key = await self._unwrap(stored)
        sealed = self._keys.seal(
            data_key,
            secret,
            sealing.webhook_secret_binding(
                organization_id, endpoint_id, secret_id, data_key.version
            ),
        )
        return EncryptedValue(sealed.nonce, sealed.ciphertext, "", data_key.version)

    async def open_webhook_secret(
        self,
        organization_id: UUID,
        endpoint_id: UUID,
        secret_id: UUID,
        sealed: EncryptedValue,
        data_key: StoredDataKey | None,
    ) -> bytes:
        """A webhook signing secret, for the delivery worker only (it signs with it and
        forgets it); FAILED_PRECONDITION if its data key is gone, DATA_LOSS if altered."""
        if data_key is None:
            raise FailedPrecondition(
                f"the signing secret of webhook endpoint {endpoint_id} cannot be decrypted: "
                f"data key version {sealed.key_version} is no longer live; rotate the "
                "secret with RotateWebhookSecret"
            )
        key = await self._unwrap(data_key)
        try:
            return self._keys.open(
                key,
                keys.Sealed(nonce=sealed.nonce, ciphertext=sealed.ciphertext),
                sealing.webhook_secret_binding(
                    organization_id, endpoint_id, secret_id, key.version
                ),
            )
        except keys.IntegrityError:
            log.error(
                "webhook_secret_integrity_failure",
                security_event=True,
                endpoint_id=str(endpoint_id),
                key_version=sealed.key_version,
            )
            raise DataLoss(
                f"the signing secret of webhook endpoint {endpoint_id} failed its integrity "
                "check (altered or moved); rotate it with RotateWebhookSecret"
            ) from None

    def forget_organization_keys(self, organization_id: UUID) -> None:
        """Drop an erased organization's unwrapped data keys from this process's cache
        (DeleteOrganization has deleted the wrapped ones with the organization)."""
        self._keys.forget_organization(organization_id)

    async def _open(self, encrypted: EncryptedCredential, other_keys: LiveDataKeys) -> str:
        credential = encrypted.credential
        if credential.state is not CredentialState.REVOKED:
            unusable = version_unusable(credential)
            if unusable is not None:
                raise unusable
        if encrypted.value is None:
            raise FailedPrecondition(
                f"credential {credential.id} (version {credential.version}) is revoked; "
                "its value was destroyed and cannot be revealed",
                reason="CREDENTIAL_REVOKED",
            )
        if encrypted.data_key is None:
            raise FailedPrecondition(
                f"credential {credential.id} cannot be decrypted: data key version "
                f"{credential.key_version} of its organization was destroyed"
            )
        data_key = await self._unwrap(encrypted.data_key)
        stored = SealedCredential(
            id=credential.id,
            connection_id=credential.connection_id,
            type=credential.type,
            version=credential.version,
            key_version=credential.key_version,
            nonce=encrypted.value.nonce,
            ciphertext=encrypted.value.ciphertext,
        )
        sealed = keys.Sealed(nonce=stored.nonce, ciphertext=stored.ciphertext)
        binding = sealing.sealed_binding(credential.organization_id, stored, stored.key_version)
        try:
            plaintext = self._keys.open(data_key, sealed, binding)
        except keys.IntegrityError:
            log.error(
                "credential_integrity_failure",
                security_event=True,
                credential_id=str(credential.id),
                connection_id=str(credential.connection_id),
                version=credential.version,
                key_version=credential.key_version,
            )
            raise await self._integrity_failure(credential, stored, other_keys) from None
        return plaintext.decode("utf-8")

    async def _integrity_failure(
        self, credential: Credential, stored: SealedCredential, other_keys: LiveDataKeys
    ) -> DataLoss:
        """Tell a record that names the wrong key apart from a ciphertext nothing opens."""
        live = {key.version: key for key in await other_keys()}
        opened = await sealing.open_under_any(self._keys, credential.organization_id, stored, live)
        if opened is not None:
            return DataLoss(
                f"credential {credential.id} is intact but its record names data key version "
                f"{credential.key_version} while version {opened.key_version} sealed it; run "
                f"`singura-vault keys repair --organization {credential.organization_id}` "
                "to correct the record"
            )
        return DataLoss(
            f"credential {credential.id} failed its integrity check under every live data key "
            f"version of its organization ({', '.join(map(str, sorted(live))) or 'none'}): "
            "its stored ciphertext or row was altered or moved; restore it from a backup or "
            "store it again"
        )

    async def _unwrap(self, stored: StoredDataKey) -> keys.DataKey:
        return await sealing.unwrap(self._keys, stored)

    async def _create_data_key(self, organization_id: UUID) -> None:
        version = await self._repository.next_data_key_version(organization_id)
        organization_key = (
            await self._organization_key_in_force(organization_id)
            if self._organization_key_in_force is not None
            else None
        )
        stored = await sealing.create_data_key(
            self._keys, organization_id, version, organization_key
        )
        await self._repository.add_data_key(stored, only_if_none=True)


_TRANSITION_ACTIONS = {
    VersionTransition.DISABLE: "disable credential versions",
    VersionTransition.ENABLE: "enable credential versions",
    VersionTransition.DESTROY: "destroy credential versions",
    VersionTransition.CANCEL_DESTROY: "cancel the destruction of credential versions",
}


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%dT%H:%M:%SZ}" if at is not None else "an unknown time"


def _version_metadata(credential: Credential) -> dict[str, str]:
    metadata = {"version": str(credential.version)}
    if credential.destroy_at is not None:
        metadata["destroy_time"] = _when(credential.destroy_at)
    return metadata


def version_unusable(credential: Credential) -> FailedPrecondition | None:
    """Why a version's value may not be revealed (or used by a refresh) for its version
    state, if it may not: FAILED_PRECONDITION, CREDENTIAL_VERSION_DESTROYED or
    CREDENTIAL_VERSION_DISABLED (also while its destruction is scheduled)."""
    which = (
        f"credential {credential.id} (version {credential.version} of connection "
        f"{credential.connection_id}'s {credential.type.value})"
    )
    if credential.version_state is CredentialVersionState.DESTROYED:
        return FailedPrecondition(
            f"{which} was destroyed at {_when(credential.destroy_at)}: its value was erased "
            "for good; store a new version",
            reason="CREDENTIAL_VERSION_DESTROYED",
            metadata=_version_metadata(credential),
        )
    if credential.version_state is CredentialVersionState.DISABLED:
        if credential.destroy_at is not None:
            what = (
                f"is scheduled for destruction at {_when(credential.destroy_at)}; "
                "CancelCredentialDestroy before then keeps it"
            )
        else:
            what = "is disabled; EnableCredentialVersion makes it revealable again"
        return FailedPrecondition(
            f"{which} {what}",
            reason="CREDENTIAL_VERSION_DISABLED",
            metadata=_version_metadata(credential),
        )
    return None


def _transition_refused(change: VersionChange, transition: VersionTransition) -> VaultError:
    """FAILED_PRECONDITION for a transition the version's state does not allow, with the
    reason a client switches on."""
    credential = change.credential
    which = (
        f"credential {credential.id} (version {credential.version} of connection "
        f"{credential.connection_id}'s {credential.type.value})"
    )
    metadata = _version_metadata(credential)
    if change.refused == "revoked":
        return FailedPrecondition(
            f"{which} is revoked: its value is gone and its state can no longer change",
            reason="CREDENTIAL_REVOKED",
            metadata=metadata,
        )
    if change.refused == "destroyed":
        return FailedPrecondition(
            f"{which} was destroyed at {_when(credential.destroy_at)}: it cannot be "
            "enabled, disabled or destroyed again, and its value is gone; store a new version",
            reason="CREDENTIAL_VERSION_DESTROYED",
            metadata=metadata,
        )
    if change.refused == "scheduled":
        return FailedPrecondition(
            f"{which} is already scheduled for destruction at "
            f"{_when(credential.destroy_at)}; call CancelCredentialDestroy first"
            + ("" if transition is VersionTransition.DESTROY else ", then change its state"),
            reason="CREDENTIAL_VERSION_DESTROY_SCHEDULED",
            metadata=metadata,
        )
    return FailedPrecondition(
        f"{which} has no destruction scheduled: there is nothing to cancel",
        reason="CREDENTIAL_VERSION_DESTROY_NOT_SCHEDULED",
        metadata=metadata,
    )
