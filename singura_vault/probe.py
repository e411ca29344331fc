"""A health probe client with grpc_health_probe's exit codes, for HEALTHCHECK and orchestrators.

Exit codes: 0 SERVING, 1 bad arguments, 2 connection failure (including a TLS
handshake that fails: an untrusted certificate, a wrong host name, or a client
certificate the vault refuses), 3 RPC failure, 4 NOT_SERVING (or any status other
than SERVING).
"""

from __future__ import annotations

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
    """Check one service ("" = the whole server); returns (exit code, message).

    With credentials the probe speaks TLS; server_name replaces the address's host
    in the certificate's name check (for an address such as 127.0.0.1 in a container).
    """
    options = [] if server_name is None else [("grpc.ssl_target_name_override", server_name)]
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials, options=options)
    )
    with channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            # gRPC retries a failed TLS handshake as it retries a refused
            # connection, so both end here, as grpc_health_probe's do.
            hint = (
                ""
                if credentials is None
                else " (over TLS: check --tls-ca, --tls-server-name, and --tls-cert/--tls-key "
                "if the vault requires client certificates)"
            )
            return (
                EXIT_CONNECTION_FAILURE,
                f"error: failed to connect to {address} within {timeout_s}s{hint}",
            )
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            name = code.name if code is not None else "UNKNOWN"
            return EXIT_RPC_FAILURE, f"error: health rpc failed: {name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return EXIT_UNHEALTHY, f"service unhealthy (responded with {status})"
    return EXIT_SERVING, f"status: {status}"
