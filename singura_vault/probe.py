"""A health probe client with grpc_health_probe's exit codes, for HEALTHCHECK and orchestrators.

Exit codes: 0 SERVING, 1 bad arguments, 2 connection failure (including a TLS
handshake that fails: an untrusted certificate, a wrong host name, or a client
certificate the vault refuses), 3 RPC failure, 4 NOT_SERVING (or any status other
than SERVING).

A connection that fails outright (refused, a name that does not resolve, a failed
handshake) is reported as soon as gRPC knows it; only a vault that neither answers
nor refuses makes the probe wait out its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_SERVING = 0
EXIT_BAD_ARGUMENTS = 1
EXIT_CONNECTION_FAILURE = 2
EXIT_RPC_FAILURE = 3
EXIT_UNHEALTHY = 4


def probe(
    address: str,
    service: str = "",
    timeout_s: float = 5.0,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> tuple[int, str]:
    """Check one service ("" = the whole server) within ``timeout_s``; returns (exit
    code, message).

    With credentials the probe speaks TLS; server_name replaces the address's host
    in the certificate's name check (for an address such as 127.0.0.1 in a container).
    """
    # grpc.aio, not the sync channel: watching the sync channel's state runs a polling
    # thread that can outlive the channel and print a traceback as the probe exits.
    return asyncio.run(_probe(address, service, timeout_s, credentials, server_name))


async def _probe(
    address: str,
    service: str,
    timeout_s: float,
    credentials: grpc.ChannelCredentials | None,
    server_name: str | None,
) -> tuple[int, str]:
    options = [] if server_name is None else [("grpc.ssl_target_name_override", server_name)]
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials, options=options)
    )
    async with channel:
        # Whether the channel ever connected tells a connection failure (2) from an RPC
        # that failed on a live connection (3): both can end in UNAVAILABLE or a deadline.
        watcher = asyncio.create_task(_became_ready(channel))
        try:
            # wait_for_ready=False: an RPC on a channel in TRANSIENT_FAILURE fails at
            # once (UNAVAILABLE) instead of waiting for a connection until the deadline,
            # which still bounds a vault that accepts and never answers.
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=timeout_s,
                wait_for_ready=False,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            details = exc.details() or ""
            connected = watcher.done() and not watcher.cancelled() and watcher.result()
            if not connected and code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                return EXIT_CONNECTION_FAILURE, _connection_failure(
                    address, timeout_s, code, details, tls=credentials is not None
                )
            return EXIT_RPC_FAILURE, f"error: health rpc failed: {code.name}"
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return EXIT_UNHEALTHY, f"service unhealthy (responded with {status})"
    return EXIT_SERVING, f"status: {status}"


async def _became_ready(channel: grpc.aio.Channel) -> bool:
    """True once the channel has been READY (returns then); runs until cancelled."""
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        await channel.wait_for_state_change(state)
        state = channel.get_state()
    return True


def _connection_failure(
    address: str, timeout_s: float, code: grpc.StatusCode | None, details: str, *, tls: bool
) -> str:
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        cause = f"no connection within {timeout_s:g}s"
    elif "connection refused" in details.lower():
        cause = "the connection was refused (is the vault running, and listening there?)"
    else:
        cause = details or "unavailable"
    hint = (
        " (over TLS: check --tls-ca, --tls-server-name, and --tls-cert/--tls-key "
        "if the vault requires client certificates)"
        if tls
        else ""
    )
    return f"error: failed to connect to {address}: {cause}{hint}"
