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

HTTP: no async HTTP client is a dependency, and one request per wrap/unwrap
(unwrapped data keys are cached by KeyManager) does not justify adding one. Each
request runs ``http.client`` in a worker thread (``asyncio.to_thread``), bounded
by a socket timeout and an overall ``asyncio.timeout``. ``http.client`` rather
than ``urllib.request``: it follows no redirects (urllib would forward the token
header to wherever a 30x points) and reads no proxy variables (the token goes
to the configured address and nowhere else).

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

import asyncio
import base64
import binascii
import http.client
import ipaddress
import json
import re
import ssl
from pathlib import Path
from typing import Final, NoReturn, Self, TypeGuard, final
from urllib.parse import urlsplit

from singura_vault.errors import Unavailable
from singura_vault.keys.errors import IntegrityError, KeyConfigError
from singura_vault.keys.holder import KeyHolder
from singura_vault.keys.records import WrappedDataKey
from singura_vault.logs import get_logger
from singura_vault.private_files import read_private_file

__all__ = [
    "CONTEXT_DOMAIN",
    "DEFAULT_MOUNT",
    "DEFAULT_TIMEOUT_S",
    "KeyServiceUnavailable",
    "TransitKeyProvider",
]

DEFAULT_MOUNT: Final = "transit"
DEFAULT_TIMEOUT_S: Final = 5.0
# Prefixed to the associated data before it becomes transit's context. It must
# never change for stored data; it keeps our contexts apart from any other
# user of the same transit key, and keeps an empty associated data from being
# an empty (refused) context.
CONTEXT_DOMAIN: Final = b"singura-vault/transit-context/v1\x00"
KEY_TYPE: Final = "aes256-gcm96"
ROOT_KEY_PREFIX: Final = "transit"

_MAX_TOKEN_FILE_BYTES = 64 * 1024
_MAX_RESPONSE_BYTES = 1 << 20
_MAX_BLOB_BYTES = 8 * 1024
# Transit's own name rule (\w(([\w-.]+)?\w)?), ASCII only and without ':'.
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?"
_KEY_NAME = re.compile(_NAME)
_MOUNT_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")
_VERSION = r"[1-9][0-9]{0,9}"
_CIPHERTEXT = re.compile(rf"vault:v(?P<version>{_VERSION}):[A-Za-z0-9+/]+={{0,2}}")
_ROOT_KEY_ID = re.compile(rf"{ROOT_KEY_PREFIX}:(?P<key>{_NAME}):v(?P<version>{_VERSION})")
_PRINTABLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,160}")
_KEY_CREATE_HINT = "bao write -f {mount}/keys/{key} type=aes256-gcm96 derived=true"


class KeyServiceUnavailable(Unavailable):
    """The transit server cannot serve right now (down, sealed, overloaded, slow); retry later.

    The message, which a client sees as UNAVAILABLE, is fixed: the transit
    address and the reason are for operators, in ``detail`` and in the
    ``key_service_unavailable`` warning logged where this is raised.
    """

    MESSAGE = "the key service is unavailable; retry later"

    def __init__(self, detail: str) -> None:
        super().__init__(self.MESSAGE)
        self.detail = detail


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

    __slots__ = (
        "_address",
        "_host",
        "_key",
        "_mount",
        "_port",
        "_ssl_context",
        "_state",
        "_timeout_s",
        "_token",
    )
    _address: str
    _host: str
    _port: int
    _ssl_context: ssl.SSLContext | None
    _key: str
    _mount: str
    _timeout_s: float
    _token: str
    _state: _KeyState

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
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        scheme, host, port, normalized = _parse_address(address)
        if ca_file is not None and scheme != "https":
            raise KeyConfigError(
                "SINGURA_TRANSIT_CA_FILE is set but SINGURA_TRANSIT_ADDR is not https://; "
                "use an https:// address or unset the CA file"
            )
        if not key:
            raise KeyConfigError(
                "SINGURA_KMS=transit needs SINGURA_TRANSIT_KEY, the name of the transit key"
            )
        if _KEY_NAME.fullmatch(key) is None:
            raise KeyConfigError(
                "SINGURA_TRANSIT_KEY is not a valid transit key name: 1 to 128 ASCII letters, "
                "digits, '_', '.' or '-', starting and ending with a letter, digit or '_'"
            )
        if token_file is None:
            raise KeyConfigError(
                "SINGURA_KMS=transit needs SINGURA_TRANSIT_TOKEN_FILE, a file (mode 0600) "
                "holding an OpenBao/Vault token"
            )
        self = object.__new__(cls)
        object.__setattr__(self, "_address", normalized)
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_port", port)
        object.__setattr__(
            self, "_ssl_context", _ssl_context(ca_file) if scheme == "https" else None
        )
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_mount", _parse_mount(mount))
        object.__setattr__(self, "_timeout_s", float(timeout_s))
        object.__setattr__(self, "_token", _read_token_file(token_file))
        object.__setattr__(self, "_state", _KeyState())
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
        return f"transit key {self._key} on {self._address}/v1/{self._mount} ({version})"

    def __repr__(self) -> str:
        return (
            f"<TransitKeyProvider {self._address} mount={self._mount} key={self._key} "
            f"v{self._state.latest}: token redacted>"
        )

    # ---- the KeyProvider port ---------------------------------------------------

    async def refresh(self) -> str:
        """Read the transit key, check it is usable, cache its versions; return the primary id."""
        data = await self._request("GET", f"keys/{self._key}", None, operation="read")
        key_type = data.get("type")
        if key_type != KEY_TYPE:
            raise KeyConfigError(
                f"transit key {self._key} is of type {_show(key_type)}; the vault needs "
                f"{KEY_TYPE} with derived=true: {self._create_hint()}"
            )
        if data.get("derived") is not True:
            # Transit ignores `context` for a key that is not derived, so the
            # wrapped keys would not be bound to their organization and version.
            raise KeyConfigError(
                f"transit key {self._key} is not a derived key, so it cannot bind wrapped data "
                f"keys to their organization; create one with derived=true: {self._create_hint()}"
            )
        latest = data.get("latest_version")
        minimum = data.get("min_decryption_version")
        if not _is_version(latest) or not _is_version(minimum) or minimum > latest:
            raise KeyConfigError(
                f"{self._address} answered the read of transit key {self._key} without valid "
                "latest_version/min_decryption_version; is it an OpenBao or Vault server?"
            )
        if data.get("exportable") is True or data.get("allow_plaintext_backup") is True:
            get_logger(__name__).warning(
                "transit_key_exportable",
                transit_key=self._key,
                detail="this transit key can be exported or backed up in plaintext, so the "
                "root key can leave transit; create the key without exportable=true",
            )
        self._state.min_decryption = minimum
        self._observe_version(latest, force=True)
        if not self._state.checked:
            self._state.checked = True
            get_logger(__name__).info(
                "transit_key_checked",
                transit_address=self._address,
                transit_mount=self._mount,
                transit_key=self._key,
                version=latest,
            )
        return self.primary_key_id()

    async def rotate(self) -> str:
        """Have transit create a new key version, now primary; returns its id.

        The token needs "update" on <mount>/keys/<key>/rotate for this one call
        (``singura-vault keys rotate``); wrapping and unwrapping never need it.
        """
        await self._ensure_checked()
        await self._request("POST", f"keys/{self._key}/rotate", {}, operation="rotate")
        return await self.refresh()

    async def _ensure_checked(self) -> None:
        # Never send a context to a key not known to be derived: transit
        # would ignore it, and the wrapped key would be bound to nothing.
        if not self._state.checked:
            await self.refresh()

    async def wrap(self, plaintext_key: bytes, associated_data: bytes) -> WrappedDataKey:
        """Encrypt a data key under the latest transit key version, bound to associated_data."""
        await self._ensure_checked()
        data = await self._request(
            "POST",
            f"encrypt/{self._key}",
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
        data = await self._request(
            "POST",
            f"decrypt/{self._key}",
            {"ciphertext": ciphertext, "context": _context(associated_data)},
            operation="decrypt",
        )
        plaintext = data.get("plaintext")
        if not isinstance(plaintext, str):
            self._malformed("decrypt")
        try:
            return base64.b64decode(plaintext, validate=True)
        except (binascii.Error, ValueError):
            self._malformed("decrypt")

    async def rewrap(self, wrapped: WrappedDataKey, associated_data: bytes) -> WrappedDataKey:
        """Re-encrypt a wrapped data key under the latest version inside transit.

        The data key never reaches this process. The same errors as ``unwrap``.
        """
        ciphertext = self._ciphertext_of(wrapped)
        await self._ensure_checked()
        data = await self._request(
            "POST",
            f"rewrap/{self._key}",
            {"ciphertext": ciphertext, "context": _context(associated_data)},
            operation="rewrap",
        )
        return self._wrapped_from(data, "rewrap")

    # ---- records ------------------------------------------------------------------

    def _root_key_id(self, version: int) -> str:
        return f"{ROOT_KEY_PREFIX}:{self._key}:v{version}"

    def _create_hint(self) -> str:
        return _KEY_CREATE_HINT.format(mount=self._mount, key=self._key)

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
                transit_key=self._key,
                previous_version=previous,
                version=version,
            )

    def _wrapped_from(self, data: dict[str, object], operation: str) -> WrappedDataKey:
        ciphertext = data.get("ciphertext")
        match = _CIPHERTEXT.fullmatch(ciphertext) if isinstance(ciphertext, str) else None
        if match is None or len(match.group()) > _MAX_BLOB_BYTES:
            self._malformed(operation)
        version = int(match["version"])
        reported = data.get("key_version", version)
        if reported != version:
            self._malformed(operation)
        self._observe_version(version)
        return WrappedDataKey(root_key_id=self._root_key_id(version), blob=match.group().encode())

    def _ciphertext_of(self, wrapped: WrappedDataKey) -> str:
        """Check the stored id against this provider and the blob; return the ciphertext."""
        root_key_id = wrapped.root_key_id
        id_match = _ROOT_KEY_ID.fullmatch(root_key_id)
        if id_match is None or id_match["key"] != self._key:
            # The id comes from the database; name it only if it is a sane id.
            shown = root_key_id if _PRINTABLE_ID.fullmatch(root_key_id) else "(invalid id)"
            raise KeyConfigError(
                f"root key {shown} is not transit key {self._key} (SINGURA_TRANSIT_KEY): this data "
                "key was wrapped by another key provider or transit key; configure that one"
            )
        blob = bytes(wrapped.blob)
        try:
            ciphertext = blob.decode("ascii") if len(blob) <= _MAX_BLOB_BYTES else ""
        except UnicodeDecodeError:
            raise IntegrityError from None
        match = _CIPHERTEXT.fullmatch(ciphertext)
        # An id that disagrees with its blob is a row that was edited.
        if match is None or match["version"] != id_match["version"]:
            raise IntegrityError
        return ciphertext

    def _malformed(self, operation: str) -> NoReturn:
        raise KeyConfigError(
            f"{self._address} answered transit {operation} for key {self._key} with a response "
            "the vault does not understand; is SINGURA_TRANSIT_ADDR an OpenBao or Vault server?"
        )

    # ---- HTTP ---------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, payload: dict[str, str] | None, *, operation: str
    ) -> dict[str, object]:
        url_path = f"/v1/{self._mount}/{path}"
        try:
            # The socket timeout bounds each blocking step in the thread; this
            # bounds the whole call, so a trickling server cannot hold it either.
            async with asyncio.timeout(self._timeout_s):
                status, body = await asyncio.to_thread(self._send, method, url_path, payload)
        except TimeoutError:
            raise self._unavailable(f"no answer within {self._timeout_s:g} s", operation) from None
        except ssl.SSLCertVerificationError as exc:
            raise KeyConfigError(
                f"the TLS certificate of {self._address} failed verification "
                f"({exc.verify_message}); set SINGURA_TRANSIT_CA_FILE to the CA that signed it, "
                "and make the certificate name the host in SINGURA_TRANSIT_ADDR"
            ) from None
        except ssl.SSLError as exc:
            raise KeyConfigError(
                f"TLS with {self._address} failed ({exc.reason or 'handshake error'}); "
                "check that the server speaks https on that port"
            ) from None
        except ConnectionRefusedError:
            raise self._unavailable("connection refused", operation) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
            raise self._unavailable(reason or type(exc).__name__, operation) from None
        return self._interpret(status, body, operation)

    def _send(
        self, method: str, url_path: str, payload: dict[str, str] | None
    ) -> tuple[int, bytes]:
        """Blocking: one request on a fresh connection (runs in a worker thread)."""
        connection: http.client.HTTPConnection
        if self._ssl_context is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout_s, context=self._ssl_context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        headers = {
            "X-Vault-Token": self._token,
            "X-Vault-Request": "true",
            "Accept": "application/json",
        }
        body = None
        if payload is not None:
            body = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, url_path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(_MAX_RESPONSE_BYTES + 1)
        finally:
            connection.close()

    def _interpret(self, status: int, body: bytes, operation: str) -> dict[str, object]:
        if status == 204 and operation == "rotate":
            return {}  # older servers answer a rotation with no content
        document = _json_object(body)
        if 200 <= status < 300 and len(body) <= _MAX_RESPONSE_BYTES:
            data = document.get("data") if document is not None else None
            if not isinstance(data, dict):
                self._malformed(operation)
            return data
        errors = _error_text(document)
        where = f"transit {operation} on {self._mount}/.../{self._key} at {self._address}"
        if status == 429 or status >= 500:
            raise self._unavailable(f"HTTP {status}{errors and f': {errors}'}", operation)
        if status in (401, 403):
            raise KeyConfigError(
                f"{where} was refused (HTTP {status}): the transit token in "
                "SINGURA_TRANSIT_TOKEN_FILE is invalid or expired, or lacks permission: it needs "
                f'"read" on {self._mount}/keys/{self._key} and "update" on '
                f"{self._mount}/encrypt/{self._key}, {self._mount}/decrypt/{self._key} and "
                f"{self._mount}/rewrap/{self._key} (and, for `singura-vault keys rotate`, "
                f"on {self._mount}/keys/{self._key}/rotate)"
            )
        lowered = errors.lower()
        if status == 400 and operation in ("decrypt", "rewrap") and _is_integrity_failure(lowered):
            raise IntegrityError
        # A missing mount is the router's "no handler for route" (404); a
        # missing key is a 404 with no error text on read, and "encryption key
        # not found" (400) on encrypt, decrypt and rewrap.
        no_mount = status == 404 and "no handler for route" in lowered
        if not no_mount and (
            (status == 404 and operation == "read") or "encryption key not found" in lowered
        ):
            raise KeyConfigError(
                f"transit key {self._key} does not exist on mount {self._mount} at "
                f"{self._address}; create it with `{self._create_hint()}`"
            )
        if status == 404:
            raise KeyConfigError(
                f"{where}: no transit engine is mounted at {self._mount} (HTTP 404); "
                "set SINGURA_TRANSIT_MOUNT or enable one with `bao secrets enable transit`"
            )
        if "version is too new" in lowered or "too old" in lowered:
            raise KeyConfigError(
                f"{where}: the wrapped data key names a version of transit key {self._key} "
                f"that transit no longer decrypts ({errors}); the key was replaced or its "
                "min_decryption_version raised"
            )
        if 300 <= status < 400:
            raise KeyConfigError(
                f"{where} was answered with a redirect (HTTP {status}), which the vault does not "
                "follow; point SINGURA_TRANSIT_ADDR at the active node or its load balancer"
            )
        raise KeyConfigError(f"{where} failed (HTTP {status}){errors and f': {errors}'}")

    def _unavailable(self, reason: str, operation: str) -> KeyServiceUnavailable:
        detail = f"transit {operation} at {self._address} failed: {reason}"
        get_logger(__name__).warning(
            "key_service_unavailable",
            transit_address=self._address,
            transit_key=self._key,
            operation=operation,
            reason=reason,
        )
        return KeyServiceUnavailable(detail)


# ---- settings -------------------------------------------------------------------


def _parse_address(address: str | None) -> tuple[str, str, int, str]:
    """Return (scheme, host, port, normalized address); plain http only to loopback."""
    form = "e.g. https://bao.example.internal:8200 or http://127.0.0.1:8200"
    if not address:
        raise KeyConfigError(f"SINGURA_KMS=transit needs SINGURA_TRANSIT_ADDR ({form})")
    try:
        parts = urlsplit(address.strip())
        port = parts.port
    except ValueError:
        raise KeyConfigError(f"SINGURA_TRANSIT_ADDR is not a valid URL ({form})") from None
    if parts.username is not None or parts.password is not None:
        # Not echoed: the part before '@' may be a credential.
        raise KeyConfigError(
            "SINGURA_TRANSIT_ADDR must not contain user information; "
            "put the token in SINGURA_TRANSIT_TOKEN_FILE"
        )
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        raise KeyConfigError(f"SINGURA_TRANSIT_ADDR={address!r} is not an http(s) URL ({form})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise KeyConfigError(
            f"SINGURA_TRANSIT_ADDR={address!r} must be scheme://host:port only, without a path; "
            "set the mount path in SINGURA_TRANSIT_MOUNT"
        )
    if scheme == "http" and not _is_loopback(host):
        raise KeyConfigError(
            f"SINGURA_TRANSIT_ADDR={address!r} is plain http to a host that is not loopback; "
            "the token and data keys would cross the network in the clear: use https://"
        )
    if port is None:
        port = 443 if scheme == "https" else 80
    shown_host = f"[{host}]" if ":" in host else host
    return scheme, host, port, f"{scheme}://{shown_host}:{port}"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_mount(mount: str | None) -> str:
    segments = (mount or DEFAULT_MOUNT).strip().strip("/").split("/")
    if not all(_MOUNT_SEGMENT.fullmatch(segment) for segment in segments):
        raise KeyConfigError(
            "SINGURA_TRANSIT_MOUNT is not a valid mount path: segments of ASCII letters, digits, "
            "'_', '.' or '-' separated by '/', e.g. transit or kms/transit"
        )
    return "/".join(segments)


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    try:
        # Verifies the chain and the host name; the system store without a CA file.
        return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except FileNotFoundError:
        raise KeyConfigError(f"SINGURA_TRANSIT_CA_FILE {ca_file} does not exist") from None
    except (OSError, ssl.SSLError):
        raise KeyConfigError(
            f"SINGURA_TRANSIT_CA_FILE {ca_file} cannot be read as PEM CA certificates"
        ) from None


def _read_token_file(path: Path) -> str:
    """Read the token from a regular file that only its owner may read or write."""
    where = f"SINGURA_TRANSIT_TOKEN_FILE {path}"
    data = read_private_file(path, where, _MAX_TOKEN_FILE_BYTES, error=KeyConfigError)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if len(data) > _MAX_TOKEN_FILE_BYTES or _TOKEN.fullmatch(token) is None:
        raise KeyConfigError(
            f"{where} must hold one OpenBao/Vault token (printable ASCII without spaces) "
            "and nothing else"
        )
    return token


# ---- small helpers ----------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _context(associated_data: bytes) -> str:
    return _b64(CONTEXT_DOMAIN + bytes(associated_data))


def _is_version(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 10**10


def _is_integrity_failure(lowered_errors: str) -> bool:
    # "cipher: message authentication failed" (Go's AEAD Open) for a wrong
    # context or a modified blob; "invalid ciphertext: ..." for a mangled one.
    return "message authentication failed" in lowered_errors or (
        "invalid ciphertext" in lowered_errors and "version is too new" not in lowered_errors
    )


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _error_text(document: dict[str, object] | None) -> str:
    """Transit's own error strings, printable and short (they never hold request data)."""
    errors = document.get("errors") if document is not None else None
    if not isinstance(errors, list):
        return ""
    text = "; ".join(" ".join(e.split()) for e in errors if isinstance(e, str) and e.strip())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 300 else text[:297] + "..."


def _show(value: object) -> str:
    return value if isinstance(value, str) and _PRINTABLE_ID.fullmatch(value) else "(unknown)"
