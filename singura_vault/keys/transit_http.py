"""One transit API call over HTTP, and what its answer means as a vault error.

The vault's async HTTP client (httpx) belongs to the provider package, and the key
package may import no third-party package but ``cryptography`` (the contracts in
pyproject.toml); one request per wrap/unwrap (unwrapped data keys are cached by
KeyManager) does not justify an exception. Each request runs ``http.client`` in a
worker thread (``asyncio.to_thread``), bounded
by a socket timeout and an overall ``asyncio.timeout``. ``http.client`` rather
than ``urllib.request``: it follows no redirects (urllib would forward the token
header to wherever a 30x points) and reads no proxy variables (the token goes
to the configured address and nowhere else).

A failure is told apart by who can fix it: the transit server (down, sealed,
overloaded: KeyServiceUnavailable, retry), the stored data (IntegrityError), or
the operator (KeyConfigError, saying which setting or policy to change).

This module must never log, format or raise with the token, a data key, or a
transit response body other than transit's own short error strings.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from typing import Final, NoReturn

from singura_vault.errors import Unavailable
from singura_vault.keys.errors import IntegrityError, KeyConfigError
from singura_vault.keys.transit_settings import TransitSettings
from singura_vault.logs import get_logger

__all__ = ["KeyServiceUnavailable", "malformed_response", "request"]

# Larger answers are not read: no transit answer the vault asks for comes near it.
_MAX_RESPONSE_BYTES: Final = 1 << 20


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


async def request(
    settings: TransitSettings,
    method: str,
    path: str,
    payload: dict[str, str] | None,
    *,
    operation: str,
) -> dict[str, object]:
    """Call ``/v1/<mount>/<path>``; return the answer's ``data`` object or raise what it means."""
    url_path = f"/v1/{settings.mount}/{path}"
    try:
        # The socket timeout bounds each blocking step in the thread; this
        # bounds the whole call, so a trickling server cannot hold it either.
        async with asyncio.timeout(settings.timeout_s):
            status, body = await asyncio.to_thread(_send, settings, method, url_path, payload)
    except TimeoutError:
        raise _unavailable(
            settings, f"no answer within {settings.timeout_s:g} s", operation
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise KeyConfigError(
            f"the TLS certificate of {settings.address} failed verification "
            f"({exc.verify_message}); set SINGURA_TRANSIT_CA_FILE to the CA that signed it, "
            "and make the certificate name the host in SINGURA_TRANSIT_ADDR"
        ) from None
    except ssl.SSLError as exc:
        raise KeyConfigError(
            f"TLS with {settings.address} failed ({exc.reason or 'handshake error'}); "
            "check that the server speaks https on that port"
        ) from None
    except ConnectionRefusedError:
        raise _unavailable(settings, "connection refused", operation) from None
    except (OSError, http.client.HTTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
        raise _unavailable(settings, reason or type(exc).__name__, operation) from None
    return _interpret(settings, status, body, operation)


def malformed_response(settings: TransitSettings, operation: str) -> NoReturn:
    """Raise for an answer that is not what transit gives: the address is likely wrong."""
    raise KeyConfigError(
        f"{settings.address} answered transit {operation} for key {settings.key} with a response "
        "the vault does not understand; is SINGURA_TRANSIT_ADDR an OpenBao or Vault server?"
    )


# ---- transport --------------------------------------------------------------------


def _send(
    settings: TransitSettings, method: str, url_path: str, payload: dict[str, str] | None
) -> tuple[int, bytes]:
    """Blocking: one request on a fresh connection (runs in a worker thread)."""
    connection: http.client.HTTPConnection
    if settings.ssl_context is not None:
        connection = http.client.HTTPSConnection(
            settings.host, settings.port, timeout=settings.timeout_s, context=settings.ssl_context
        )
    else:
        connection = http.client.HTTPConnection(
            settings.host, settings.port, timeout=settings.timeout_s
        )
    headers = {
        "X-Vault-Token": settings.token,
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
        # One byte more than the cap, so that an oversized answer is seen as such.
        return response.status, response.read(_MAX_RESPONSE_BYTES + 1)
    finally:
        connection.close()


# ---- what an answer means -----------------------------------------------------------


def _interpret(
    settings: TransitSettings, status: int, body: bytes, operation: str
) -> dict[str, object]:
    if status == 204 and operation == "rotate":
        return {}  # older servers answer a rotation with no content
    document = _json_object(body)
    if 200 <= status < 300 and len(body) <= _MAX_RESPONSE_BYTES:
        data = document.get("data") if document is not None else None
        if not isinstance(data, dict):
            malformed_response(settings, operation)
        return data
    raise _error_for(settings, status, _error_text(document), operation)


def _error_for(
    settings: TransitSettings, status: int, errors: str, operation: str
) -> KeyServiceUnavailable | IntegrityError | KeyConfigError:
    """Who can fix a failed call: transit itself (retry), nobody (the data), or the operator."""
    if status == 429 or status >= 500:
        return _unavailable(settings, f"HTTP {status}{errors and f': {errors}'}", operation)
    where = f"transit {operation} on {settings.mount}/.../{settings.key} at {settings.address}"
    if status in (401, 403):
        return _refused(settings, status, where)
    lowered = errors.lower()
    if status == 400 and operation in ("decrypt", "rewrap") and _is_integrity_failure(lowered):
        return IntegrityError()
    return _config_error(settings, status, errors, operation, where)


def _refused(settings: TransitSettings, status: int, where: str) -> KeyConfigError:
    mount, key = settings.mount, settings.key
    return KeyConfigError(
        f"{where} was refused (HTTP {status}): {settings.token_source} "
        "is invalid or expired, or lacks permission: it needs "
        f'"read" on {mount}/keys/{key} and "update" on '
        f"{mount}/encrypt/{key}, {mount}/decrypt/{key} and "
        f"{mount}/rewrap/{key} (and, for `singura-vault keys rotate`, "
        f"on {mount}/keys/{key}/rotate)"
    )


def _config_error(
    settings: TransitSettings, status: int, errors: str, operation: str, where: str
) -> KeyConfigError:
    """Which setting is wrong, for a failure that is neither transient nor the data's."""
    lowered = errors.lower()
    if _names_missing_key(status, lowered, operation):
        return KeyConfigError(
            f"transit key {settings.key} does not exist on mount {settings.mount} at "
            f"{settings.address}; create it with `{settings.create_hint()}`"
        )
    if status == 404:
        return KeyConfigError(
            f"{where}: no transit engine is mounted at {settings.mount} (HTTP 404); "
            "set SINGURA_TRANSIT_MOUNT or enable one with `bao secrets enable transit`"
        )
    if "version is too new" in lowered or "too old" in lowered:
        return KeyConfigError(
            f"{where}: the wrapped data key names a version of transit key {settings.key} "
            f"that transit no longer decrypts ({errors}); the key was replaced or its "
            "min_decryption_version raised"
        )
    if 300 <= status < 400:
        return KeyConfigError(
            f"{where} was answered with a redirect (HTTP {status}), which the vault does not "
            "follow; point SINGURA_TRANSIT_ADDR at the active node or its load balancer"
        )
    return KeyConfigError(f"{where} failed (HTTP {status}){errors and f': {errors}'}")


def _names_missing_key(status: int, lowered_errors: str, operation: str) -> bool:
    # A missing mount is the router's "no handler for route" (404); a
    # missing key is a 404 with no error text on read, and "encryption key
    # not found" (400) on encrypt, decrypt and rewrap.
    if status == 404 and "no handler for route" in lowered_errors:
        return False
    return (status == 404 and operation == "read") or "encryption key not found" in lowered_errors


def _is_integrity_failure(lowered_errors: str) -> bool:
    # "cipher: message authentication failed" (Go's AEAD Open) for a wrong
    # context or a modified blob; "invalid ciphertext: ..." for a mangled one.
    return "message authentication failed" in lowered_errors or (
        "invalid ciphertext" in lowered_errors and "version is too new" not in lowered_errors
    )


def _unavailable(settings: TransitSettings, reason: str, operation: str) -> KeyServiceUnavailable:
    detail = f"transit {operation} at {settings.address} failed: {reason}"
    get_logger(__name__).warning(
        "key_service_unavailable",
        transit_address=settings.address,
        transit_key=settings.key,
        operation=operation,
        reason=reason,
    )
    return KeyServiceUnavailable(detail)


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
