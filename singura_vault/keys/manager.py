"""KeyManager: envelope encryption for the sealing gateway (service/sealing.py).

It creates and unwraps per-organization data keys through a
:class:`KeyProvider`, keeps unwrapped keys in a bounded LRU cache, seals and
opens credentials with AES-256-GCM bound to a :class:`CredentialBinding`, and
fingerprints values. It never returns key bytes, and never logs, formats or
raises with a plaintext: ``open`` is the one path that gives plaintext back,
to its caller only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from singura_vault.errors import Unavailable
from singura_vault.keys.aead import KEY_SIZE, Aes256Gcm
from singura_vault.keys.binding import CredentialBinding, data_key_associated_data
from singura_vault.keys.datakey import DataKey
from singura_vault.keys.errors import IntegrityError, KeyConfigError, OrganizationKeyUnavailable
from singura_vault.keys.organization import (
    OrganizationKeyRecord,
    organization_key_prefix,
    provider_id_of,
    token_associated_data,
)
from singura_vault.keys.provider import (
    DescribedKeyProvider,
    KeyProvider,
    ListingKeyProvider,
    RefreshingKeyProvider,
    RetiringKeyProvider,
    RewrappingKeyProvider,
    RotatingKeyProvider,
)
from singura_vault.keys.records import Sealed, WrappedDataKey
from singura_vault.keys.transit import TransitKeyProvider
from singura_vault.keys.transit_settings import parse_organization_settings

__all__ = ["DEFAULT_ORGANIZATION_KEY_TTL_S", "KeyManager", "OrganizationKeyLoader"]

# SINGURA_ORGANIZATION_KEY_CACHE_TTL's default: how long an unwrapped data key of an
# organization with its own root key is used before its KMS is asked again, and so
# the bound on how long its kill switch takes (docs/customer-managed-keys.md).
DEFAULT_ORGANIZATION_KEY_TTL_S = 300.0

# (organization id, provider id) -> the provider's stored row; the composition root
# gives one that reads PostgreSQL (the key package never does).
OrganizationKeyLoader = Callable[[UUID, UUID], Awaitable[OrganizationKeyRecord]]
_T = TypeVar("_T")
_PROBE_DOMAIN = b"singura-vault/organization-key-probe/v1\x00"

# (organization, key version, root key id, SHA-256 of the wrapped blob): a
# re-wrapped or replaced row is a different entry, never a stale hit.
_CacheKey = tuple[UUID, int, str, bytes]


class KeyManager:
    """Creates, unwraps and caches data keys; seals, opens and fingerprints credentials."""

    def __init__(
        self,
        provider: KeyProvider,
        *,
        cache_size: int = 10_000,
        organization_key_ttl_s: float = DEFAULT_ORGANIZATION_KEY_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``organization_key_ttl_s``: how long a data key wrapped by an organization's own
        root key stays cached (0: never cached, every use asks its KMS); ``clock``: the
        monotonic clock that TTL is measured on (tests inject one)."""
        if cache_size < 0:
            raise ValueError("cache_size must be 0 (no caching) or more")
        if organization_key_ttl_s < 0:
            raise ValueError("organization_key_ttl_s must be 0 (no caching) or more")
        self._provider = provider
        self._cache_size = cache_size
        self._cache: OrderedDict[_CacheKey, DataKey] = OrderedDict()
        # Cached data keys of organizations with their own root key: when each expires.
        # Empty unless such organizations exist, so the global path only tests emptiness.
        self._expiry: dict[_CacheKey, float] = {}
        self._organization_key_ttl_s = organization_key_ttl_s
        self._clock = clock
        self._organization_loader: OrganizationKeyLoader | None = None
        self._organization_allow_http = False
        # Provider rows never change (a new SetOrganizationKeyProvider is a new row), so
        # a provider built from one is kept for the life of the process.
        self._organization_providers: dict[
            UUID, tuple[OrganizationKeyRecord, TransitKeyProvider]
        ] = {}

    def attach_organization_keys(self, loader: OrganizationKeyLoader, *, allow_http: bool) -> None:
        """Let data keys wrapped by an organization's own root key be unwrapped:
        ``loader`` reads a provider row; ``allow_http``: loopback http (development)."""
        self._organization_loader = loader
        self._organization_allow_http = allow_http

    @property
    def provider_description(self) -> str:
        """Describe the key provider for logs and status output; contains no secrets."""
        if isinstance(self._provider, DescribedKeyProvider):
            return self._provider.description()
        return f"{type(self._provider).__name__} (primary {self._provider.primary_key_id()})"

    def __repr__(self) -> str:
        return f"<KeyManager {self.provider_description}, data keys cached: {len(self._cache)}>"

    async def connect(self) -> None:
        """Reach a remote key provider once at start (transit: read the key and its version).

        A no-op for providers in process memory. Raises KeyConfigError for a bad
        token or key, KeyServiceUnavailable when the provider cannot be reached.
        """
        if isinstance(self._provider, RefreshingKeyProvider):
            await self._provider.refresh()

    async def create_data_key(
        self,
        organization_id: UUID,
        version: int,
        organization_key: OrganizationKeyRecord | None = None,
    ) -> WrappedDataKey:
        """Make a new random data key for (organization, version) and return it wrapped,
        under the organization's own root key when ``organization_key`` is given.

        The wrapped key is unwrapped once before it is returned: a provider that
        wraps into something it cannot unwrap is caught before any credential
        is sealed under a key that could never be recovered.
        """
        associated_data = data_key_associated_data(organization_id, version)
        material = secrets.token_bytes(KEY_SIZE)
        wrapped = await self._wrap_under(organization_key, material, associated_data)
        unwrapped = await self._unwrap_with(wrapped, associated_data, organization_id)
        if not hmac.compare_digest(unwrapped, material):
            raise IntegrityError
        self._remember(
            _cache_key(organization_id, version, wrapped),
            DataKey._create(organization_id, version, material),
        )
        return wrapped

    async def data_key(
        self, organization_id: UUID, version: int, wrapped: WrappedDataKey
    ) -> DataKey:
        """Return the unwrapped data key; IntegrityError if the row was moved or tampered with.

        A data key wrapped by an organization's own root key is cached for the
        organization-key TTL only; after it, its KMS is asked again (the kill switch).
        OrganizationKeyUnavailable when that KMS refuses.
        """
        key = _cache_key(organization_id, version, wrapped)
        cached = self._cache.get(key)
        if cached is not None and not (self._expiry and self._expired(key)):
            self._cache.move_to_end(key)
            return cached
        material = await self._unwrap_with(
            wrapped, data_key_associated_data(organization_id, version), organization_id
        )
        if len(material) != KEY_SIZE:
            raise IntegrityError
        data_key = DataKey._create(organization_id, version, material)
        self._remember(key, data_key)
        return data_key

    # ---- customer-managed keys (an organization's own root key) ------------------------

    async def seal_organization_token(
        self, provider_id: UUID, organization_id: UUID, token: str
    ) -> tuple[WrappedDataKey, Sealed]:
        """Seal a provider's token under the GLOBAL root key: a fresh key, wrapped by the
        global provider, encrypts it; both are bound to the provider row."""
        associated_data = token_associated_data(provider_id, organization_id)
        material = secrets.token_bytes(KEY_SIZE)
        wrapped = await self._provider.wrap(material, associated_data)
        nonce, ciphertext = Aes256Gcm(material).encrypt(token.encode("ascii"), associated_data)
        return wrapped, Sealed(nonce=nonce, ciphertext=ciphertext)

    async def check_organization_key(
        self,
        provider_id: UUID,
        organization_id: UUID,
        *,
        address: str,
        mount: str,
        key_name: str,
        token: str,
    ) -> tuple[str, str]:
        """Validate an organization's provider and prove it wraps and unwraps a probe.

        KeyConfigError (the field at fault) for bad settings; OrganizationKeyUnavailable
        naming the address and key when the KMS refuses or cannot be reached.
        Returns the address and mount as normalized (what to store).
        """
        settings = parse_organization_settings(
            address=address,
            key=key_name,
            mount=mount,
            token=token,
            allow_http=self._organization_allow_http,
        )
        provider = TransitKeyProvider.for_organization(
            organization_key_prefix(provider_id), settings
        )
        probe = secrets.token_bytes(KEY_SIZE)
        associated_data = _PROBE_DOMAIN + organization_id.bytes
        try:
            await provider.refresh()
            wrapped = await provider.wrap(probe, associated_data)
            unwrapped = await provider.unwrap(wrapped, associated_data)
        except OrganizationKeyUnavailable:
            raise
        except KeyConfigError as exc:
            raise OrganizationKeyUnavailable(settings.address, settings.key, str(exc)) from None
        except Unavailable as exc:
            raise OrganizationKeyUnavailable(
                settings.address, settings.key, getattr(exc, "detail", "unreachable")
            ) from None
        if not hmac.compare_digest(unwrapped, probe):
            raise OrganizationKeyUnavailable(
                settings.address, settings.key, "a probe wrapped by it did not unwrap intact"
            )
        return settings.address, settings.mount

    async def migrate_data_key(
        self,
        organization_id: UUID,
        version: int,
        wrapped: WrappedDataKey,
        target: OrganizationKeyRecord | None,
    ) -> WrappedDataKey | None:
        """Wrap a data key under ``target`` (an organization's own root key, or None: the
        global one); None if it already is. Checked by unwrapping before it is returned."""
        current = provider_id_of(wrapped.root_key_id)
        if current == (target.provider_id if target is not None else None):
            return None
        associated_data = data_key_associated_data(organization_id, version)
        material = await self._unwrap_with(wrapped, associated_data, organization_id)
        moved = await self._wrap_under(target, material, associated_data)
        check = await self._unwrap_with(moved, associated_data, organization_id)
        if not hmac.compare_digest(check, material):
            raise IntegrityError
        return moved

    async def _wrap_under(
        self, target: OrganizationKeyRecord | None, material: bytes, associated_data: bytes
    ) -> WrappedDataKey:
        if target is None:
            return await self._provider.wrap(material, associated_data)
        record, provider = await self._organization_provider(
            target.organization_id, target.provider_id, target
        )
        return await _organization_call(record, provider.wrap(material, associated_data))

    async def _unwrap_with(
        self, wrapped: WrappedDataKey, associated_data: bytes, organization_id: UUID
    ) -> bytes:
        provider_id = provider_id_of(wrapped.root_key_id)
        if provider_id is None:
            return await self._provider.unwrap(wrapped, associated_data)
        record, provider = await self._organization_provider(organization_id, provider_id)
        return await _organization_call(record, provider.unwrap(wrapped, associated_data))

    async def _organization_provider(
        self,
        organization_id: UUID,
        provider_id: UUID,
        record: OrganizationKeyRecord | None = None,
    ) -> tuple[OrganizationKeyRecord, TransitKeyProvider]:
        known = self._organization_providers.get(provider_id)
        if known is not None:
            if known[0].organization_id != organization_id:
                raise IntegrityError  # a data key row naming another organization's provider
            return known
        if record is None:
            if self._organization_loader is None:
                raise KeyConfigError(
                    f"a data key is wrapped by the organization key provider {provider_id}, "
                    "but this key manager has no access to organization key providers"
                )
            record = await self._organization_loader(organization_id, provider_id)
        if record.organization_id != organization_id or record.provider_id != provider_id:
            raise IntegrityError
        associated_data = token_associated_data(provider_id, organization_id)
        material = await self._provider.unwrap(record.token_key, associated_data)
        if len(material) != KEY_SIZE:
            raise IntegrityError
        token = Aes256Gcm(material).decrypt(
            record.token.nonce, record.token.ciphertext, associated_data
        )
        settings = parse_organization_settings(
            address=record.address,
            key=record.key_name,
            mount=record.mount,
            token=token.decode("ascii"),
            allow_http=self._organization_allow_http,
        )
        provider = TransitKeyProvider.for_organization(
            organization_key_prefix(provider_id), settings
        )
        self._organization_providers[provider_id] = (record, provider)
        return record, provider

    def _expired(self, key: _CacheKey) -> bool:
        deadline = self._expiry.get(key)
        if deadline is None or self._clock() < deadline:
            return False
        del self._expiry[key]
        self._cache.pop(key, None)
        return True

    def seal(self, key: DataKey, plaintext: bytes, binding: CredentialBinding) -> Sealed:
        """Encrypt a credential under ``key`` with a fresh random nonce, bound to ``binding``."""
        _check_binding(key, binding)
        nonce, ciphertext = key._encrypt(plaintext, binding.associated_data())
        return Sealed(nonce=nonce, ciphertext=ciphertext)

    def open(self, key: DataKey, sealed: Sealed, binding: CredentialBinding) -> bytes:
        """Decrypt a sealed credential; IntegrityError unless key, binding and bytes all match.

        Unlike ``seal``, a binding that names another organization or key
        version is not a ValueError here: that is what a ciphertext moved to
        another row looks like, and it fails authentication like any tampering.
        """
        return key._decrypt(sealed.nonce, sealed.ciphertext, binding.associated_data())

    def fingerprint(self, key: DataKey, plaintext: bytes) -> str:
        """Return 16 hex characters of HMAC-SHA256 under the key's fingerprint key.

        Lets an operator tell two values apart (or see that a value changed)
        without seeing them; per data key, so equal values in two organizations
        do not share a fingerprint.
        """
        return key._fingerprint(plaintext)

    def primary_root_key_id(self) -> str:
        return self._provider.primary_key_id()

    def root_key_ids(self) -> tuple[str, ...]:
        """Every root key the provider can unwrap with (only the primary if it cannot say)."""
        if isinstance(self._provider, ListingKeyProvider):
            return tuple(self._provider.key_ids())
        return (self._provider.primary_key_id(),)

    async def rotate_root_key(self) -> str:
        """Make a new root key version primary, where the provider can; returns its id."""
        if not isinstance(self._provider, RotatingKeyProvider):
            raise KeyConfigError(
                "this root key cannot be rotated by the vault: set ENCRYPTION_KEY to a new key "
                "(`singura-vault keys generate`) and ENCRYPTION_KEY_PREVIOUS to the old one, "
                "restart every vault, then call RotateRootKey to rewrap the data keys"
            )
        return await self._provider.rotate()

    async def retire_root_key(self, key_id: str) -> None:
        if not isinstance(self._provider, RetiringKeyProvider):
            raise KeyConfigError(
                f"root key {key_id} is retired by removing it from ENCRYPTION_KEY_PREVIOUS "
                "and restarting the vaults"
            )
        await self._provider.retire(key_id)

    async def rewrap_data_key(
        self, organization_id: UUID, version: int, wrapped: WrappedDataKey
    ) -> WrappedDataKey | None:
        """Wrap a data key under the primary root key; None if it already is.

        The new wrapping is unwrapped and compared before it is returned, so a
        data key is never replaced by something that cannot be opened again.
        """
        if provider_id_of(wrapped.root_key_id) is not None:  # the organization's own
            return None
        return await self._rewrap(wrapped, data_key_associated_data(organization_id, version))

    async def rewrap_organization_token_key(
        self, provider_id: UUID, organization_id: UUID, wrapped: WrappedDataKey
    ) -> WrappedDataKey | None:
        """Wrap the key that seals a customer-managed key provider's token (see
        seal_organization_token) under the primary root key; None if it already is."""
        return await self._rewrap(wrapped, token_associated_data(provider_id, organization_id))

    async def _rewrap(
        self, wrapped: WrappedDataKey, associated_data: bytes
    ) -> WrappedDataKey | None:
        if wrapped.root_key_id == self._provider.primary_key_id():
            return None
        if isinstance(self._provider, RewrappingKeyProvider):
            # An external KMS re-encrypts on its side (authenticated there): the
            # data key never leaves it during a root-key rotation.
            return await self._provider.rewrap(wrapped, associated_data)
        material = await self._provider.unwrap(wrapped, associated_data)
        rewrapped = await self._provider.wrap(material, associated_data)
        if not hmac.compare_digest(
            await self._provider.unwrap(rewrapped, associated_data), material
        ):
            raise IntegrityError
        return rewrapped

    def forget_organization(self, organization_id: UUID) -> int:
        """Drop an organization's cached data keys (after crypto-shredding); return how many."""
        doomed = [key for key in self._cache if key[0] == organization_id]
        for key in doomed:
            del self._cache[key]
            self._expiry.pop(key, None)
        return len(doomed)

    def _remember(self, key: _CacheKey, data_key: DataKey) -> None:
        if self._cache_size == 0:
            return
        if provider_id_of(key[2]) is not None:
            if self._organization_key_ttl_s <= 0:
                return
            self._expiry[key] = self._clock() + self._organization_key_ttl_s
        self._cache[key] = data_key
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            evicted, _ = self._cache.popitem(last=False)
            self._expiry.pop(evicted, None)


async def _organization_call(record: OrganizationKeyRecord, call: Awaitable[_T]) -> _T:
    """An organization's KMS refusing is its kill switch: OrganizationKeyUnavailable,
    naming its address and key. Unreachable stays KeyServiceUnavailable (retry)."""
    try:
        return await call
    except OrganizationKeyUnavailable:
        raise
    except KeyConfigError as exc:
        raise OrganizationKeyUnavailable(record.address, record.key_name, str(exc)) from None


def _cache_key(organization_id: UUID, version: int, wrapped: WrappedDataKey) -> _CacheKey:
    return (organization_id, version, wrapped.root_key_id, hashlib.sha256(wrapped.blob).digest())


def _check_binding(key: DataKey, binding: CredentialBinding) -> None:
    # Sealing under the wrong organization's key is a caller bug, not
    # tampering: refuse it loudly before it writes an unopenable row.
    if binding.organization_id != key.organization_id or binding.key_version != key.version:
        raise ValueError(
            f"binding is for organization {binding.organization_id} key version "
            f"{binding.key_version}, but the data key is {key.organization_id} v{key.version}"
        )
