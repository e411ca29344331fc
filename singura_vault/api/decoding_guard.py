"""The refusal of a request body the vault will not read, before any handler runs.

Every handler's deserializer is wrapped (``request_checks.guarded``) so that it never
raises: it hands on a marker (``Undecodable``, ``Oversized``) instead. Here is what
answers a marker: ``guard_decoding`` wraps a handler the vault does not wrap itself
(health, reflection), refusing before it runs; ``refuse_unreadable`` is that refusal,
which the vault's own wrappers (``api/interceptors.py``) give first thing too, and
``refuse_oversized`` the refusal of an oversized vault call after authentication.
Both are INVALID_ARGUMENT with details and the request id, counted in the metrics and
logged at most once per interval before authentication.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

from singura_vault import metrics
from singura_vault.api import request_checks
from singura_vault.api.call_metadata import (
    REQUEST_ID_KEY,
    UNARY,
    Context,
    metadata_of,
    request_id_of,
)
from singura_vault.api.error_details import DETAILS_KEY, plain_status_details
from singura_vault.errors import InvalidArgument
from singura_vault.logs import get_logger

log = get_logger(__name__)


def refuse_oversized(size: int) -> None:
    """A vault call's request over MAX_REQUEST_BYTES: INVALID_ARGUMENT, never parsed.
    Logged each time (the caller has authenticated, and its key is rate-limited)."""
    limit = request_checks.MAX_REQUEST_BYTES
    metrics.REQUESTS_TOO_LARGE.inc()
    log.warning("request_too_large", size_bytes=size, limit_bytes=limit)
    raise InvalidArgument(
        "request",
        request_checks.too_large_problem(size),
        reason="REQUEST_TOO_LARGE",
        metadata={"limit_bytes": str(limit), "size_bytes": str(size)},
    )


async def refuse_unreadable(method: str, context: Context, request: object) -> None:
    """Refuse what the guarded deserializer could not hand on: INVALID_ARGUMENT with
    details and a request id; one log line per interval at most (this comes before
    authentication)."""
    metadata: dict[str, str] = {}
    if isinstance(request, request_checks.Oversized):
        limit = request_checks.MAX_REQUEST_BYTES
        metrics.REQUESTS_TOO_LARGE.inc()
        request_checks.oversized_log.record(method, size_bytes=request.size, limit_bytes=limit)
        message = f"request: {request_checks.too_large_problem(request.size)}"
        reason = "REQUEST_TOO_LARGE"
        metadata = {"limit_bytes": str(limit), "size_bytes": str(request.size)}
    else:
        request_checks.undecodable_log.record(method)
        message = request_checks.UNDECODABLE_MESSAGE
        reason = "UNDECODABLE_REQUEST"
    metrics.rpc_started(UNARY, method)
    metrics.rpc_handled(UNARY, method, "INVALID_ARGUMENT", 0.0)
    details = plain_status_details("INVALID_ARGUMENT", message, reason, metadata)
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        trailing_metadata=(
            (REQUEST_ID_KEY, request_id_of(metadata_of(context))),
            (DETAILS_KEY, details),
        ),
    )


def guard_decoding(
    method: str, handler: grpc.RpcMethodHandler[Any, Any]
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler the vault does not wrap (health, reflection) with a deserializer that
    cannot raise, and a refusal of what it could not decode (or would not parse: an
    oversized request) before the handler runs. The vault's own wrappers refuse an
    undecodable body themselves, and an oversized one after authentication."""
    deserializer = request_checks.guarded(handler.request_deserializer)
    serializer = handler.response_serializer
    refused: tuple[type, ...] = (request_checks.Undecodable, request_checks.Oversized)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _guard_unary(method, handler.unary_unary, refused),
            request_deserializer=deserializer,
            response_serializer=serializer,
        )
    if handler.unary_stream is not None:
        guard = (
            _guard_stream(method, handler.unary_stream, refused)
            if inspect.isasyncgenfunction(handler.unary_stream)
            # Health/Watch writes with context.write() instead of yielding.
            else _guard_unary(method, handler.unary_stream, refused)
        )
        return grpc.unary_stream_rpc_method_handler(
            guard, request_deserializer=deserializer, response_serializer=serializer
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _guard_bidi(method, handler.stream_stream, refused),
            request_deserializer=deserializer,
            response_serializer=serializer,
        )
    return handler


def _guard_unary(
    method: str, behavior: Any, refused: tuple[type, ...]
) -> Callable[[Any, Any], Awaitable[Any]]:
    """A handler that answers (or writes) once: refuse, else run it."""
    run = cast(Callable[[Any, Any], Awaitable[Any]], behavior)

    async def guarded(request: Any, context: Context) -> Any:
        if isinstance(request, refused):
            await refuse_unreadable(method, context, request)
        return await run(request, context)

    return guarded


def _guard_stream(
    method: str, behavior: Any, refused: tuple[type, ...]
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    """A handler that yields its responses: refuse, else stream them."""
    stream = cast(Callable[[Any, Any], AsyncIterator[Any]], behavior)

    async def guarded(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, refused):
            await refuse_unreadable(method, context, request)
        async for item in stream(request, context):
            yield item

    return guarded


def _guard_bidi(
    method: str, behavior: Any, refused: tuple[type, ...]
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    """A bidirectional handler: each incoming message is checked as it arrives."""
    bidi = cast(Callable[[Any, Any], AsyncIterator[Any]], behavior)

    async def guarded(requests: Any, context: Context) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, refused):
                    await refuse_unreadable(method, context, request)
                yield request

        async for item in bidi(checked(), context):
            yield item

    return guarded
