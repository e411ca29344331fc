"""TLS and mutual TLS for the gRPC port: settings from the environment, and gRPC credentials.

``tls_settings_from_env`` reads ``SINGURA_TLS_CERT``, ``SINGURA_TLS_KEY`` and
``SINGURA_TLS_CLIENT_CA`` once, at start, and refuses (``ConfigError``) anything
that would only fail later, or fail open: half a configuration, a missing or
unreadable file, a private key that group or others can read, a file that is not
PEM, a certificate that does not match its key. ``server_credentials`` builds the
server's credentials from those settings; ``channel_credentials`` builds a
client's (the health probe's).

What this module must never do: put file contents -- above all the private key --
into a message, a log event or an exception. Messages name the variable and the
path, and say what to run. It must also never import ``cryptography`` (only the
key package may); the certificate/key pair is checked with the standard ``ssl``
module, which parses and matches but does not judge.

Certificates are read once, at start: rotating them means restarting the vault.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from singura_vault.errors import ConfigError
from singura_vault.private_files import read_private_file

CERT_VAR = "SINGURA_TLS_CERT"
KEY_VAR = "SINGURA_TLS_KEY"
CLIENT_CA_VAR = "SINGURA_TLS_CLIENT_CA"

# A CA bundle with every public root is about 250 KB; anything far larger is
# the wrong file, and reading it whole at start would only hide that.
_MAX_PEM_BYTES = 1024 * 1024

_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKERS = (
    b"-----BEGIN PRIVATE KEY-----",
    b"-----BEGIN RSA PRIVATE KEY-----",
    b"-----BEGIN EC PRIVATE KEY-----",
)
_ENCRYPTED_KEY_MARKERS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


@dataclass(frozen=True)
class TlsSettings:
    """Where the gRPC port's certificate, key and (for mTLS) client CA bundle are."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        """True when clients must present a certificate signed by the client CA (mTLS)."""
        return self.client_ca_file is not None


def tls_settings_from_env(env: Mapping[str, str]) -> TlsSettings | None:
    """TLS settings from SINGURA_TLS_*, None for plaintext; ConfigError naming the variable."""
    cert = _path(env, CERT_VAR)
    key = _path(env, KEY_VAR)
    client_ca = _path(env, CLIENT_CA_VAR)
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError(
                f"{CLIENT_CA_VAR} is set but {CERT_VAR} and {KEY_VAR} are not; mutual TLS "
                f"needs the vault's own certificate and key too: set {CERT_VAR} and {KEY_VAR} "
                f"to PEM files, or unset {CLIENT_CA_VAR}"
            )
        return None
    if cert is None or key is None:
        given, missing = (KEY_VAR, CERT_VAR) if cert is None else (CERT_VAR, KEY_VAR)
        raise ConfigError(
            f"{given} is set but {missing} is not; TLS needs both the certificate chain "
            f"({CERT_VAR}) and its private key ({KEY_VAR}) as PEM files"
        )
    _read_pem(f"{CERT_VAR}={cert}", cert, _Kind.CERT)
    _read_pem(f"{KEY_VAR}={key}", key, _Kind.KEY)
    if client_ca is not None:
        _read_pem(f"{CLIENT_CA_VAR}={client_ca}", client_ca, _Kind.CA)
    _check_pair(cert, key)
    return TlsSettings(cert_file=cert, key_file=key, client_ca_file=client_ca)


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials:
    """The gRPC port's credentials; with a client CA, a client certificate is required."""
    cert_pem = _read_pem(f"{CERT_VAR}={settings.cert_file}", settings.cert_file, _Kind.CERT)
    key_pem = _read_pem(f"{KEY_VAR}={settings.key_file}", settings.key_file, _Kind.KEY)
    client_ca_pem = (
        None
        if settings.client_ca_file is None
        else _read_pem(
            f"{CLIENT_CA_VAR}={settings.client_ca_file}", settings.client_ca_file, _Kind.CA
        )
    )
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=client_ca_pem,
        require_client_auth=settings.mutual,
    )


def channel_credentials(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """A client's TLS credentials: trust ca_file (else gRPC's default roots), and
    present cert_file/key_file (both or neither) to a server that requires mTLS."""
    if (cert_file is None) != (key_file is None):
        raise ConfigError(
            "a client certificate needs its private key and the key its certificate: "
            "give both --tls-cert and --tls-key, or neither"
        )
    ca_pem = None if ca_file is None else _read_pem(f"TLS CA file {ca_file}", ca_file, _Kind.CA)
    cert_pem = (
        None
        if cert_file is None
        else _read_pem(f"TLS client certificate {cert_file}", cert_file, _Kind.CERT)
    )
    # The client's key is the user's own file: no mode check, unlike the vault's.
    key_pem = (
        None
        if key_file is None
        else _read_pem(f"TLS client key {key_file}", key_file, _Kind.KEY, check_mode=False)
    )
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


class _Kind(enum.Enum):
    """What a PEM file must hold; the value is how messages describe it."""

    CERT = "a PEM certificate chain"
    KEY = "a PEM private key"
    CA = "a PEM CA certificate bundle"


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    # Absolute, so that messages and logs say exactly which file was meant.
    return path if path.is_absolute() else Path.cwd() / path


def _read_pem(what: str, path: Path, kind: _Kind, *, check_mode: bool = True) -> bytes:
    """The file's bytes, after the checks for kind; ``what`` starts every message. Only
    a key file must be owner-only (certificates are public)."""
    data = read_private_file(
        path,
        what,
        _MAX_PEM_BYTES,
        must_be=kind.value,
        owner_only=kind is _Kind.KEY and check_mode,
    )
    _check_pem(what, data, kind)
    return data


def _check_pem(what: str, data: bytes, kind: _Kind) -> None:
    # Markers only: enough to catch a swapped, empty or DER file with a clear
    # message. The contents never reach a message.
    if kind is _Kind.KEY:
        if any(marker in data for marker in _ENCRYPTED_KEY_MARKERS):
            raise ConfigError(
                f"{what} is a passphrase-protected key, which gRPC cannot use; write an "
                "unencrypted copy with `openssl pkey -in ENCRYPTED.pem -out KEY.pem`, "
                "then `chmod 600 KEY.pem`"
            )
        if not any(marker in data for marker in _KEY_MARKERS):
            raise ConfigError(
                f"{what} is not {kind.value} (no '-----BEGIN PRIVATE KEY-----' line); "
                "convert a DER key with `openssl pkey -inform DER -in KEY.der -out KEY.pem`"
            )
        return
    if _CERT_MARKER not in data:
        raise ConfigError(
            f"{what} is not {kind.value} (no '-----BEGIN CERTIFICATE-----' line); convert a DER "
            "certificate with `openssl x509 -inform DER -in CERT.der -out CERT.pem`"
        )
    if b"PRIVATE KEY-----" in data:
        # A certificate file is usually world-readable; a key inside it is not safe there.
        raise ConfigError(
            f"{what} also contains a private key; keep the key only in its own "
            "key file (mode 0600) and remove it from this one"
        )


def _check_pair(cert: Path, key: Path) -> None:
    """Refuse a certificate whose public key does not match the private key.

    gRPC would report this only as "failed to bind", which reads like a port
    conflict. The lowest security level keeps this a parse-and-match check:
    which keys and algorithms are acceptable is gRPC's (BoringSSL's) call.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        # password=b"": never fall back to OpenSSL's interactive passphrase prompt.
        context.load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{KEY_VAR}={key} is not the private key of the certificate in "
                f"{CERT_VAR}={cert}; the certificate chain must start with the vault's "
                "own certificate, followed by its intermediates"
            ) from None
        detail = f" ({exc.reason})" if exc.reason else ""
        raise ConfigError(
            f"{CERT_VAR}={cert} and {KEY_VAR}={key} could not be loaded as a certificate "
            f"chain and its private key{detail}; check that both are complete, "
            "unencrypted PEM files"
        ) from None
