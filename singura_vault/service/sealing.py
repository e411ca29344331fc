"""The sealing gateway: every seal and open of a value under an organization's data
key.

:class:`SealingService` holds the key manager for the credential path and for
the code that keeps secrets of its own: OAuth client and signing secrets and PKCE
verifiers (service/oauth_*.py), webhook signing secrets (service/webhooks.py, the
delivery worker), provider signal checks (service/signals.py). Those modules import
this one, never ``keys``. The associated data each kind is sealed with comes from
service/bindings.py, its one builder.

Like service/data_keys.py, it imports the sealed ``keys`` package; it returns
plaintext only to its caller and never logs or raises with key bytes or plaintext.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from singura_vault import keys
from singura_vault.domain.credentials import (
    Credential,
    CredentialSlot,
    CredentialState,
    EncryptedCredential,
    SealedCredential,
)
from singura_vault.domain.oauth import OAuthClientRecord
from singura_vault.domain.sealed import EncryptedValue, StoredDataKey
from singura_vault.errors import DataLoss, FailedPrecondition, InvariantBroken
from singura_vault.logs import get_logger
from singura_vault.repositories.credential_reveals import LiveDataKeys
from singura_vault.repositories.credential_store_request import Seal
from singura_vault.repositories.data_keys import DataKeyRepository
from singura_vault.service.bindings import (
    CredentialRow,
    binding,
    client_secret_binding,
    credential_binding,
    pkce_verifier_binding,
    signing_secret_binding,
    webhook_secret_binding,
)
from singura_vault.service.credential_versions import version_unusable
from singura_vault.service.data_keys import create_data_key, unwrap

log = get_logger(__name__)

# The organization's own root key in force, if any (service/organization_keys.py).
OrganizationKeyInForce = Callable[[UUID], Awaitable[keys.OrganizationKeyRecord | None]]


@dataclass(frozen=True)
class Opened:
    """A ciphertext opened: under which data-key version, and its plaintext."""

    key_version: int
    plaintext: bytes

    def __repr__(self) -> str:  # never the plaintext
        return f"<Opened under data key v{self.key_version}>"


async def open_under_any(
    key_manager: keys.KeyManager,
    organization_id: UUID,
    row: CredentialRow,
    recorded_version: int,
    sealed: keys.Sealed,
    data_keys: Mapping[int, StoredDataKey],
) -> Opened | None:
    """Open under the recorded data-key version first, then under every other live one.

    None if no live version opens it: the ciphertext (or the row facts bound into
    it) was altered, or it was sealed under a key that has since been destroyed.
    """
    order = sorted(data_keys, key=lambda v: (v != recorded_version, -v))
    for version in order:
        data_key = await unwrap(key_manager, data_keys[version])
        try:
            plaintext = key_manager.open(
                data_key, sealed, credential_binding(organization_id, row, version)
            )
        except keys.IntegrityError:
            continue
        return Opened(version, plaintext)
    return None


async def open_stored_under_any(
    key_manager: keys.KeyManager,
    organization_id: UUID,
    credential: SealedCredential,
    data_keys: Mapping[int, StoredDataKey],
) -> Opened | None:
    """:func:`open_under_any` for a credential as the rewrap and repair jobs read it."""
    sealed = keys.Sealed(credential.nonce, credential.ciphertext)
    return await open_under_any(
        key_manager, organization_id, credential, credential.key_version, sealed, data_keys
    )


class SealingService:
    """Seal and open values under an organization's data keys; the key manager's one
    holder outside the key administration jobs."""

    def __init__(
        self,
        data_keys: DataKeyRepository,
        key_manager: keys.KeyManager,
        *,
        organization_key_in_force: OrganizationKeyInForce | None = None,
    ) -> None:
        """``organization_key_in_force``: the organization's own root key, if it has
        one, that a new data key is wrapped by (customer-managed keys)."""
        self._data_keys = data_keys
        self._keys = key_manager
        self._organization_key_in_force = organization_key_in_force

    # -- credentials ----------------------------------------------------------------------

    async def seal_for(self, slot: CredentialSlot, plaintext: bytes) -> EncryptedValue:
        """Seal a value for the row slot describes, under the slot's data key."""
        data_key = await unwrap(self._keys, slot.data_key)
        sealed = self._keys.seal(
            data_key,
            plaintext,
            binding(
                slot.organization_id,
                slot.connection_id,
                slot.credential_id,
                slot.type.value,
                slot.version,
                data_key.version,
            ),
        )
        return EncryptedValue(
            sealed.nonce,
            sealed.ciphertext,
            self._keys.fingerprint(data_key, plaintext),
            data_key.version,
        )

    def sealer_of(self, value: str) -> Seal:
        """A sealer of ``value`` for whichever row slot the store gives it (an OAuth
        token is sealed only once the store has planned its version)."""

        async def seal(slot: CredentialSlot) -> EncryptedValue:
            return await self.seal_for(slot, value.encode("utf-8"))

        return seal

    async def open_credential(
        self, encrypted: EncryptedCredential, other_keys: LiveDataKeys
    ) -> str:
        """A credential version's value, refused for its state (disabled, destroyed,
        revoked) or its destroyed data key; DATA_LOSS if it fails its integrity check,
        telling a record that names the wrong key apart from an altered ciphertext
        (``other_keys`` is read only then). The reveal path's opener: the repository
        audits each call."""
        credential = encrypted.credential
        if credential.state is not CredentialState.REVOKED:
            unusable = version_unusable(credential)
            if unusable is not None:
                raise unusable
        value = encrypted.value
        if value is None:
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
        data_key = await unwrap(self._keys, encrypted.data_key)
        sealed = keys.Sealed(nonce=value.nonce, ciphertext=value.ciphertext)
        try:
            plaintext = self._keys.open(
                data_key,
                sealed,
                binding(
                    credential.organization_id,
                    credential.connection_id,
                    credential.id,
                    credential.type.value,
                    credential.version,
                    credential.key_version,
                ),
            )
        except keys.IntegrityError:
            log.error(
                "credential_integrity_failure",
                security_event=True,
                credential_id=str(credential.id),
                connection_id=str(credential.connection_id),
                version=credential.version,
                key_version=credential.key_version,
            )
            raise await self._integrity_failure(credential, sealed, other_keys) from None
        return plaintext.decode("utf-8")

    async def open_stored(self, encrypted: EncryptedCredential) -> str:
        """Decrypt a credential read by another use case (the OAuth refresh reads its
        refresh token this way); the caller audits what it does with it."""
        organization_id = encrypted.credential.organization_id

        async def live_keys() -> list[StoredDataKey]:
            return await self._data_keys.live_data_keys(organization_id)

        return await self.open_credential(encrypted, live_keys)

    async def _integrity_failure(
        self, credential: Credential, sealed: keys.Sealed, other_keys: LiveDataKeys
    ) -> DataLoss:
        """Tell a record that names the wrong key apart from a ciphertext nothing opens."""
        live = {key.version: key for key in await other_keys()}
        opened = await open_under_any(
            self._keys, credential.organization_id, credential, credential.key_version, sealed, live
        )
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

    # -- data keys ------------------------------------------------------------------------

    async def create_data_key(self, organization_id: UUID) -> None:
        """Give the organization a live data key if it has none (its first secret, or
        its first after its keys were shredded); a concurrent creation wins silently."""
        version = await self._data_keys.next_data_key_version(organization_id)
        organization_key = (
            await self._organization_key_in_force(organization_id)
            if self._organization_key_in_force is not None
            else None
        )
        stored = await create_data_key(self._keys, organization_id, version, organization_key)
        await self._data_keys.add_data_key(stored, only_if_none=True)

    async def _current_data_key(self, organization_id: UUID) -> keys.DataKey:
        """The organization's newest data key, unwrapped; made first if it has none."""
        stored = await self._data_keys.current_data_key(organization_id)
        if stored is None:
            await self.create_data_key(organization_id)
            stored = await self._data_keys.current_data_key(organization_id)
            if stored is None:
                raise InvariantBroken("_current_data_key: stored is None")
        return await unwrap(self._keys, stored)

    def _seal(
        self, data_key: keys.DataKey, plaintext: bytes, bound: keys.CredentialBinding
    ) -> EncryptedValue:
        sealed = self._keys.seal(data_key, plaintext, bound)
        return EncryptedValue(sealed.nonce, sealed.ciphertext, "", data_key.version)

    async def _open_secret(
        self,
        stored: StoredDataKey,
        value: EncryptedValue,
        bind: Callable[[int], keys.CredentialBinding],
    ) -> bytes | None:
        """A secret's plaintext, or None if it fails its integrity check (the caller
        logs that and refuses); ``bind`` gives its binding under a data-key version."""
        data_key = await unwrap(self._keys, stored)
        sealed = keys.Sealed(nonce=value.nonce, ciphertext=value.ciphertext)
        try:
            return self._keys.open(data_key, sealed, bind(data_key.version))
        except keys.IntegrityError:
            return None

    def forget_organization_keys(self, organization_id: UUID) -> None:
        """Drop an erased organization's unwrapped data keys from this process's cache
        (DeleteOrganization has deleted the wrapped ones with the organization)."""
        self._keys.forget_organization(organization_id)

    # -- OAuth client secrets, PKCE verifiers, webhook signing secrets ---------------------

    async def seal_client_secret(
        self, organization_id: UUID, client_row_id: UUID, secret: str, signing_secret: str = ""
    ) -> tuple[EncryptedValue, EncryptedValue | None]:
        """Seal an OAuth client secret, and its signing secret if it has one (Slack),
        under the organization's current data key: one key version seals both (the row
        records one)."""
        data_key = await self._current_data_key(organization_id)
        sealed = self._seal(
            data_key,
            secret.encode("utf-8"),
            client_secret_binding(organization_id, client_row_id, data_key.version),
        )
        signing: EncryptedValue | None = None
        if signing_secret:
            signing = self._seal(
                data_key,
                signing_secret.encode("utf-8"),
                signing_secret_binding(organization_id, client_row_id, data_key.version),
            )
        return sealed, signing

    async def open_signing_secrets(
        self, organization_id: UUID, sealed: Sequence[tuple[UUID, EncryptedValue]]
    ) -> list[tuple[UUID, bytes]]:
        """The signing secrets of an organization's OAuth clients (row id, sealed), for
        checking a provider's request signature (service/signals.py) and nothing else.
        One that cannot be opened (its data key destroyed, or altered) is left out and
        logged: a signal it would have verified is then refused, never accepted."""
        live = {k.version: k for k in await self._data_keys.live_data_keys(organization_id)}
        opened: list[tuple[UUID, bytes]] = []
        for row_id, value in sealed:
            stored = live.get(value.key_version)
            if stored is None:
                log.warning(
                    "oauth_signing_secret_unusable",
                    organization_id=str(organization_id),
                    key_version=value.key_version,
                )
                continue
            plaintext = await self._open_secret(
                stored,
                value,
                lambda version, row_id=row_id: signing_secret_binding(  # type: ignore[misc]
                    organization_id, row_id, version
                ),
            )
            if plaintext is None:
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
        plaintext = await self._open_secret(
            client.data_key,
            client.secret,
            lambda version: client_secret_binding(organization_id, client.id, version),
        )
        if plaintext is None:
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
            )
        return plaintext.decode("utf-8")

    async def seal_pkce_verifier(
        self, organization_id: UUID, authorization_id: UUID, verifier: str
    ) -> EncryptedValue:
        """Seal a PKCE verifier (the connect flow, migration 019) under the
        organization's current data key, bound to its authorization row."""
        data_key = await self._current_data_key(organization_id)
        return self._seal(
            data_key,
            verifier.encode("utf-8"),
            pkce_verifier_binding(organization_id, authorization_id, data_key.version),
        )

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
        plaintext = await self._open_secret(
            data_key,
            sealed,
            lambda version: pkce_verifier_binding(organization_id, authorization_id, version),
        )
        if plaintext is None:
            log.error(
                "oauth_verifier_integrity_failure",
                security_event=True,
                key_version=sealed.key_version,
            )
            raise DataLoss(
                f"the PKCE verifier of an authorization in organization {organization_id} "
                "failed its integrity check (altered or moved); start the authorization again"
            )
        return plaintext.decode("utf-8")

    async def seal_webhook_secret(
        self, organization_id: UUID, endpoint_id: UUID, secret_id: UUID, secret: bytes
    ) -> EncryptedValue:
        """Seal a webhook signing secret (migration 026) under the organization's current
        data key, bound to its endpoint and its own id."""
        data_key = await self._current_data_key(organization_id)
        return self._seal(
            data_key,
            secret,
            webhook_secret_binding(organization_id, endpoint_id, secret_id, data_key.version),
        )

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
        plaintext = await self._open_secret(
            data_key,
            sealed,
            lambda version: webhook_secret_binding(
                organization_id, endpoint_id, secret_id, version
            ),
        )
        if plaintext is None:
            log.error(
                "webhook_secret_integrity_failure",
                security_event=True,
                endpoint_id=str(endpoint_id),
                key_version=sealed.key_version,
            )
            raise DataLoss(
                f"the signing secret of webhook endpoint {endpoint_id} failed its integrity "
                "check (altered or moved); rotate it with RotateWebhookSecret"
            )
        return plaintext
