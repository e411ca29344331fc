"""The limit of one unary call on this stack: a bare grpc.aio echo.

Run as ``vs_openbao.py --echo-server`` (a subprocess, like ``serve``): a grpc.aio
server on uvloop (as ``serve``) with one generic handler, ``/bench.Echo/Echo``, that
returns the request's bytes. No protobuf (no serializer on either side), no database,
no interceptor, no authentication. Whatever it serves per core is what grpc.aio and
the event loop alone cost per call; ``vault/echo`` says how much of that the vault
keeps.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import _harness as h
import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
PAYLOAD_BYTES = 64
"""Request (and so response) size: about a RevealCredential request's."""


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def _serve() -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    h.emit({"event": "echo_serving", "port": port})
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(None)


def echo_server_main() -> int:
    """``vs_openbao.py --echo-server``: serve until SIGTERM."""
    with contextlib.suppress(KeyboardInterrupt):
        h.run(_serve())
    sys.stdout.write(json.dumps({"event": "echo_stopped"}) + "\n")
    sys.stdout.flush()
    return 0
