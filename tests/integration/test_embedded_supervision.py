"""Embedded mode owns its PostgreSQL: when the postmaster is killed, the vault says
NOT_SERVING at once, calls answer UNAVAILABLE (never INTERNAL), the server is started
again, and every acknowledged write is still there."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import (
    connections_pb2_grpc,
    credentials_pb2_grpc,
    organizations_pb2_grpc,
)
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.canaries import canary
from tests.support.cli import Serving, wait_for_event
from tests.support.messages import connection_message, org_message

SERVING = health_pb2.HealthCheckResponse.SERVING


def health_until(channel: grpc.Channel, wanted: int, deadline_s: float) -> float:
    """Poll the health status until it is ``wanted``; the seconds it took."""
    stub = health_pb2_grpc.HealthStub(channel)
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError:
            status = -1
        if status == wanted:
            return time.monotonic() - started
        time.sleep(0.02)  # polling a status, not synchronising on time
    raise AssertionError(f"health did not become {wanted} within {deadline_s} s")


def test_a_killed_embedded_postgres_is_restarted_and_loses_nothing(
    cli_env: dict[str, str],
) -> None:
    """kill -9 of the postmaster under write load: health turns NOT_SERVING well before
    the 30 s probe interval, failed calls are UNAVAILABLE, the supervisor restarts the
    server, health returns to SERVING, and every acknowledged store reads back."""
    env = {**cli_env, "SINGURA_HEALTH_INTERVAL": "30"}
    vault = Serving(env)
    # Every call logs a line: keep reading, or a full pipe would stall the vault.
    drain = threading.Thread(target=vault.read_log_to_end, daemon=True)
    drain.start()
    data_dir = Path(env["SINGURA_DATA_DIR"])
    auth = (("authorization", f"Bearer {(data_dir / 'admin-api-key').read_text().strip()}"),)
    address = env["SINGURA_LISTEN"]
    try:
        with grpc.insecure_channel(address) as channel:
            org = (
                organizations_pb2_grpc.OrganizationServiceStub(channel)
                .CreateOrganization(
                    opb.CreateOrganizationRequest(organization=org_message()), metadata=auth
                )
                .organization.id
            )
            conn = (
                connections_pb2_grpc.ConnectionServiceStub(channel)
                .CreateConnection(
                    cpb.CreateConnectionRequest(connection=connection_message(org)),
                    metadata=auth,
                )
                .connection.id
            )
            credentials = credentials_pb2_grpc.CredentialServiceStub(channel)
            acknowledged: list[str] = []
            failures: list[grpc.StatusCode] = []
            stop = threading.Event()
            some_stored = threading.Semaphore(0)

            def writer() -> None:
                while not stop.is_set():
                    value = canary("supervised")
                    try:
                        credentials.StoreCredential(
                            crpb.StoreCredentialRequest(
                                organization_id=org,
                                connection_id=conn,
                                type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                                value=value,
                            ),
                            metadata=auth,
                            timeout=10,
                        )
                    except grpc.RpcError as exc:
                        failures.append(exc.code())  # type: ignore[attr-defined]  # AioRpcError has code()
                        continue
                    acknowledged.append(value)
                    some_stored.release()

            threads = [threading.Thread(target=writer) for _ in range(3)]
            for thread in threads:
                thread.start()
            try:
                for _ in range(20):
                    assert some_stored.acquire(timeout=30)
                pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                down_after = health_until(channel, health_pb2.HealthCheckResponse.NOT_SERVING, 20)
                up_after = health_until(channel, SERVING, 90)
                restarted = wait_for_event(vault, "embedded_postgres_restarted", 60)
                for _ in range(5):  # writes flow again
                    assert some_stored.acquire(timeout=30)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
            assert down_after < 10, down_after
            assert up_after < 90
            assert failures, "the kill must have caught calls in flight"
            internal = [e for e in vault.events if e.get("event") == "rpc_internal_error"]
            assert set(failures) <= {grpc.StatusCode.UNAVAILABLE}, str(internal[:1])[-3000:]
            versions = credentials.ListCredentialVersions(
                crpb.ListCredentialVersionsRequest(
                    organization_id=org,
                    connection_id=conn,
                    type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                    page_size=1000,
                ),
                metadata=auth,
            )
            assert len(versions.credentials) == len(acknowledged)
            newest = credentials.RevealCredential(
                crpb.RevealCredentialRequest(
                    organization_id=org,
                    connection_id=conn,
                    type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                ),
                metadata=auth,
            )
            assert newest.value == acknowledged[-1]
    finally:
        vault.process.send_signal(signal.SIGTERM)
        assert vault.process.wait(timeout=60) == 0
        drain.join(timeout=30)
    names = [e.get("event") for e in vault.events]
    assert "embedded_postgres_died" in names
    assert restarted["restarts"] == 1
