"""Two vault hosts on one primary (docs/high-availability.md): a client balancing
round-robin over both keeps working when one host dies mid-load, nothing it was
told was stored is lost, and the work one process at a time does (audit sequencing,
rewrap) carries on on the survivor.

The hosts are two `singura-vault serve` processes, each listening on a loopback
address of its own (127.0.0.2 and 127.0.0.3), the way two machines would."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from singura_vault.config.environment import load_settings
from singura_vault.errors import ConfigError
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.service.access import AccessService
from tests.support.auth import bearer, new_key_text
from tests.support.oauth import WORKER_ON, access_version, connection, link
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.store_load import (
    Ledger,
    check_every_store_survived,
    tenant_with_connections,
    writer,
)
from tests.support.vault import Stubs, Vault
from tests.support.vault_process import serve_process_handle

WRITERS = 4
BEFORE = 40  # acknowledged stores before host A dies ...
AFTER = 40  # ... and after
LOAD_TIMEOUT_S = 120.0
# How a client notices a host that stopped answering without closing its connections
# (docs/high-availability.md): a ping every second while calls wait, and the
# connection dropped when one goes unanswered for a second. In the gRPC core that
# grpcio ships, the ping's answer is timed by grpc.http2.ping_timeout_ms.
KEEPALIVE = (
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.http2.ping_timeout_ms", 1000),
    ("grpc.http2.max_pings_without_data", 0),
)


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(signal.SIGKILL, id="host-dies"),
        # Frozen: its TCP connections and database sessions stay open, as when a host
        # is cut off from the network; its clients' keepalive pings go unanswered, and
        # PostgreSQL ends whatever transaction it left open at DB_QUERY_TIMEOUT.
        pytest.param(signal.SIGSTOP, id="host-cut-off"),
    ],
)
async def test_a_client_keeps_working_through_two_hosts_when_one_fails(
    failure: signal.Signals,
    access_service: AccessService,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> None:
    """A client given two vault hosts keeps working when one host is stopped or killed, and the
    surviving host finishes its jobs."""
    admin_key = new_key_text()
    await access_service.bootstrap_admin_key(Path("/nonexistent"), admin_key)
    # Small rewrap batches, so that a job is still being worked when host A fails, and
    # short timeouts, so that a transaction it left open ends within the test.
    small_batches = {
        "SINGURA_REWRAP_BATCH_SIZE": "2",
        "DB_QUERY_TIMEOUT": "3000",
        "SINGURA_OAUTH_TIMEOUT": "2s",
    }
    host_a = serve_process_handle(
        admin_key, service_dsn, auth_secret, root_key, host="127.0.0.2", **small_batches
    )
    host_b = serve_process_handle(
        admin_key, service_dsn, auth_secret, root_key, host="127.0.0.3", **small_batches
    )
    async with host_a as (address_a, process_a), host_b as (address_b, _):
        channel = grpc.aio.insecure_channel(
            f"ipv4:{address_a},{address_b}",
            options=[("grpc.lb_policy_name", "round_robin"), *KEEPALIVE],
            interceptors=bearer(admin_key),
        )
        stubs = Stubs.on(channel)
        # Checks afterwards ask the survivor only: a frozen host would hold them.
        survivor_channel = grpc.aio.insecure_channel(address_b, interceptors=bearer(admin_key))
        survivor = Stubs.on(survivor_channel)
        try:
            for address in (address_a, address_b):  # both hosts serve, each on its own
                assert await serving(address)
            org, conns = await tenant_with_connections(stubs, WRITERS)
            ledger, stop = Ledger(), asyncio.Event()
            writers = [
                asyncio.create_task(writer(stubs, org, conn, ledger, stop)) for conn in conns
            ]
            try:
                async with asyncio.timeout(LOAD_TIMEOUT_S):
                    await ledger.until(BEFORE)
                    await stubs.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
                    job = (await stubs.keys.StartRewrap(kpb.StartRewrapRequest())).job
                    process_a.send_signal(failure)
                    killed_at = len(ledger.acknowledged)
                    await ledger.until(killed_at + AFTER)
                    stop.set()
                    await asyncio.gather(*writers)
                    rewrapped = await rewrap_finished(survivor, job.id)
            finally:
                stop.set()
                for task in writers:
                    task.cancel()
                await asyncio.gather(*writers, return_exceptions=True)

            # Calls that were on host A fail UNAVAILABLE (its connection closed, or its
            # pings unanswered), are retried with their request_id, never INTERNAL.
            assert set(ledger.codes) <= {grpc.StatusCode.UNAVAILABLE}, set(ledger.codes)
            assert rewrapped.state == kpb.REWRAP_JOB_STATE_COMPLETED, rewrapped
            assert rewrapped.done == rewrapped.total, rewrapped
            # Host B chained every event, including those host A recorded.
            await check_every_store_survived(survivor, org, conns, ledger)
        finally:
            await channel.close()
            await survivor_channel.close()
            process_a.send_signal(signal.SIGCONT)  # so that a frozen host can be stopped


async def serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def rewrap_finished(stubs: Stubs, job_id: str) -> kpb.RewrapJob:
    """Until the job is no longer running (its workers report progress in the row)."""
    while True:
        job = (await stubs.keys.GetRewrapJob(kpb.GetRewrapJobRequest(job_id=job_id))).job
        if job.state != kpb.REWRAP_JOB_STATE_RUNNING:
            return job
        await asyncio.sleep(0.1)  # polling the job's row, bounded by LOAD_TIMEOUT_S


def test_db_query_timeout_must_outlast_a_token_refresh() -> None:
    """DB_QUERY_TIMEOUT also ends idle transactions; a refresh holds one open while
    the provider answers (up to SINGURA_OAUTH_TIMEOUT)."""
    with pytest.raises(ConfigError, match=r"DB_QUERY_TIMEOUT \(3000 ms\) is shorter than"):
        load_settings({"DB_QUERY_TIMEOUT": "3000"})
    settings = load_settings({"DB_QUERY_TIMEOUT": "3000", "SINGURA_OAUTH_TIMEOUT": "2s"})
    assert settings.pool.query_timeout_ms == 3000


async def test_a_refresh_claimed_by_a_host_that_died_is_done_by_the_survivor(
    vault: Vault,
    provider: FakeOAuthProvider,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> None:
    """Host A's background worker claims a due connection and dies while the provider
    is answering; host B refreshes it once A's claim (a lease) runs out."""
    linked = await link(vault, provider, rotate=False)
    # The lease is twice (SINGURA_OAUTH_TIMEOUT + 10 s): 22 s here.
    worker_on = {**WORKER_ON, "SINGURA_OAUTH_TIMEOUT": "1s"}
    hold = provider.hold_next()
    host_a = serve_process_handle(vault, service_dsn, auth_secret, root_key, **worker_on)
    async with host_a as (_, process_a):
        assert await hold.wait_reached_async(limit_s=30)
        process_a.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process_a.wait, 30)
        hold.release()  # the answer goes to a dead socket
    assert await access_version(vault, linked) == 1
    host_b = serve_process_handle(vault, service_dsn, auth_secret, root_key, **worker_on)
    async with host_b:
        assert await provider.wait_for_token_calls_async(2, limit_s=60)
    assert await access_version(vault, linked) == 2
    refreshed = await connection(vault, linked)
    assert refreshed.status == cpb.CONNECTION_STATUS_ACTIVE
    assert refreshed.HasField("last_refresh_time")
