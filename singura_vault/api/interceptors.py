"""The server interceptor: request context, one error mapping, one log line per RPC.

Every handler runs inside :func:`_guard`, which
- binds ``rpc_method`` and ``request_id`` (from ``x-request-id`` metadata, or a
  fresh one) for logs and audit events, and returns the id in trailing metadata;
- turns a :class:`VaultError` into its gRPC status with the error's message;
- turns anything else into INTERNAL with a fixed message, logging the exception
  server-side with the request id, so no internal detail (or secret) reaches
  the caller.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
import structlog

from singura_vault.context import RequestContext, bind_request
from singura_vault.errors import VaultError
from singura_vault.logs import get_logger

log = get_logger(__name__)

INTERNAL_MESSAGE = "internal error; the server log has details under this call's request id"
REQUEST_ID_KEY = "x-request-id"
_MAX_REQUEST_ID = 128


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= _MAX_REQUEST_ID:
            return value
    return str(uuid.uuid4())


def _bind(method: str, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    request_id = _request_id(context)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(rpc_method=method, request_id=request_id)
    bind_request(RequestContext(request_id=request_id, actor="anonymous"))
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
    return request_id


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def _fail(
    context: grpc.aio.ServicerContext[Any, Any], exc: Exception, started: float
) -> None:
    elapsed_ms = _elapsed_ms(started)
    if isinstance(exc, VaultError):
        code = grpc.StatusCode[exc.code.value]
        log.info("rpc_failed", code=code.name, duration_ms=elapsed_ms)
        await context.abort(code, exc.message)
    log.error("rpc_internal_error", duration_ms=elapsed_ms, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def _wrap_unary(
    method: str, behavior: Callable[[Any, Any], Awaitable[Any]]
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        _bind(method, context)
        started = time.perf_counter()
        try:
            response = await behavior(request, context)
        except Exception as exc:  # every failure leaves through _fail, mapped
            await _fail(context, exc, started)
            raise  # unreachable: _fail always aborts
        log.info(
            "rpc_completed", code="OK", duration_ms=round((time.perf_counter() - started) * 1000, 2)
        )
        return response

    return handler


def _wrap_unary_stream(
    method: str, behavior: Callable[[Any, Any], AsyncIterator[Any]]
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def handler(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        _bind(method, context)
        started = time.perf_counter()
        try:
            async for item in behavior(request, context):
                yield item
        except Exception as exc:
            await _fail(context, exc, started)
            raise
        log.info(
            "rpc_completed", code="OK", duration_ms=round((time.perf_counter() - started) * 1000, 2)
        )

    return handler


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps the vault's own handlers (health and reflection pass through untouched)."""

    def __init__(self, prefix: str = "/singura.vault.") -> None:
        self._prefix = prefix

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_unary_stream(
                    method, cast(Callable[[Any, Any], AsyncIterator[Any]], handler.unary_stream)
                ),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
