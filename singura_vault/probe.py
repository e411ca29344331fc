"""A health probe client with grpc_health_probe's exit codes, for HEALTHCHECK and orchestrators.

Exit codes: 0 SERVING, 1 bad arguments, 2 connection failure, 3 RPC failure,
4 NOT_SERVING (or any status other than SERVING).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_SERVING = 0
EXIT_CONNECTION_FAILURE = 2
EXIT_RPC_FAILURE = 3
EXIT_UNHEALTHY = 4


def probe(address: str, service: str = "", timeout_s: float = 5.0) -> tuple[int, str]:
    """Check one service ("" = the whole server); returns (exit code, message)."""
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            return (
                EXIT_CONNECTION_FAILURE,
                f"error: failed to connect to {address} within {timeout_s}s",
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
