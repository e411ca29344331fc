"""TransitSettings: the SINGURA_TRANSIT_* settings, validated, and the token read from its file.

Everything here runs once, at start, without touching the network; each
refusal is a KeyConfigError naming the variable at fault. Plain http is
accepted only to a loopback address, so the token and data keys never cross a
network in the clear.

This module must never log, format or raise with the token.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Final, final
from urllib.parse import urlsplit

from singura_vault.keys.errors import KeyConfigError
from singura_vault.keys.holder import KeyHolder
from singura_vault.local import is_loopback
from singura_vault.private_files import read_private_file

__all__ = [
    "DEFAULT_MOUNT",
    "DEFAULT_TIMEOUT_S",
    "NAME_PATTERN",
    "TransitSettings",
    "parse_organization_settings",
    "parse_settings",
]

DEFAULT_MOUNT: Final = "transit"
DEFAULT_TIMEOUT_S: Final = 5.0
# Transit's own name rule (\w(([\w-.]+)?\w)?), ASCII only and without ':'.
NAME_PATTERN: Final = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?"

_MAX_TOKEN_FILE_BYTES = 64 * 1024
_KEY_NAME = re.compile(NAME_PATTERN)
_MOUNT_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")
_KEY_CREATE_HINT = "bao write -f {mount}/keys/{key} type=aes256-gcm96 derived=true"


@final
class TransitSettings(KeyHolder):
    """Where the transit key is and the token that may use it; immutable, token never shown.

    A KeyHolder, like the provider that holds it: the token lets anyone who has
    it unwrap every data key, so it must not be copied, pickled or replaced.
    """

    __slots__ = (
        "address",
        "host",
        "key",
        "mount",
        "port",
        "ssl_context",
        "timeout_s",
        "token",
        "token_source",
    )
    address: str  # normalized scheme://host:port, for messages and logs
    host: str
    port: int
    ssl_context: ssl.SSLContext | None  # None: plain http (loopback only)
    key: str
    mount: str
    timeout_s: float
    token: str
    # Where the token came from, for messages (never the token itself).
    token_source: str

    def __init__(
        self,
        *,
        address: str,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        key: str,
        mount: str,
        timeout_s: float,
        token: str,
        token_source: str = "the transit token in SINGURA_TRANSIT_TOKEN_FILE",  # noqa: S107 - where, not a token
    ) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "ssl_context", ssl_context)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "mount", mount)
        object.__setattr__(self, "timeout_s", timeout_s)
        object.__setattr__(self, "token", token)
        object.__setattr__(self, "token_source", token_source)

    def create_hint(self) -> str:
        """The command that creates the transit key these settings name."""
        return _KEY_CREATE_HINT.format(mount=self.mount, key=self.key)

    def __repr__(self) -> str:
        return f"<TransitSettings {self.address} mount={self.mount} key={self.key}: token redacted>"


def parse_settings(
    *,
    address: str | None,
    key: str | None,
    token_file: Path | None,
    mount: str | None,
    ca_file: Path | None,
    timeout_s: float,
) -> TransitSettings:
    """Validate the settings and read the token file; KeyConfigError naming the variable."""
    # The checks run in this order so that the first message names the first
    # thing an operator has to set (the address, then the key, then the token).
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
    return TransitSettings(
        address=normalized,
        host=host,
        port=port,
        ssl_context=_ssl_context(ca_file) if scheme == "https" else None,
        key=key,
        mount=_parse_mount(mount),
        timeout_s=float(timeout_s),
        token=_read_token_file(token_file),
    )


def parse_organization_settings(
    *, address: str, key: str, mount: str, token: str, allow_http: bool
) -> TransitSettings:
    """Validate an organization's own transit key settings (SetOrganizationKeyProvider).

    The same rules as the global settings, named by request field; plain http only
    when ``allow_http`` (development) and only to loopback. The system trust store
    verifies https. KeyConfigError names the field at fault, never the token.
    """
    scheme, host, port, normalized = _parse_address(
        address, variable="address", allow_http=allow_http
    )
    if not key or _KEY_NAME.fullmatch(key) is None:
        raise KeyConfigError(
            "key_name is not a valid transit key name: 1 to 128 ASCII letters, "
            "digits, '_', '.' or '-', starting and ending with a letter, digit or '_'"
        )
    if _TOKEN.fullmatch(token.strip()) is None:
        raise KeyConfigError(
            "token must be one OpenBao/Vault token (printable ASCII without spaces)"
        )
    return TransitSettings(
        address=normalized,
        host=host,
        port=port,
        ssl_context=_ssl_context(None) if scheme == "https" else None,
        key=key,
        mount=_parse_mount(mount, variable="mount"),
        timeout_s=DEFAULT_TIMEOUT_S,
        token=token.strip(),
        token_source="the organization's transit token",  # noqa: S106 - where, not a token
    )


def _parse_address(
    address: str | None, *, variable: str = "SINGURA_TRANSIT_ADDR", allow_http: bool = True
) -> tuple[str, str, int, str]:
    """Return (scheme, host, port, normalized address); plain http only to loopback."""
    form = "e.g. https://bao.example.internal:8200 or http://127.0.0.1:8200"
    if not address:
        raise KeyConfigError(f"SINGURA_KMS=transit needs SINGURA_TRANSIT_ADDR ({form})")
    try:
        parts = urlsplit(address.strip())
        port = parts.port
    except ValueError:
        raise KeyConfigError(f"{variable} is not a valid URL ({form})") from None
    if parts.username is not None or parts.password is not None:
        # Not echoed: the part before '@' may be a credential.
        raise KeyConfigError(
            f"{variable} must not contain user information; give the token on its own"
        )
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        raise KeyConfigError(f"{variable}={address!r} is not an http(s) URL ({form})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise KeyConfigError(
            f"{variable}={address!r} must be scheme://host:port only, without a path; "
            "set the mount path separately"
        )
    if scheme == "http" and not allow_http:
        raise KeyConfigError(
            f"{variable}={address!r} is plain http; in production the token and data keys "
            "travel over https only: use https://"
        )
    if scheme == "http" and not is_loopback(host):
        raise KeyConfigError(
            f"{variable}={address!r} is plain http to a host that is not loopback; "
            "the token and data keys would cross the network in the clear: use https://"
        )
    if port is None:
        port = 443 if scheme == "https" else 80
    shown_host = f"[{host}]" if ":" in host else host
    return scheme, host, port, f"{scheme}://{shown_host}:{port}"


def _parse_mount(mount: str | None, *, variable: str = "SINGURA_TRANSIT_MOUNT") -> str:
    segments = (mount or DEFAULT_MOUNT).strip().strip("/").split("/")
    if not all(_MOUNT_SEGMENT.fullmatch(segment) for segment in segments):
        raise KeyConfigError(
            f"{variable} is not a valid mount path: segments of ASCII letters, digits, "
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
