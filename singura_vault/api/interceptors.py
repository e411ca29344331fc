"""The server interceptor: authentication, request context, one error mapping, one log line.

Every handler's request deserializer is guarded (``api/request_checks.py``,
``api/decoding_guard.py``): a body that does not decode is INVALID_ARGUMENT with a
fixed message, before anything else runs, on every service including health and
reflection; a body larger than
``MAX_REQUEST_BYTES`` is never parsed. Every vault handler (health and reflection
are otherwise left alone) runs inside a guard that
- binds ``rpc_method`` and ``request_id`` (from ``x-request-id`` metadata, or a
  fresh one) for logs and audit events, and returns the id in trailing metadata;
- authenticates the ``authorization: Bearer svk_...`` metadata into a principal
  (UNAUTHENTICATED otherwise, with one message whatever the cause; the cause is
  logged on ``rpc_failed`` and counted in ``singura_auth_failures``; rate-limited
  keys get RESOURCE_EXHAUSTED with ``retry-after-ms`` in trailing metadata);
- refuses an oversized request with INVALID_ARGUMENT (``REQUEST_TOO_LARGE``, the
  limit in ErrorInfo metadata) and a ``request_too_large`` log line;
- checks every field of the request for values the vault cannot hold (NUL, NaN,
  out-of-range Timestamps and Durations, deep Structs), naming the field;
- opens an incoming ``page_token`` and seals an outgoing ``next_page_token`` with a
  MAC bound to the method and the caller's key (``service/page_tokens.py``);
- turns a :class:`VaultError` into its gRPC status with the error's message, and
  audits UNAUTHENTICATED and PERMISSION_DENIED as ``access.denied`` events;
- turns anything else into INTERNAL with a fixed message, logging the exception
  server-side with the request id, so no internal detail (or secret) reaches
  the caller.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, cast

import grpc
import structlog
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from singura_vault import metrics, tracing
from singura_vault.api import request_checks
from singura_vault.api.call_metadata import (
    CONSISTENCY_KEY,
    REQUEST_ID_KEY,
    RETRY_AFTER_KEY,
    SERVER_STREAM,
    UNARY,
    Context,
    metadata_of,
    request_id_of,
)
from singura_vault.api.decoding_guard import guard_decoding, refuse_oversized, refuse_unreadable
from singura_vault.api.error_details import (
    DETAILS_KEY,
    client_message,
    plain_status_details,
    status_details,
)
from singura_vault.api.replica_reads import reads_from_replica
from singura_vault.context import (
    Principal,
    RequestContext,
    bind_request,
    format_lsn,
    parse_lsn,
    write_position,
)
from singura_vault.errors import (
    DataLoss,
    InvalidArgument,
    InvariantBroken,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    VaultError,
)
from singura_vault.logs import get_logger
from singura_vault.service.access import AccessService

log = get_logger(__name__)

INTERNAL_MESSAGE = "internal error; the server log has details under this call's request id"
AccessLog = Literal["all", "errors", "off"]


# singura_credential_reveals' series by outcome, looked up once each (a labels() lookup
# cost more than the increment); at most one per gRPC status code.
_reveal_outcomes: dict[str, Any] = {}


def _observe(call: _Call, code: str) -> None:
    metrics.rpc_handled(call.grpc_type, call.method, code, time.perf_counter() - call.started)
    if call.reveals:
        outcome = _reveal_outcomes.get(code)
        if outcome is None:
            outcome = _reveal_outcomes[code] = metrics.CREDENTIAL_REVEALS.labels(outcome=code)
        outcome.inc()
    span = call.span
    # A span that records nothing (no exporter, whether or not the caller sent a
    # traceparent) ignores attributes, status and end: skip computing them.
    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
        if code != "OK":
            span.set_status(Status(StatusCode.ERROR, code))
        span.end()


# Whether a message type has a field (page_token, next_page_token), by type: getattr
# with a default on a message without it raises and catches an AttributeError inside
# protobuf on every call.
_fields_present: dict[tuple[type, str], bool] = {}


def _field_text(message: object, name: str) -> str:
    """The string field ``name`` of a message, or "" if its type has no such field."""
    if not isinstance(message, Message):
        return cast(str, getattr(message, name, ""))
    key = (type(message), name)
    present = _fields_present.get(key)
    if present is None:
        present = _fields_present[key] = name in message.DESCRIPTOR.fields_by_name
    return cast(str, getattr(message, name)) if present else ""


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _server_span(tracer: Tracer, method: str, metadata: dict[str, str], request_id: str) -> Span:
    """The RPC's server span, continuing the caller's W3C trace context if it sent one.
    Its attributes name the RPC and the request id only, never a request field."""
    if "traceparent" not in metadata and isinstance(tracer, trace.NoOpTracer):
        # Nothing to record and no trace to continue: the common case costs nothing.
        return trace.INVALID_SPAN
    service, _, name = method.lstrip("/").rpartition("/")
    return tracer.start_span(
        method.lstrip("/"),
        context=tracing.PROPAGATOR.extract(metadata),
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "singura.request_id": request_id,
        },
    )


class _Call:
    """One RPC's request id, principal, timing and span."""

    def __init__(self, method: str, context: Context, grpc_type: str, tracer: Tracer) -> None:
        self.method = method
        self.grpc_type = grpc_type
        self.context = context
        self.metadata = metadata_of(context)
        self.request_id = request_id_of(self.metadata)
        self.principal: Principal | None = None
        self._replica_ok = reads_from_replica(method)
        self.reveals = method.endswith("/RevealCredential")
        self.started = time.perf_counter()
        metrics.rpc_started(grpc_type, method)
        self.span = _server_span(tracer, method, self.metadata, self.request_id)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc_method=method, request_id=self.request_id)
        ids = self.span.get_span_context()
        if ids.is_valid:
            structlog.contextvars.bind_contextvars(
                trace_id=format(ids.trace_id, "032x"), span_id=format(ids.span_id, "016x")
            )
        self._bind()
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id),))

    def authenticated(self, principal: Principal) -> None:
        self.principal = principal
        structlog.contextvars.bind_contextvars(key_id=principal.key_id)
        self._bind()

    def _bind(self, min_lsn: int | None = None) -> None:
        principal = self.principal
        bind_request(
            RequestContext(
                request_id=self.request_id,
                actor=principal.key_id if principal is not None else "anonymous",
                principal=principal,
                min_lsn=min_lsn,
                replica_ok=self._replica_ok,
            )
        )

    def read_after(self, token: str) -> None:
        """The caller's consistency token: its reads must see that WAL position."""
        lsn = parse_lsn(token)
        if lsn is None:
            raise InvalidArgument(
                CONSISTENCY_KEY,
                "is not a consistency token; send back the x-consistency-token trailer "
                "a write returned (e.g. 0/3000060), or nothing",
            )
        self._bind(lsn)

    def answered(self) -> None:
        """On success: a write's consistency token joins the trailers."""
        written = write_position()
        if written is not None:
            self.context.set_trailing_metadata(
                ((REQUEST_ID_KEY, self.request_id), (CONSISTENCY_KEY, format_lsn(written)))
            )


class VaultInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # grpc-stubs types it generic, grpc does not subscript it at run time
    """Wraps the vault's own handlers; ``access=None`` serves without authentication
    (only for tests of layers below it)."""

    def __init__(
        self,
        access: AccessService | None,
        prefix: str = "/singura.vault.",
        *,
        access_log: AccessLog = "errors",
        tracer: Tracer | None = None,
    ) -> None:
        self._access = access
        self._prefix = prefix
        self._tracer = tracer or trace.NoOpTracer()
        # Successful calls are already counted by the metrics and, where it matters,
        # recorded in the audit trail; a JSON line for each costs ~7% of a cheap call.
        self._log_success = access_log == "all"
        self._log_failure = access_log != "off"
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        # The registered handler of a method is one object: wrap it once, not per call.
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        # Outermost, on every service (health and reflection too): an undecodable
        # body never reaches authentication, the checks or a handler; an oversized
        # one reaches only the vault's own guard, which refuses it after
        # authentication. The vault's own wrappers do the decoding guard's refusal
        # themselves, first thing (one coroutine per call fewer).
        guarded = (
            self._wrap(method, handler)
            if method.startswith(self._prefix)
            else guard_decoding(method, handler)
        )
        self._wrapped[method] = (handler, guarded)
        return guarded

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        deserializer = request_checks.guarded(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_unary_stream(
                    method, cast(Callable[[Any, Any], AsyncIterator[Any]], handler.unary_stream)
                ),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        # A streaming-request vault method (none today): the decoding guard alone.
        return guard_decoding(method, handler)

    async def _begin(self, method: str, request: Any, context: Context, grpc_type: str) -> _Call:
        call = _Call(method, context, grpc_type, self._tracer)
        if self._access is not None:
            call.authenticated(await self._access.authenticate(call.metadata.get("authorization")))
        token = call.metadata.get(CONSISTENCY_KEY)
        if token is not None:
            call.read_after(token)
        if isinstance(request, request_checks.Oversized):
            refuse_oversized(request.size)
        request_checks.check_request(request)
        return call

    def _open_page_token(self, call: _Call, request: Any) -> None:
        """Replace a sealed page_token by the service's own (INVALID_ARGUMENT if forged)."""
        if self._access is None or not _field_text(request, "page_token"):
            return
        if call.principal is None:
            raise InvariantBroken("_open_page_token: call.principal is None")
        request.page_token = self._access.page_tokens.open(
            request.page_token, call.method, call.principal.key_id
        )

    def _seal_page_token(self, call: _Call, response: Any) -> None:
        if self._access is None or not _field_text(response, "next_page_token"):
            return
        if call.principal is None:
            raise InvariantBroken("_seal_page_token: call.principal is None")
        response.next_page_token = self._access.page_tokens.seal(
            response.next_page_token, call.method, call.principal.key_id
        )

    def _wrap_unary(
        self, method: str, behavior: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def handler(request: Any, context: Context) -> Any:
            if isinstance(request, request_checks.Undecodable):
                await refuse_unreadable(method, context, request)
            call: _Call | None = None
            try:
                call = await self._begin(method, request, context, UNARY)
                self._open_page_token(call, request)
                response = await behavior(request, context)
                self._seal_page_token(call, response)
                call.answered()
            except Exception as exc:  # every failure leaves through _fail, mapped
                await self._fail(call or _Call(method, context, UNARY, self._tracer), exc)
                raise  # unreachable: _fail always aborts
            _observe(call, "OK")
            if self._log_success:
                log.info("rpc_completed", code="OK", duration_ms=_elapsed_ms(call.started))
            return response

        return handler

    def _wrap_unary_stream(
        self, method: str, behavior: Callable[[Any, Any], AsyncIterator[Any]]
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def handler(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, request_checks.Undecodable):
                await refuse_unreadable(method, context, request)
            call: _Call | None = None
            try:
                call = await self._begin(method, request, context, SERVER_STREAM)
                async for item in behavior(request, context):
                    yield item
            except Exception as exc:
                await self._fail(call or _Call(method, context, SERVER_STREAM, self._tracer), exc)
                raise
            _observe(call, "OK")
            if self._log_success:
                log.info("rpc_completed", code="OK", duration_ms=_elapsed_ms(call.started))

        return handler

    async def _fail(self, call: _Call, exc: Exception) -> None:
        elapsed_ms = _elapsed_ms(call.started)
        trailer: list[tuple[str, str | bytes]] = [(REQUEST_ID_KEY, call.request_id)]
        if not isinstance(exc, VaultError):
            _observe(call, "INTERNAL")
            log.error("rpc_internal_error", duration_ms=elapsed_ms, exc_info=exc)
            trailer.append(
                (DETAILS_KEY, plain_status_details("INTERNAL", INTERNAL_MESSAGE, "INTERNAL"))
            )
            await call.context.abort(
                grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, trailing_metadata=tuple(trailer)
            )
        code = grpc.StatusCode[exc.code.value]
        _observe(call, code.name)
        if isinstance(exc, DataLoss):
            metrics.DATA_LOSS_EVENTS.inc()
        cause: dict[str, str] = {}
        if isinstance(exc, Unauthenticated) and exc.cause is not None:
            # The client reads one message whatever went wrong; the operator reads why.
            metrics.auth_failed(exc.cause)
            cause["auth_failure"] = exc.cause
            if exc.key_id:
                cause["key_id"] = exc.key_id  # the key's public id, never its secret
        if self._log_failure:
            log.info("rpc_failed", code=code.name, duration_ms=elapsed_ms, **cause)
        if isinstance(exc, ResourceExhausted) and exc.retry_after_ms is not None:
            trailer.append((RETRY_AFTER_KEY, str(exc.retry_after_ms)))
        trailer.append((DETAILS_KEY, status_details(exc)))
        if isinstance(exc, Unauthenticated | PermissionDenied) and self._access is not None:
            await self._audit_denied(call, code.name)
        await call.context.abort(code, client_message(exc), trailing_metadata=tuple(trailer))

    async def _audit_denied(self, call: _Call, code: str) -> None:
        if self._access is None:
            raise InvariantBroken("_audit_denied: self._access is None")
        try:
            await self._access.record_denied(call.principal, call.method, code)
        except Exception as exc:  # the refusal stands even if its audit record fails
            log.error("denied_call_not_audited", error_type=type(exc).__name__)
