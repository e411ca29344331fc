"""TransitKeyProvider: the root key lives in an OpenBao / HashiCorp Vault transit engine.

The vault process never holds the root key: it sends each data key to
transit's ``encrypt`` endpoint and stores the ciphertext string it gets back
(``vault:v<N>:<base64>``, as ASCII bytes); ``decrypt`` gives the data key back
into memory only; ``rewrap`` moves a wrapped key to the latest transit key
version without the data key ever leaving transit. ``root_key_id`` is
``transit:<key>:v<N>``, the transit key version named by the ciphertext.

How associated data is bound (verified against OpenBao 2.7.2 and its source):
transit's ``associated_data`` parameter works for ``encrypt``/``decrypt`` on
AES-GCM keys, but ``rewrap`` has no such parameter and fails on every such
ciphertext (it decrypts with no associated data). So the key must be created
with ``derived=true``, and the associated data goes in ``context``:
``context = base64(CONTEXT_DOMAIN || associated_data)``. Transit derives a
per-context AES-256 key (HKDF-SHA256, the context as ``info``) and seals with
AES-GCM under it; a blob moved to another organization or version row gets
another context, another key, and fails authentication, and ``rewrap``
accepts ``context``. For a key that is *not* derived, transit silently ignores
``context``, so :meth:`TransitKeyProvider.refresh` refuses such a key.

Settings and the token are read by :mod:`transit_settings`; each HTTP call,
and what its answer means, is :mod:`transit_http`. This module is the key
logic: which transit endpoint a KeyProvider call becomes, the checks on the
key and on stored records, and the key versions last seen.

Errors, all raised with fixed or operator-written text::

    VaultError
    ├── Unavailable
    │   └── KeyServiceUnavailable   refused, reset, timed out, sealed, HTTP 429 or 5xx: retry
    └── DataLoss
        └── IntegrityError          decrypt failed authentication, or the blob is malformed
    ConfigError
    └── KeyConfigError              bad settings or token file, HTTP 401/403 (token refused),
                                    missing mount or key, wrong key type, TLS verification

This module must never log, format or raise with the token, a data key, or a
transit response body other than transit's own short error strings.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Final, Self, TypeGuard, final

from singura_vault.keys.errors import IntegrityError, KeyConfigError
from singura_vault.keys.holder import KeyHolder
from singura_vault.keys.records import WrappedDataKey
from singura_vault.keys.transit_http import KeyServiceUnavailable, malformed_response, request
from singura_vault.keys.transit_settings import (
    DEFAULT_MOUNT,
    DEFAULT_TIMEOUT_S,
    NAME_PATTERN,
    TransitSettings,
    parse_settings,
)
from singura_vault.logs import get_logger

__all__ = [
    "CONTEXT_DOMAIN",
    "DEFAULT_MOUNT",
    "DEFAULT_TIMEOUT_S",
    "KeyServiceUnavailable",
    "TransitKeyProvider",
]

# Prefixed to the associated data before it becomes transit's context. It must
# never change for stored data; it keeps our contexts apart from any other
# user of the same transit key, and keeps an empty associated data from being
# an empty (refused) context.
CONTEXT_DOMAIN: Final = b"singura-vault/transit-context/v1\x00"
KEY_TYPE: Final = "aes256-gcm96"
ROOT_KEY_PREFIX: Final = "transit"

_MAX_BLOB_BYTES = 8 * 1024
_VERSION = r"[1-9][0-9]{0,9}"
_CIPHERTEXT = re.compile(rf"vault:v(?P<version>{_VERSION}):[A-Za-z0-9+/]+={{0,2}}")
_ROOT_KEY_ID = re.compile(
    rf"(?:{ROOT_KEY_PREFIX}:{NAME_PATTERN}|org-transit:[0-9a-f-]{{36}}):v(?P<version>{_VERSION})"
)
_PRINTABLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,160}")


class _KeyState:
    """The transit key's versions as last seen; the one mutable part of the provider."""

    __slots__ = ("checked", "latest", "min_decryption")

    def __init__(self) -> None:
        self.checked = False  # refresh() has seen a usable key
        self.latest = 0  # 0: not read yet
        self.min_decryption = 1


@final
class TransitKeyProvider(KeyHolder):
    """A KeyProvider whose root key is a derived aes256-gcm96 key in a transit engine."""

    __slots__ = ("_id_prefix", "_settings", "_state")
    _settings: TransitSettings  # where the key is, and the token (never shown)
    _state: _KeyState
    # What root key ids start with: ``transit:<key>`` for the global root key,
    # ``org-transit:<provider id>`` for an organization's own (keys/organization.py).
    _id_prefix: str

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        raise TypeError(
            "TransitKeyProvider cannot be constructed directly; "
            "use TransitKeyProvider.from_settings()"
        )

    @classmethod
    def from_settings(
        cls,
        *,
        address: str | None,
        key: str | None,
        token_file: Path | None,
        mount: str | None = DEFAULT_MOUNT,
        ca_file: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> TransitKeyProvider:
        """Validate the settings and read the token file; no network until the first use.

        Await ``refresh()`` at start to fail fast on a bad token or key; the
        first wrap, unwrap or rewrap calls it anyway if it has not succeeded.

        Raises KeyConfigError naming the SINGURA_TRANSIT_* variable at fault.
        """
        settings = parse_settings(
            address=address,
            key=key,
            token_file=token_file,
            mount=mount,
            ca_file=ca_file,
            timeout_s=timeout_s,
        )
        return cls._build(settings, f"{ROOT_KEY_PREFIX}:{settings.key}")

    @classmethod
    def for_organization(cls, id_prefix: str, settings: TransitSettings) -> TransitKeyProvider:
        """A provider for an organization's own transit key (customer-managed keys);
        its root key ids are ``<id_prefix>:v<N>``. Built by keys/organization.py only."""
        return cls._build(settings, id_prefix)

    @classmethod
    def _build(cls, settings: TransitSettings, id_prefix: str) -> TransitKeyProvider:
        self = object.__new__(cls)
        object.__setattr__(self, "_settings", settings)
        object.__setattr__(self, "_state", _KeyState())
        object.__setattr__(self, "_id_prefix", id_prefix)
        return self

    # ---- identity and description (no secrets) ---------------------------------

    def primary_key_id(self) -> str:
        """``transit:<key>:v<latest>``; RuntimeError before the key was first read."""
        if self._state.latest == 0:
            raise RuntimeError(
                "TransitKeyProvider.refresh() must be awaited before primary_key_id() is known"
            )
        return self._root_key_id(self._state.latest)

    def key_ids(self) -> tuple[str, ...]:
        """Every transit key version that can still decrypt, oldest first (as last seen)."""
        return tuple(
            self._root_key_id(version)
            for version in range(self._state.min_decryption, self._state.latest + 1)
        )

    def description(self) -> str:
        latest = self._state.latest
        version = f"primary v{latest}" if latest else "version not read yet"
        settings = self._settings
        return f"transit key {settings.key} on {settings.address}/v1/{settings.mount} ({version})"

    def __repr__(self) -> str:
        settings = self._settings
        return (
            f"<TransitKeyProvider {settings.address} mount={settings.mount} key={settings.key} "
            f"v{self._state.latest}: token redacted>"
        )

    # ---- the KeyProvider port ---------------------------------------------------

    async def refresh(self) -> str:
        """Read the transit key, check it is usable, cache its versions; return the primary id."""
        settings = self._settings
        data = await request(settings, "GET", f"keys/{settings.key}", None, operation="read")
        key_type = data.get("type")
        if key_type != KEY_TYPE:
            raise KeyConfigError(
                f"transit key {settings.key} is of type {_show(key_type)}; the vault needs "
                f"{KEY_TYPE} with derived=true: {settings.create_hint()}"
            )
        if data.get("derived") is not True:
            # Transit ignores `context` for a key that is not derived, so the
            # wrapped keys would not be bound to their organization and version.
            raise KeyConfigError(
                f"transit key {settings.key} is not a derived key, so it cannot bind wrapped data "
                "keys to their organization; create one with derived=true: "
                f"{settings.create_hint()}"
            )
        latest = data.get("latest_version")
        minimum = data.get("min_decryption_version")
        if not _is_version(latest) or not _is_version(minimum) or minimum > latest:
            raise KeyConfigError(
                f"{settings.address} answered the read of transit key {settings.key} without valid "
                "latest_version/min_decryption_version; is it an OpenBao or Vault server?"
            )
        if data.get("exportable") is True or data.get("allow_plaintext_backup") is True:
            get_logger(__name__).warning(
                "transit_key_exportable",
                transit_key=settings.key,
                detail="this transit key can be exported or backed up in plaintext, so the "
                "root key can leave transit; create the key without exportable=true",
            )
        self._state.min_decryption = minimum
        self._observe_version(latest, force=True)
        if not self._state.checked:
            self._state.checked = True
            get_logger(__name__).info(
                "transit_key_checked",
                transit_address=settings.address,
                transit_mount=settings.mount,
                transit_key=settings.key,
                version=latest,
            )
        return self.primary_key_id()

    async def rotate(self) -> str:
        """Have transit create a new key version, now primary; returns its id.

        The token needs "update" on <mount>/keys/<key>/rotate for this one call
        (``singura-vault keys rotate``); wrapping and unwrapping never need it.
        """
        await self._ensure_checked()
        await request(
            self._settings, "POST", f"keys/{self._settings.key}/rotate", {}, operation="rotate"
        )
        return await self.refresh()

    async def _ensure_checked(self) -> None:
        # Never send a context to a key not known to be derived: transit
        # would ignore it, and the wrapped key would be bound to nothing.
        if not self._state.checked:
            await self.refresh()

    async def wrap(self, plaintext_key: bytes, associated_data: bytes) -> WrappedDataKey:
        """Encrypt a data key under the latest transit key version, bound to associated_data."""
        await self._ensure_checked()
        data = await request(
            self._settings,
            "POST",
            f"encrypt/{self._settings.key}",
            {"plaintext": _b64(plaintext_key), "context": _context(associated_data)},
            operation="encrypt",
        )
        return self._wrapped_from(data, "encrypt")

    async def unwrap(self, wrapped: WrappedDataKey, associated_data: bytes) -> bytes:
        """Decrypt a wrapped data key in transit.

        IntegrityError if it fails to authenticate (wrong associated data,
        tampered or malformed blob); KeyConfigError if it names another
        transit key or a version transit no longer decrypts.
        """
        ciphertext = self._ciphertext_of(wrapped)
        await self._ensure_checked()
        data = await request(
            self._settings,
            "POST",
            f"decrypt/{self._settings.key}",
            {"ciphertext": ciphertext, "context": _context(associated_data)},
            operation="decrypt",
        )
        plaintext = data.get("plaintext")
        if not isinstance(plaintext, str):
            malformed_response(self._settings, "decrypt")
        try:
            return base64.b64decode(plaintext, validate=True)
        except (binascii.Error, ValueError):
            malformed_response(self._settings, "decrypt")

    async def rewrap(self, wrapped: WrappedDataKey, associated_data: bytes) -> WrappedDataKey:
        """Re-encrypt a wrapped data key under the latest version inside transit.

        The data key never reaches this process. The same errors as ``unwrap``.
        """
        ciphertext = self._ciphertext_of(wrapped)
        await self._ensure_checked()
        data = await request(
            self._settings,
            "POST",
            f"rewrap/{self._settings.key}",
            {"ciphertext": ciphertext, "context": _context(associated_data)},
            operation="rewrap",
        )
        return self._wrapped_from(data, "rewrap")

    # ---- records ------------------------------------------------------------------

    def _root_key_id(self, version: int) -> str:
        return f"{self._id_prefix}:v{version}"

    def _observe_version(self, version: int, *, force: bool = False) -> None:
        # Versions only grow: a slow response from before a rotation must not
        # move the primary back. refresh() sets what transit says outright.
        previous = self._state.latest
        if version == previous or (version < previous and not force):
            return
        self._state.latest = version
        if previous:
            get_logger(__name__).info(
                "transit_key_version_changed",
                transit_key=self._settings.key,
                previous_version=previous,
                version=version,
            )

    def _wrapped_from(self, data: dict[str, object], operation: str) -> WrappedDataKey:
        ciphertext = data.get("ciphertext")
        match = _CIPHERTEXT.fullmatch(ciphertext) if isinstance(ciphertext, str) else None
        if match is None or len(match.group()) > _MAX_BLOB_BYTES:
            malformed_response(self._settings, operation)
        version = int(match["version"])
        reported = data.get("key_version", version)
        if reported != version:
            malformed_response(self._settings, operation)
        self._observe_version(version)
        return WrappedDataKey(root_key_id=self._root_key_id(version), blob=match.group().encode())

    def _ciphertext_of(self, wrapped: WrappedDataKey) -> str:
        """Check the stored id against this provider and the blob; return the ciphertext."""
        key, root_key_id = self._settings.key, wrapped.root_key_id
        prefix, _, version = root_key_id.rpartition(":v")
        id_match = _ROOT_KEY_ID.fullmatch(root_key_id) if prefix == self._id_prefix else None
        if id_match is None or not version.isdigit():
            # The id comes from the database; name it only if it is a sane id.
            shown = root_key_id if _PRINTABLE_ID.fullmatch(root_key_id) else "(invalid id)"
            raise KeyConfigError(
                f"root key {shown} is not transit key {key} (SINGURA_TRANSIT_KEY): this data "
                "key was wrapped by another key provider or transit key; configure that one"
            )
        blob = bytes(wrapped.blob)
        try:
            ciphertext = blob.decode("ascii") if len(blob) <= _MAX_BLOB_BYTES else ""
        except UnicodeDecodeError:
            raise IntegrityError from None
        match = _CIPHERTEXT.fullmatch(ciphertext)
        # An id that disagrees with its blob is a row that was edited.
        if match is None or match["version"] != version:
            raise IntegrityError
        return ciphertext


# ---- small helpers ----------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _context(associated_data: bytes) -> str:
    return _b64(CONTEXT_DOMAIN + bytes(associated_data))


def _is_version(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 10**10


def _show(value: object) -> str:
    return value if isinstance(value, str) and _PRINTABLE_ID.fullmatch(value) else "(unknown)"
