"""The call policy of Vault and AsyncVault, in one place: channel (TLS, mTLS, keepalive),
the API key on every call, the deadline a call's attempts share, and which calls may be
sent again after UNAVAILABLE, with what backoff.

Retries: only UNAVAILABLE, and only calls that are safe to repeat whatever the first attempt
did on the server — reads (Get*, List*, Reveal*, BatchReveal*, Export*, Verify*) and creates
and stores that carry a request_id (the vault returns what the first attempt made instead
of making it twice; the facade generates one when the caller gives none). Nothing else is
ever retried: a second CreateApiKey would mint a second key. This module never sees a
request's secret fields and never logs.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc

DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_RETRIES: Final = 2

_READ_METHOD: Final = re.compile(r"/(Get|List|Reveal|BatchReveal|Export|Verify)[A-Z]\w*$")
_KEYED_CREATE_METHOD: Final = re.compile(r"/(Create|Store)[A-Z]\w*$")


def _pem(value: bytes | str | Path | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, Path):
        return value.read_bytes()
    return value.encode() if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS for the channel. PEM as bytes, text, or a Path to read.

    Without ``root_certificates`` the system's CAs are trusted. ``certificate_chain`` and
    ``private_key`` together: the client certificate for a vault that requires mutual TLS.
    ``server_name_override``: the name to check the server certificate against, when it
    differs from the address's host (e.g. an IP address; tests).
    """

    root_certificates: bytes | str | Path | None = None
    certificate_chain: bytes | str | Path | None = None
    private_key: bytes | str | Path | None = field(default=None, repr=False)
    server_name_override: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("TlsConfig: give certificate_chain and private_key together")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates),
            private_key=_pem(self.private_key),
            certificate_chain=_pem(self.certificate_chain),
        )


@dataclass(frozen=True, slots=True)
class Keepalive:
    """HTTP/2 keepalive pings, so that a dead connection is noticed between calls.

    The vault accepts a ping every 10 s at most without calls in flight; keep ``time``
    above that, or it answers with GOAWAY (too_many_pings).
    """

    time: float = 60.0  # seconds between pings
    timeout: float = 20.0  # seconds to wait for the ping's answer before closing
    permit_without_calls: bool = True

    def options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", int(self.time * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
            ("grpc.http2.max_pings_without_data", 0),
        ]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of UNAVAILABLE for idempotent calls: at most ``retries`` more attempts,
    waiting ``backoff`` seconds before the first, doubling up to ``max_backoff`` (each
    delay half fixed, half jittered), and never past the call's deadline."""

    retries: int = DEFAULT_RETRIES
    backoff: float = 0.1
    max_backoff: float = 2.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        # Jitter spreads the retries of many clients after one outage; not cryptographic.
        return ceiling / 2 + random.random() * ceiling / 2  # noqa: S311


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Everything a channel is built from (Vault and AsyncVault build theirs from this)."""

    address: str
    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, str | int], ...]


def channel_settings(
    address: str,
    tls: bool | TlsConfig,
    keepalive: Keepalive | None,
    options: Sequence[tuple[str, str | int]],
) -> ChannelSettings:
    if not address or "://" in address:
        raise ValueError(f"address must be host:port (e.g. 127.0.0.1:50051), not {address!r}")
    built: list[tuple[str, str | int]] = []
    credentials: grpc.ChannelCredentials | None = None
    if isinstance(tls, TlsConfig):
        credentials = tls.credentials()
        if tls.server_name_override:
            built.append(("grpc.ssl_target_name_override", tls.server_name_override))
    elif tls:
        credentials = grpc.ssl_channel_credentials()
    if keepalive is not None:
        built.extend(keepalive.options())
    built.extend(options)
    return ChannelSettings(address, credentials, tuple(built))


def auth_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    if not api_key or not api_key.isprintable() or any(c.isspace() for c in api_key):
        # Never the key itself in the message.
        raise ValueError("api_key must be a non-empty API key (svk_...), without whitespace")
    return (("authorization", f"Bearer {api_key}"),)


def is_idempotent(method: str, request_id: str | None = None) -> bool:
    """Whether a call to ``method`` ("/pkg.Service/Method") may be sent again after
    UNAVAILABLE: reads always, creates and stores only with a request_id."""
    if _READ_METHOD.search(method):
        return True
    return bool(_KEYED_CREATE_METHOD.search(method) and request_id)


class Deadline:
    """A call's deadline: ``timeout`` seconds from now, for all of its attempts together."""

    __slots__ = ("_at",)

    def __init__(self, timeout: float | None) -> None:
        self._at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left for the next attempt (None: no deadline)."""
        if self._at is None:
            return None
        return max(0.001, self._at - time.monotonic())

    def allows(self, delay: float) -> bool:
        """Whether waiting ``delay`` more still leaves time for another attempt."""
        return self._at is None or time.monotonic() + delay < self._at
