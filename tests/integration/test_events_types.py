"""The event types beyond the first slice, each produced through the real path that
makes the change: a refresh against a loopback token endpoint (failed, recovered), the
connect flow (authorized, reauthorized), KeyService and the rewrap worker (data key
rotated, rewrap completed) and a signed audit checkpoint."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import audit_pb2 as apb
from singura_vault.proto.singura.vault.v1 import audit_pb2_grpc as apb_grpc
from singura_vault.proto.singura.vault.v1 import events_pb2 as pb
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as opb
from singura_vault.service.access import AccessService
from tests.support.canaries import canary
from tests.support.events import all_events, events_stub, store
from tests.support.oauth import get_token, link
from tests.support.oauth_connect import Setup
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.status import expect_status
from tests.support.tenants import new_org, tenant
from tests.support.vault import Vault, start_vault, stop_vault


@pytest.fixture
async def signer(tmp_path: Path) -> keys.AuditSigner:
    return keys.AuditSigner.generate_file(tmp_path / "audit-signing-key")


@pytest.fixture
async def components(
    db: Database,
    key_manager: keys.KeyManager,
    access_service: AccessService,
    signer: keys.AuditSigner,
) -> Components:
    return Components(db, key_manager=key_manager, access=access_service, audit_signer=signer)


@pytest.fixture
async def vault(components: Components) -> AsyncIterator[Vault]:
    """A vault that also signs audit checkpoints (used by every test here)."""
    running = await start_vault(components)
    yield running
    await stop_vault(running)


def data(event: pb.Event) -> dict[str, Any]:
    return json_format.MessageToDict(event.data)


async def of_type(vault: Vault, org: str, type_: str) -> list[pb.Event]:
    return await all_events(events_stub(vault), org, types=[type_])


async def test_refresh_failures_and_the_recovery_are_events(
    vault: Vault, provider: FakeOAuthProvider
) -> None:
    """Each failed refresh emits connection.refresh_failed with the failure count and the
    provider's error code; the first success after them emits refresh_recovered once."""
    linked = await link(vault, provider)
    provider.fail_next(status=503)
    await expect_status(get_token(vault, linked), grpc.StatusCode.UNAVAILABLE)
    provider.fail_next(status=429, retry_after=1)
    await expect_status(
        vault.oauth.RefreshConnection(
            opb.RefreshConnectionRequest(
                organization_id=linked.org, connection_id=linked.conn, force=True
            )
        ),
        grpc.StatusCode.UNAVAILABLE,
    )
    failed = await of_type(vault, linked.org, "connection.refresh_failed")
    assert [(data(e)["failure_count"], data(e)["error_code"]) for e in failed] == [
        (1, "http_503"),
        (2, "http_429"),
    ]
    assert all(e.connection_id == linked.conn for e in failed)
    assert "503" in data(failed[0])["reason"]
    assert await of_type(vault, linked.org, "connection.refresh_recovered") == []

    forced = await vault.oauth.RefreshConnection(
        opb.RefreshConnectionRequest(
            organization_id=linked.org, connection_id=linked.conn, force=True
        )
    )
    assert forced.refreshed
    (recovered,) = await of_type(vault, linked.org, "connection.refresh_recovered")
    assert data(recovered)["previous_failure_count"] == 2
    assert recovered.cursor > failed[-1].cursor
    # A later success is no recovery; a permanent failure names its code.
    await vault.oauth.RefreshConnection(
        opb.RefreshConnectionRequest(
            organization_id=linked.org, connection_id=linked.conn, force=True
        )
    )
    assert len(await of_type(vault, linked.org, "connection.refresh_recovered")) == 1
    provider.fail_next(status=400, error="invalid_grant")
    await expect_status(
        vault.oauth.RefreshConnection(
            opb.RefreshConnectionRequest(
                organization_id=linked.org, connection_id=linked.conn, force=True
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    last = (await of_type(vault, linked.org, "connection.refresh_failed"))[-1]
    assert (data(last)["failure_count"], data(last)["error_code"]) == (1, "invalid_grant")
    texts = [str(e) for e in await all_events(events_stub(vault), linked.org)]
    for secret in (linked.access_token, linked.refresh_token, linked.client_secret):
        assert not any(secret in text for text in texts)


async def test_the_connect_flow_emits_authorized_then_reauthorized(
    slack: Setup,  # the fixture imported above
) -> None:
    """A completion that creates a connection emits connection.authorized; one that
    reconnects it emits connection.reauthorized, with the same connection id."""
    slack.provider.shape_code_grants(granted_scopes=("channels:read",))
    first = await slack.connect(display_name="Acme Slack")
    conn = first.connection.id
    again = await slack.connect(connection_id=conn)
    assert again.reauthorized
    vault = slack.vault
    (authorized,) = await of_type(vault, slack.org, "connection.authorized")
    (reauthorized,) = await of_type(vault, slack.org, "connection.reauthorized")
    assert authorized.connection_id == reauthorized.connection_id == conn
    assert data(authorized)["platform"] == "slack"
    assert data(authorized)["granted_scopes"] == ["channels:read"]
    assert data(authorized)["authorization_id"] != data(reauthorized)["authorization_id"]
    types = [e.type for e in await all_events(events_stub(vault), slack.org)]
    # The connection is created in the completion's transaction, before its consumption.
    assert types.index("connection.created") < types.index("connection.authorized")
    assert types.index("connection.authorized") < types.index("connection.reauthorized")


async def test_a_data_key_rotation_and_the_rewrap_that_follows_are_events(
    vault: Vault, components: Components
) -> None:
    """RotateDataKey emits key.data_key_rotated in that organization; the rewrap job,
    run by the worker, emits key.rewrap_completed in each organization it moved onto a
    newer key -- and in no other."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("rotate-me"))
    bystander, other_conn = await tenant(vault)
    await store(vault, bystander, other_conn, canary("left-alone"))
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    (rotated,) = await of_type(vault, org, "key.data_key_rotated")
    assert (data(rotated)["key_version"], data(rotated)["previous_key_version"]) == (2, 1)
    assert await of_type(vault, org, "key.rewrap_completed") == []

    job = (await vault.keys.StartRewrap(kpb.StartRewrapRequest())).job
    assert await components.rewrap.work_once()
    (completed,) = await of_type(vault, org, "key.rewrap_completed")
    assert data(completed)["job_id"] == job.id
    assert (data(completed)["key_version"], data(completed)["failed"]) == (2, 0)
    assert await of_type(vault, bystander, "key.rewrap_completed") == []
    assert await of_type(vault, bystander, "key.data_key_rotated") == []


async def test_a_signed_checkpoint_of_an_organizations_chain_is_an_event(vault: Vault) -> None:
    """CreateAuditCheckpoint of an organization's chain emits audit.checkpoint_created
    there, with the position and hash it signed; the system chain's emits nothing."""
    org = await new_org(vault)
    audit = apb_grpc.AuditServiceStub(vault.channel)
    signed = (
        await audit.CreateAuditCheckpoint(apb.CreateAuditCheckpointRequest(organization_id=org))
    ).checkpoint
    (event,) = await of_type(vault, org, "audit.checkpoint_created")
    assert data(event)["chain_seq"] == signed.sequence
    assert data(event)["chain_hash"] == signed.hash
    assert data(event)["key_id"] == signed.key_id
    await audit.CreateAuditCheckpoint(apb.CreateAuditCheckpointRequest(organization_id=""))
    await vault.server.components.event_sequencer.run_once()
    admin_view = await all_events(events_stub(vault), "", types=["audit.checkpoint_created"])
    assert [e.organization_id for e in admin_view] == [org]


async def test_every_new_type_is_a_known_filter(vault: Vault) -> None:
    """The types filter accepts every new type (and still refuses an unknown one)."""
    org = await new_org(vault)
    for type_ in (
        "connection.refresh_failed",
        "connection.refresh_recovered",
        "connection.authorized",
        "connection.reauthorized",
        "credential.expiring",
        "credential.expired",
        "key.data_key_rotated",
        "key.rewrap_completed",
        "audit.checkpoint_created",
    ):
        assert await of_type(vault, org, type_) == []
    await expect_status(
        events_stub(vault).ListEvents(
            pb.ListEventsRequest(organization_id=org, types=[f"x.{uuid.uuid4().hex[:6]}"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "known types",
    )
