"""KeyManager: envelope encryption for the credential service.

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
from collections import OrderedDict
from uuid import UUID

from singura_vault.keys.aead import KEY_SIZE
from singura_vault.keys.binding import CredentialBinding, data_key_associated_data
from singura_vault.keys.datakey import DataKey
from singura_vault.keys.errors import IntegrityError, KeyConfigError
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

__all__ = ["KeyManager"]

# (organization, key version, root key id, SHA-256 of the wrapped blob): a
# re-wrapped or replaced row is a different entry, never a stale hit.
_CacheKey = tuple[UUID, int, str, bytes]


class KeyManager:
    """Creates, unwraps and caches data keys; seals, opens and fingerprints credentials."""

    def __init__(self, provider: KeyProvider, *, cache_size: int = 10_000) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be 0 (no caching) or more")
        self._provider = provider
        self._cache_size = cache_size
        self._cache: OrderedDict[_CacheKey, DataKey] = OrderedDict()

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

    async def create_data_key(self, organization_id: UUID, version: int) -> WrappedDataKey:
        """Make a new random data key for (organization, version) and return it wrapped.

        The wrapped key is unwrapped once before it is returned: a provider that
        wraps into something it cannot unwrap is caught before any credential
        is sealed under a key that could never be recovered.
        """
        associated_data = data_key_associated_data(organization_id, version)
        material = secrets.token_bytes(KEY_SIZE)
        wrapped = await self._provider.wrap(material, associated_data)
        unwrapped = await self._provider.unwrap(wrapped, associated_data)
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
        """Return the unwrapped data key; IntegrityError if the row was moved or tampered with."""
        key = _cache_key(organization_id, version, wrapped)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        material = await self._provider.unwrap(
            wrapped, data_key_associated_data(organization_id, version)
        )
        if len(material) != KEY_SIZE:
            raise IntegrityError
        data_key = DataKey._create(organization_id, version, material)
        self._remember(key, data_key)
        return data_key

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
        if wrapped.root_key_id == self._provider.primary_key_id():
            return None
        associated_data = data_key_associated_data(organization_id, version)
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
        return len(doomed)

    def _remember(self, key: _CacheKey, data_key: DataKey) -> None:
        if self._cache_size == 0:
            return
        self._cache[key] = data_key
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


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
