"""The console's only way to the vault: gRPC, with the signed-in operator's API key.

``VaultClient`` owns one channel (plaintext, TLS or mTLS, as the CLI's client commands
build it) and ``VaultClient.as_operator(key)`` gives the stubs' calls with that key in
``authorization`` metadata and a fresh ``x-request-id``, so that every error the console
shows names the request id the vault logged it under. A failed call becomes
``VaultCallError``: the gRPC code, the vault's message, and the AIP-193 reason from the
``google.rpc.ErrorInfo`` in the status details.

``OperatorKey`` holds the key: it refuses ``repr``, ``str`` and pickling, so that a log
call, a template or a traceback cannot print it by accident.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message

# googleapis-common-protos ships no type stubs.
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from singura_vault.logs import get_logger
from singura_vault.proto.singura.vault.v1 import (
    access_pb2_grpc,
    audit_pb2_grpc,
    connections_pb2_grpc,
    credentials_pb2_grpc,
    keys_pb2_grpc,
    organizations_pb2_grpc,
)

log = get_logger(__name__)

REQUEST_ID_KEY = "x-request-id"
DETAILS_KEY = "grpc-status-details-bin"
# A page waits at most this long for one call; a console that hangs helps nobody.
CALL_TIMEOUT_S = 15.0
R = TypeVar("R", bound=Message)


class OperatorKey:
    """An API key held in memory. It cannot be printed, formatted or pickled; the one
    way to the text is ``reveal_for_call`` (the authorization header)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal_for_call(self) -> str:
        return self._value

    @property
    def key_id(self) -> str:
        """The public key id ("svk_<key_id>_<secret>"), or "" when the text is not of
        that form. Safe to log and show."""
        parts = self._value.split("_", 2)
        return parts[1] if len(parts) == 3 and parts[0] == "svk" else ""

    def __repr__(self) -> str:
        return "OperatorKey(***)"

    __str__ = __repr__

    def __format__(self, _spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> NoReturn:
        raise TypeError("an OperatorKey cannot be pickled")


# Not frozen: raising an exception sets its __traceback__ and __context__.
@dataclass(eq=False)
class VaultCallError(Exception):
    """A vault call that did not succeed: what the vault said, and under which request id."""

    code: str
    message: str
    reason: str
    request_id: str
    rpc: str

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.code}{reason}: {self.message} [request id {self.request_id}]"


@dataclass(frozen=True)
class ChannelSettings:
    """Where the vault is and how to speak to it (the CLI's --address and --tls* options)."""

    address: str
    credentials: grpc.ChannelCredentials | None = None
    server_name: str | None = None


def _reason(trailers: Any) -> str:
    """The ErrorInfo reason from google.rpc.Status details, or ""."""
    for key, value in trailers or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
    return ""


def _failure(exc: grpc.aio.AioRpcError, rpc: str, request_id: str) -> VaultCallError:
    trailers: Any = exc.trailing_metadata()
    sent_back = next((v for k, v in trailers or () if k == REQUEST_ID_KEY), None)
    return VaultCallError(
        code=exc.code().name,
        message=exc.details() or "",
        reason=_reason(trailers),
        request_id=str(sent_back or request_id),
        rpc=rpc,
    )


class VaultClient:
    """One channel to the vault, shared by every session of the console."""

    def __init__(self, settings: ChannelSettings) -> None:
        self._settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def channel(self) -> grpc.aio.Channel:
        # Made on first use, in the loop that serves requests (a grpc.aio channel
        # belongs to the loop it was made in).
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            settings = self._settings
            if settings.credentials is None:
                self._channel = grpc.aio.insecure_channel(settings.address)
            else:
                options = (
                    []
                    if settings.server_name is None
                    else [("grpc.ssl_target_name_override", settings.server_name)]
                )
                self._channel = grpc.aio.secure_channel(
                    settings.address, settings.credentials, options=options
                )
            self._loop = loop
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    def as_operator(self, key: OperatorKey) -> Operator:
        return Operator(self, key)


class Operator:
    """The vault's services as one operator's key sees them."""

    def __init__(self, client: VaultClient, key: OperatorKey) -> None:
        self._client = client
        self._key = key

    def _metadata(self, request_id: str) -> tuple[tuple[str, str], ...]:
        return (
            ("authorization", f"Bearer {self._key.reveal_for_call()}"),
            (REQUEST_ID_KEY, request_id),
        )

    def _stub(self, factory: Callable[[grpc.aio.Channel], Any]) -> Any:
        return factory(self._client.channel())

    async def call(self, service: str, rpc: str, request: Message) -> Any:
        """One unary call: ``service`` names the stub (``organizations``,
        ``connections``, ``credentials``, ``audit``, ``keys``, ``access``)."""
        request_id = uuid.uuid4().hex
        method = getattr(self._stub(_STUBS[service]), rpc)
        try:
            return await method(
                request, metadata=self._metadata(request_id), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            failure = _failure(exc, rpc, request_id)
            log.info(
                "console_vault_error",
                rpc=rpc,
                code=failure.code,
                reason=failure.reason,
                vault_request_id=failure.request_id,
            )
            raise failure from None

    async def stream(self, service: str, rpc: str, request: Message) -> AsyncIterator[Any]:
        """A server-streaming call's messages."""
        request_id = uuid.uuid4().hex
        method = getattr(self._stub(_STUBS[service]), rpc)
        call = method(request, metadata=self._metadata(request_id), timeout=CALL_TIMEOUT_S)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, rpc, request_id) from None


_STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "organizations": organizations_pb2_grpc.OrganizationServiceStub,
    "connections": connections_pb2_grpc.ConnectionServiceStub,
    "credentials": credentials_pb2_grpc.CredentialServiceStub,
    "audit": audit_pb2_grpc.AuditServiceStub,
    "keys": keys_pb2_grpc.KeyServiceStub,
    "access": access_pb2_grpc.AccessServiceStub,
}
