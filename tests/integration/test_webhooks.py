"""WebhookService end to end: endpoints (CRUD, roles, bad input), deliveries written with
the event, signed per Standard Webhooks and verified by a real consumer on loopback,
retries over a clock the test moves, 410 and disable-after, secret rotation, and two
workers on one database that never attempt one delivery twice."""

from __future__ import annotations

import asyncio
import base64
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from singura_vault import keys, metrics
from singura_vault.composition import Components
from singura_vault.config import PoolSettings, WebhookSettings
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import events_pb2 as epb
from singura_vault.proto.singura.vault.v1 import events_pb2_grpc as epb_grpc
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.proto.singura.vault.v1 import webhooks_pb2 as pb
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.service.access import AccessService
from singura_vault.service.rewrap import RewrapWorker
from singura_vault.service.webhook_worker import WebhookWorker
from tests.support.status import expect_status
from tests.support.tenants import new_connection, new_org
from tests.support.vault import Vault, start_vault, stop_vault
from tests.support.vault_process import serve_process_handle
from tests.support.webhook_receiver import Received, Receiver, signed_by, verify_now
from tests.support.webhooks import create, stub

PENDING = pb.WEBHOOK_DELIVERY_STATE_PENDING
DELIVERED = pb.WEBHOOK_DELIVERY_STATE_DELIVERED
FAILED = pb.WEBHOOK_DELIVERY_STATE_FAILED


class Clock:
    """The delivery schedule's clock: the real time plus an offset the test moves (the
    database stamps new deliveries with its own time, so the clock never runs behind)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    @property
    def now(self) -> datetime:
        return self()

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@pytest.fixture
async def vault(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService
) -> AsyncIterator[Vault]:
    """A vault without a delivery worker of its own: each test runs its workers' passes."""
    running = await start_vault(Components(db, key_manager=key_manager, access=access_service))
    yield running
    await stop_vault(running)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def worker(
    vault: Vault, key_manager: keys.KeyManager, clock: Clock
) -> AsyncIterator[WebhookWorker]:
    """A delivery worker on the vault's database, on the test's clock, without jitter
    (each retry waits the whole backoff step)."""
    components = Components(vault.db, key_manager=key_manager, webhooks=WebhookSettings())
    running = components.webhook_worker_with(clock=clock, jitter=lambda: 0.999)
    yield running
    await running.aclose()


async def key_with(vault: Vault, org: str, role: int) -> str:
    response = await vault.access.CreateApiKey(
        apb.CreateApiKeyRequest(organization_id=org, roles=[role], name="hooks")
    )
    return response.secret


async def deliveries(
    vault: Vault, org: str, endpoint: str, **extra: Any
) -> list[pb.WebhookDelivery]:
    response = await stub(vault).ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(
            organization_id=org, endpoint_id=endpoint, page_size=1000, **extra
        )
    )
    return list(response.deliveries)


async def endpoint_of(vault: Vault, org: str, endpoint: str) -> pb.WebhookEndpoint:
    response = await stub(vault).ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(organization_id=org)
    )
    return next(e for e in response.endpoints if e.id == endpoint)


async def test_endpoints_crud_roles_and_bad_input(vault: Vault, receiver: Receiver) -> None:
    """A writer creates (the secret once: whsec_ + base64 of 32 bytes), updates by field
    mask and deletes; a reader lists but cannot manage; bad input is INVALID_ARGUMENT,
    another organization's key PERMISSION_DENIED, a deleted endpoint NOT_FOUND."""
    org, other = await new_org(vault), await new_org(vault)
    writer = stub(vault, await key_with(vault, org, apb.API_KEY_ROLE_WRITER))
    reader = stub(vault, await key_with(vault, org, apb.API_KEY_ROLE_READER))
    outsider = stub(vault, await key_with(vault, other, apb.API_KEY_ROLE_WRITER))

    created = await writer.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(
            organization_id=org, url=receiver.url, types=["credential.stored"], description="ops"
        )
    )
    secret = created.signing_secret
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    endpoint = created.endpoint
    assert (endpoint.url, list(endpoint.types), endpoint.enabled) == (
        receiver.url,
        ["credential.stored"],
        True,
    )

    listed = await reader.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(organization_id=org))
    assert [e.id for e in listed.endpoints] == [endpoint.id]
    assert secret[6:] not in str(listed)

    await expect_status(
        reader.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(organization_id=org, url=receiver.url)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "writer",
    )
    await expect_status(
        outsider.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(organization_id=org)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    for url, fragment in (
        ("", "url"),
        ("ftp://example.com/x", "https"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com/#frag", "fragment"),
    ):
        await expect_status(
            writer.CreateWebhookEndpoint(
                pb.CreateWebhookEndpointRequest(organization_id=org, url=url)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            fragment,
        )
    await expect_status(
        writer.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(organization_id=org, url=receiver.url, types=["nope"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not an event type",
    )
    await expect_status(
        writer.UpdateWebhookEndpoint(
            pb.UpdateWebhookEndpointRequest(
                endpoint=pb.WebhookEndpoint(organization_id=org, id=endpoint.id)
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "update_mask",
    )

    updated = await writer.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(
            endpoint=pb.WebhookEndpoint(
                organization_id=org, id=endpoint.id, url=receiver.url + "&v=2", enabled=False
            ),
            update_mask={"paths": ["url", "types", "enabled"]},
        )
    )
    assert (updated.endpoint.url, list(updated.endpoint.types)) == (receiver.url + "&v=2", [])
    assert (updated.endpoint.enabled, updated.endpoint.disabled_reason) == (False, "manual")
    await expect_status(
        writer.SendTestEvent(pb.SendTestEventRequest(organization_id=org, endpoint_id=endpoint.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "disabled",
    )
    await expect_status(
        writer.RedeliverEvent(
            pb.RedeliverEventRequest(organization_id=org, endpoint_id=endpoint.id, cursor=0)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "cursor",
    )

    await writer.DeleteWebhookEndpoint(
        pb.DeleteWebhookEndpointRequest(organization_id=org, endpoint_id=endpoint.id)
    )
    await expect_status(
        writer.DeleteWebhookEndpoint(
            pb.DeleteWebhookEndpointRequest(organization_id=org, endpoint_id=endpoint.id)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_status(
        writer.RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(organization_id=org, endpoint_id=endpoint.id)
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_production_refuses_plain_http_and_private_literals(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService
) -> None:
    """With SINGURA_ENV=production an endpoint URL must be https to a public address."""
    components = Components(db, key_manager=key_manager, access=access_service, production=True)
    vault = await start_vault(components)
    try:
        org = await new_org(vault)
        for url in ("http://example.com/hook", "https://10.0.0.8/hook", "https://[::1]/hook"):
            await expect_status(create(vault, org, url), grpc.StatusCode.INVALID_ARGUMENT, "url")
        created = await create(vault, org, "https://hooks.example.com/in")
        assert created.endpoint.enabled
    finally:
        await stop_vault(vault)


async def test_an_event_is_delivered_signed_and_recorded(
    vault: Vault, receiver: Receiver, worker: WebhookWorker
) -> None:
    """A committed change's event reaches every matching endpoint, signed so that the
    Standard Webhooks library verifies it, with the documented body; the attempt is
    recorded (code, latency, body) and counted; a types filter keeps others away."""
    org = await new_org(vault)
    everything = await create(vault, org, receiver.url)
    only_stores = await create(vault, org, receiver.url + "&only=stores", ("credential.stored",))
    before = metrics.WEBHOOK_DELIVERIES.labels("delivered")._value.get()
    connection = await new_connection(vault, org)

    assert await worker.run_once() == 1
    assert len(receiver.received) == 1
    message = receiver.received[0]
    body = verify_now(everything.signing_secret, message)
    assert body["type"] == "connection.created"
    assert set(body) == {"type", "timestamp", "data"}
    assert body["timestamp"].endswith("Z")
    data = body["data"]
    assert (data["organization_id"], data["connection_id"], data["cursor"]) == (org, connection, 1)
    assert data["credential_id"] is None
    assert data["platform"] == "slack"
    with pytest.raises(Exception, match="signature"):
        verify_now(only_stores.signing_secret, message)

    [delivery] = await deliveries(vault, org, everything.endpoint.id)
    assert (delivery.state, delivery.event_cursor, delivery.message_id) == (
        DELIVERED,
        1,
        message.message_id,
    )
    [attempt] = delivery.attempts
    assert (attempt.outcome, attempt.response_code, attempt.response_body) == (
        "delivered",
        200,
        "ok",
    )
    assert attempt.latency_ms > 0
    assert await deliveries(vault, org, only_stores.endpoint.id) == []
    assert metrics.WEBHOOK_DELIVERIES.labels("delivered")._value.get() == before + 1

    # RedeliverEvent sends the same message again (same webhook-id), due now.
    again = await stub(vault).RedeliverEvent(
        pb.RedeliverEventRequest(organization_id=org, endpoint_id=everything.endpoint.id, cursor=1)
    )
    assert (again.delivery.state, again.delivery.message_id) == (PENDING, message.message_id)
    assert await worker.run_once() == 1
    assert [r.message_id for r in receiver.received] == [message.message_id] * 2
    await expect_status(
        stub(vault).RedeliverEvent(
            pb.RedeliverEventRequest(
                organization_id=org, endpoint_id=everything.endpoint.id, cursor=99
            )
        ),
        grpc.StatusCode.NOT_FOUND,
        "cursor 99",
    )


async def test_retries_back_off_and_health_stays_serving(
    vault: Vault, receiver: Receiver, worker: WebhookWorker, clock: Clock
) -> None:
    """A failing endpoint is retried only once its backoff has passed (15 s, then 30 s),
    each attempt recorded with the first 1 KiB of the answer; the vault stays SERVING."""
    answers = iter([(500, "x" * 5000), (503, "busy"), (200, "fine")])
    receiver.respond = lambda _: next(answers)
    org = await new_org(vault)
    endpoint = (await create(vault, org, receiver.url)).endpoint.id
    await new_connection(vault, org)

    assert await worker.run_once() == 1
    assert await worker.run_once() == 0  # not due yet
    health = await health_pb2_grpc.HealthStub(vault.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    clock.advance(timedelta(seconds=13))
    assert await worker.run_once() == 0
    clock.advance(timedelta(seconds=3))
    assert await worker.run_once() == 1
    clock.advance(timedelta(seconds=28))
    assert await worker.run_once() == 0
    clock.advance(timedelta(seconds=3))
    assert await worker.run_once() == 1

    [delivery] = await deliveries(vault, org, endpoint)
    assert delivery.state == DELIVERED
    assert delivery.attempt_count == 3
    codes = [(a.outcome, a.response_code) for a in delivery.attempts]
    assert codes == [("http_error", 500), ("http_error", 503), ("delivered", 200)]
    assert delivery.attempts[0].response_body == "x" * 1024
    assert len({r.message_id for r in receiver.received}) == 1
    assert (await endpoint_of(vault, org, endpoint)).HasField("failing_since") is False


async def test_retries_stop_after_retry_for(
    vault: Vault, receiver: Receiver, worker: WebhookWorker, clock: Clock
) -> None:
    """An endpoint that never answers 2xx is retried for SINGURA_WEBHOOK_RETRY_FOR (24 h)
    and then given up (FAILED), never attempted after that window."""
    receiver.respond = lambda _: (502, "down")
    org = await new_org(vault)
    endpoint = (await create(vault, org, receiver.url)).endpoint.id
    await new_connection(vault, org)
    start = clock.now
    for _ in range(40):
        await worker.run_once()
        clock.advance(timedelta(hours=2, seconds=1))
    [delivery] = await deliveries(vault, org, endpoint)
    assert delivery.state == FAILED
    last = delivery.attempts[-1].attempt_time.ToDatetime(UTC)
    assert last <= start + timedelta(hours=24, seconds=5)
    assert 12 <= delivery.attempt_count <= 20
    assert (await endpoint_of(vault, org, endpoint)).enabled  # 3 days have not passed


async def test_410_disables_the_endpoint_and_emits_the_event(
    vault: Vault, receiver: Receiver, worker: WebhookWorker
) -> None:
    """A 410 Gone disables the endpoint at once (reason "gone") and emits
    webhook.endpoint_disabled, which the organization's other endpoints receive."""
    org = await new_org(vault)
    gone = (await create(vault, org, receiver.url + "&gone=1")).endpoint.id
    other = await create(vault, org, receiver.url)
    receiver.respond = _by_endpoint(other.signing_secret)
    await new_connection(vault, org)

    assert await worker.run_once() == 2
    endpoint = await endpoint_of(vault, org, gone)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "gone")
    [delivery] = await deliveries(vault, org, gone)
    assert delivery.state == FAILED
    assert delivery.attempts[0].outcome == "gone"

    events = await epb_grpc.EventServiceStub(vault.channel).ListEvents(
        epb.ListEventsRequest(organization_id=org, types=["webhook.endpoint_disabled"])
    )
    [event] = events.events
    assert event.data["endpoint_id"] == gone
    assert event.data["reason"] == "gone"
    assert receiver.url not in str(event)

    assert await worker.run_once() == 1  # the event, to the other endpoint only
    last = receiver.received[-1]
    assert verify_now(other.signing_secret, last)["type"] == "webhook.endpoint_disabled"
    # Disabled: new events are not queued for it, and nothing is sent to it.
    await new_connection(vault, org)
    assert await worker.run_once() == 1
    assert len(await deliveries(vault, org, gone)) == 1


def _by_endpoint(other_secret: str) -> Any:
    """410 for messages not signed with the other endpoint's secret, 200 for its own."""

    def respond(received: Received) -> tuple[int, str]:
        return (200, "ok") if signed_by(other_secret, received) else (410, "bye")

    return respond


async def test_failing_for_disable_after_disables_with_the_event(
    vault: Vault, receiver: Receiver, worker: WebhookWorker, clock: Clock
) -> None:
    """An endpoint that has failed since more than SINGURA_WEBHOOK_DISABLE_AFTER (3 days)
    ago is disabled (reason "failing") by its next failed attempt, with the event."""
    receiver.respond = lambda _: (500, "no")
    org = await new_org(vault)
    endpoint = (await create(vault, org, receiver.url)).endpoint.id
    await new_connection(vault, org)
    await worker.run_once()
    first_failure = (await endpoint_of(vault, org, endpoint)).failing_since.ToDatetime(UTC)

    clock.advance(timedelta(days=2, hours=23))
    await new_connection(vault, org)
    await worker.run_once()
    assert (await endpoint_of(vault, org, endpoint)).enabled

    clock.advance(timedelta(hours=1, seconds=1))
    await new_connection(vault, org)
    await worker.run_once()
    disabled = await endpoint_of(vault, org, endpoint)
    assert (disabled.enabled, disabled.disabled_reason) == (False, "failing")
    events = await epb_grpc.EventServiceStub(vault.channel).ListEvents(
        epb.ListEventsRequest(organization_id=org, types=["webhook.endpoint_disabled"])
    )
    [event] = events.events
    assert event.data["reason"] == "failing"
    assert datetime.fromisoformat(event.data["failing_since"]) == first_failure

    # Enabled again by hand: the failure streak starts over, pending deliveries resume.
    enabled = await stub(vault).UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(
            endpoint=pb.WebhookEndpoint(organization_id=org, id=endpoint, enabled=True),
            update_mask={"paths": ["enabled"]},
        )
    )
    assert enabled.endpoint.enabled
    assert not enabled.endpoint.HasField("failing_since")
    assert enabled.endpoint.disabled_reason == ""


async def test_secret_rotation_signs_with_both_during_the_overlap(
    vault: Vault, receiver: Receiver, worker: WebhookWorker, clock: Clock
) -> None:
    """After RotateWebhookSecret both secrets sign (two v1 entries) until the overlap
    (24 h) ends; after it only the new one does, and the old one no longer verifies."""
    org = await new_org(vault)
    created = await create(vault, org, receiver.url)
    endpoint, old = created.endpoint.id, created.signing_secret
    rotated = await stub(vault).RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(organization_id=org, endpoint_id=endpoint)
    )
    new = rotated.signing_secret
    assert new != old
    assert new.startswith("whsec_")
    assert rotated.endpoint.HasField("previous_secret_expire_time")

    await stub(vault).SendTestEvent(
        pb.SendTestEventRequest(organization_id=org, endpoint_id=endpoint)
    )
    assert await worker.run_once() == 1
    during = receiver.received[-1]
    assert len(during.signatures()) == 2
    assert verify_now(new, during)["type"] == "webhook.test"
    assert verify_now(old, during)["data"]["endpoint_id"] == endpoint

    clock.advance(timedelta(hours=24, seconds=1))
    await stub(vault).SendTestEvent(
        pb.SendTestEventRequest(organization_id=org, endpoint_id=endpoint)
    )
    assert await worker.run_once() == 1
    after = receiver.received[-1]
    assert len(after.signatures()) == 1
    assert signed_by(new, after)
    assert not signed_by(old, after)


async def test_rewrap_reseals_both_secrets_so_the_old_data_key_retires(
    vault: Vault, receiver: Receiver, worker: WebhookWorker, key_manager: keys.KeyManager
) -> None:
    """An endpoint's secrets (the current and, during an overlap, the previous one) are
    sealed under data key version 1: after a rotation the rewrap re-seals both under
    version 2, version 1 retires (refused before the rewrap), and the delivery still
    carries both signatures, each verifying."""
    org = await new_org(vault)
    created = await create(vault, org, receiver.url)
    endpoint, old = created.endpoint.id, created.signing_secret
    new = (
        await stub(vault).RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(organization_id=org, endpoint_id=endpoint)
        )
    ).signing_secret
    retire_v1 = kpb.RetireKeyVersionRequest(data_key=kpb.DataKeyRef(organization_id=org, version=1))
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    await expect_status(vault.keys.RetireKeyVersion(retire_v1), grpc.StatusCode.FAILED_PRECONDITION)

    await vault.keys.StartRewrap(kpb.StartRewrapRequest())
    assert await RewrapWorker(KeyAdminRepository(vault.db), key_manager).work_once()
    await vault.keys.RetireKeyVersion(retire_v1)

    await stub(vault).SendTestEvent(
        pb.SendTestEventRequest(organization_id=org, endpoint_id=endpoint)
    )
    # With it, the key.data_key_rotated and key.rewrap_completed events of the rotation.
    assert await worker.run_once() == 3
    [message] = [m for m in receiver.received if m.payload["type"] == "webhook.test"]
    assert len(message.signatures()) == 2
    assert verify_now(new, message)["type"] == "webhook.test"
    assert verify_now(old, message)["data"]["endpoint_id"] == endpoint


async def test_two_workers_never_attempt_one_delivery_twice(
    vault: Vault,
    receiver: Receiver,
    service_dsn: str,
    key_manager: keys.KeyManager,
    clock: Clock,
) -> None:
    """Two workers with pools of their own (as two processes have) claim concurrently
    from one database: every delivery is attempted exactly once (counted at the receiver)."""
    org = await new_org(vault)
    await create(vault, org, receiver.url)
    for _ in range(40):
        await new_connection(vault, org)
    pools = [
        await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=3)) for _ in range(2)
    ]
    workers = [
        Components(pool, key_manager=key_manager, webhooks=WebhookSettings()).webhook_worker_with(
            clock=clock, batch=5
        )
        for pool in pools
    ]
    try:
        while len(receiver.received) < 40:
            claimed = await asyncio.gather(*(w.run_once() for w in workers))
            assert sum(claimed) > 0
    finally:
        for running in workers:
            await running.aclose()
        for pool in pools:
            await pool.close()
    ids = [r.message_id for r in receiver.received]
    assert len(ids) == 40
    assert len(set(ids)) == 40


async def test_a_killed_serve_process_loses_no_delivery(
    vault: Vault,
    receiver: Receiver,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
    key_manager: keys.KeyManager,
    clock: Clock,
) -> None:
    """`singura-vault serve` claims the deliveries and is killed with SIGKILL while its
    requests are in flight; once its leases run out another process delivers every
    event (each answered 2xx at least once, counted at the receiver)."""
    org = await new_org(vault)
    endpoint = (await create(vault, org, receiver.url)).endpoint.id
    for _ in range(5):
        await new_connection(vault, org)
    receiver.hold = asyncio.Event()
    async with serve_process_handle(
        vault, service_dsn, auth_secret, root_key, SINGURA_WEBHOOK_TIMEOUT="3"
    ) as (_, process):
        await receiver.until(lambda received: len(received) >= 5)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 30)
    in_flight = {r.message_id for r in receiver.received}
    assert len(in_flight) == 5
    assert receiver.answered_ok() == set()
    receiver.hold.set()

    # Another process (this one): the dead process's leases (2 x 3 s + 2 s) still hold
    # now; once they have run out (its clock moved past them), it delivers every event.
    other = Components(
        vault.db, key_manager=key_manager, webhooks=WebhookSettings()
    ).webhook_worker_with(clock=clock)
    try:
        assert await other.run_once() == 0
        clock.advance(timedelta(seconds=8, milliseconds=500))
        assert await other.run_once() == 5
    finally:
        await other.aclose()
    assert receiver.answered_ok() == in_flight
    states = {d.state for d in await deliveries(vault, org, endpoint)}
    assert states == {DELIVERED}
