"""`serve --workers N`: N processes on one port, one embedded PostgreSQL, one bootstrap;
a worker that dies is restarted, SIGTERM drains them all."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import grpc

from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.proto.singura.vault.v1 import organizations_pb2_grpc
from tests.support.cli import Serving, wait_for_event
from tests.support.messages import org_message


def serving_events(vault: Serving) -> list[dict[str, object]]:
    return [e for e in list(vault.events) if e.get("event") == "vault_serving"]


def wait_for_serving(vault: Serving, count: int) -> list[dict[str, object]]:
    """Until ``count`` vault_serving events were logged (polling the log reader)."""
    import time

    for _ in range(6000):
        events = serving_events(vault)
        if len(events) >= count:
            return events
        time.sleep(0.01)  # polling the log for an event, not synchronising on time
    raise AssertionError(f"fewer than {count} workers serve")


def create_orgs(address: str, key: str, count: int) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
        for _ in range(count):
            stub.CreateOrganization(
                opb.CreateOrganizationRequest(organization=org_message()),
                metadata=(("authorization", f"Bearer {key}"),),
                timeout=10,
            )


def test_two_workers_share_the_port_and_a_dead_one_is_restarted(
    cli_env: dict[str, str],
) -> None:
    """Two workers serve one port from one embedded PostgreSQL and one admin key; a
    killed worker is logged and restarted; SIGTERM stops both, then PostgreSQL."""
    vault = Serving({**cli_env, "SINGURA_WORKERS": "2"})
    drain = threading.Thread(target=vault.read_log_to_end, daemon=True)
    drain.start()
    try:
        first, second = wait_for_serving(vault, 2)[:2]
        assert {first["worker"], second["worker"]} == {0, 1}
        assert first["pid"] != second["pid"]
        key = (Path(cli_env["SINGURA_DATA_DIR"]) / "admin-api-key").read_text().strip()
        address = cli_env["SINGURA_LISTEN"]
        create_orgs(address, key, 20)

        victim = second if second["worker"] == 1 else first
        os.kill(int(str(victim["pid"])), signal.SIGKILL)
        died = wait_for_event(vault, "worker_died", 30)
        assert died["pid"] == victim["pid"]
        restarted = wait_for_event(vault, "worker_restarted", 60)
        assert restarted["worker"] == victim["worker"]
        third = wait_for_serving(vault, 3)[2]
        assert third["worker"] == victim["worker"]
        assert third["pid"] == restarted["pid"]
        create_orgs(address, key, 20)
    finally:
        vault.process.send_signal(signal.SIGTERM)
        code = vault.process.wait(timeout=90)
        drain.join(timeout=30)
    assert code == 0
    names = [e.get("event") for e in vault.events]
    assert names.count("vault_stopped") == 3, names  # two workers, then the parent
    assert "embedded_postgres_stopped" in names
    assert names.count("bootstrap_admin_key_created") == 1  # by the parent, once
    for event in serving_events(vault):
        pid = int(str(event["pid"]))
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
