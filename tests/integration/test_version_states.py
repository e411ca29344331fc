"""Credential version states (#29 item 1), end to end over a real channel and PostgreSQL:
DisableCredentialVersion, EnableCredentialVersion, DestroyCredentialVersion and
CancelCredentialDestroy; a disabled version is refused and skipped as the current one
(RevealCredential, BatchRevealCredentials, GetAccessToken); destruction happens after
SINGURA_DESTROY_DELAY on a clock the test moves (no sleeps), by the job of any vault
process, and erases the ciphertext while the row keeps its metadata; every transition
is audited and emits its event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import json_format

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.db.pool import Database, PoolSettings
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import audit_pb2 as aupb
from singura_vault.proto.singura.vault.v1 import audit_pb2_grpc as aupb_grpc
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import events_pb2 as epb
from singura_vault.proto.singura.vault.v1 import events_pb2_grpc as epb_grpc
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as oapb
from singura_vault.service.access import AccessService
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, reveal, store
from tests.support.error_details import details, refused
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault, start_vault, stop_vault

DELAY = timedelta(hours=24)
ENABLED = crpb.CREDENTIAL_VERSION_STATE_ENABLED
DISABLED = crpb.CREDENTIAL_VERSION_STATE_DISABLED
DESTROYED = crpb.CREDENTIAL_VERSION_STATE_DESTROYED
FAILED = grpc.StatusCode.FAILED_PRECONDITION
VERSION_EVENTS = [
    "credential.version_disabled",
    "credential.version_enabled",
    "credential.version_destroy_scheduled",
    "credential.version_destroy_cancelled",
    "credential.version_destroyed",
]


class Clock:
    """The vault's "now", moved by the test instead of waiting."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def clocked(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService, clock: Clock
) -> Components:
    """The vault's graph on the test clock; its background job waits an hour between
    passes, so only the test's own passes (run_once) destroy anything."""
    return Components(
        db,
        key_manager=key_manager,
        access=access_service,
        destroy_delay=DELAY,
        destroy_interval_s=3600.0,
        clock=clock,
    )


@pytest.fixture
async def vault(clocked: Components) -> AsyncIterator[Vault]:
    running = await start_vault(clocked)
    yield running
    await stop_vault(running)


def target(org: str, conn: str, version: int, type_: int = ACCESS) -> dict[str, Any]:
    return {"organization_id": org, "connection_id": conn, "type": type_, "version": version}


async def disable(stubs: Stubs, org: str, conn: str, version: int) -> crpb.Credential:
    request = crpb.DisableCredentialVersionRequest(**target(org, conn, version))
    return (await stubs.credentials.DisableCredentialVersion(request)).credential


async def enable(stubs: Stubs, org: str, conn: str, version: int) -> crpb.Credential:
    request = crpb.EnableCredentialVersionRequest(**target(org, conn, version))
    return (await stubs.credentials.EnableCredentialVersion(request)).credential


async def destroy(stubs: Stubs, org: str, conn: str, version: int) -> crpb.Credential:
    request = crpb.DestroyCredentialVersionRequest(**target(org, conn, version))
    return (await stubs.credentials.DestroyCredentialVersion(request)).credential


async def cancel(stubs: Stubs, org: str, conn: str, version: int) -> crpb.Credential:
    request = crpb.CancelCredentialDestroyRequest(**target(org, conn, version))
    return (await stubs.credentials.CancelCredentialDestroy(request)).credential


def reveal_call(vault: Stubs, org: str, conn: str, version: int) -> Any:
    return vault.credentials.RevealCredential(
        crpb.RevealCredentialRequest(**target(org, conn, version))
    )


async def events_of(vault: Vault, org: str) -> list[epb.Event]:
    stub = epb_grpc.EventServiceStub(vault.channel)
    response = await stub.ListEvents(
        epb.ListEventsRequest(organization_id=org, types=VERSION_EVENTS, page_size=1000)
    )
    return list(response.events)


async def audit_of(vault: Vault, org: str) -> list[aupb.AuditEvent]:
    stub = aupb_grpc.AuditServiceStub(vault.channel)
    found: list[aupb.AuditEvent] = []
    token = ""
    while True:
        page = await stub.ListAuditEvents(
            aupb.ListAuditEventsRequest(
                organization_id=org,
                filter=aupb.AuditFilter(resource_type="credential"),
                page_size=1000,
                page_token=token,
            )
        )
        found.extend(e for e in page.events if e.action.startswith("credential.version_"))
        token = page.next_page_token
        if not token:
            return sorted(found, key=lambda e: e.sequence)


async def test_a_disabled_version_is_refused_and_skipped_as_current(vault: Vault) -> None:
    """Disabling version 2 of 2: revealing it is FAILED_PRECONDITION
    (CREDENTIAL_VERSION_DISABLED, the version in the metadata); version 0, a batch item
    of version 0 and GetAccessToken give version 1; enabling it restores it as current."""
    org, conn = await tenant(vault)
    first, second = canary("versions-first"), canary("versions-second")
    expiry = datetime.now(UTC) + timedelta(hours=2)
    for value in (first, second):
        request = crpb.StoreCredentialRequest(
            organization_id=org, connection_id=conn, type=ACCESS, value=value
        )
        request.expire_time.FromDatetime(expiry)
        await vault.credentials.StoreCredential(request)

    disabled = await disable(vault, org, conn, 2)
    assert (disabled.version, disabled.version_state) == (2, DISABLED)
    assert disabled.state == crpb.CREDENTIAL_STATE_ACTIVE  # still the newest stored
    assert not disabled.HasField("destroy_time")

    error = await refused(reveal_call(vault, org, conn, 2), FAILED, "CREDENTIAL_VERSION_DISABLED")
    assert details(error)["ErrorInfo"].metadata["version"] == "2"
    assert "EnableCredentialVersion" in (error.details() or "")
    assert second not in (error.details() or "")
    current = await vault.credentials.RevealCredential(
        crpb.RevealCredentialRequest(**target(org, conn, 0))
    )
    assert (current.value, current.credential.version) == (first, 1)

    batch = await vault.credentials.BatchRevealCredentials(
        crpb.BatchRevealCredentialsRequest(
            organization_id=org,
            items=[
                crpb.BatchRevealItem(connection_id=conn, type=ACCESS, version=0),
                crpb.BatchRevealItem(connection_id=conn, type=ACCESS, version=2),
            ],
        )
    )
    assert (batch.results[0].code, batch.results[0].value) == (0, first)
    assert batch.results[1].code == FAILED.value[0]
    assert batch.results[1].value == ""
    assert batch.results[1].credential.version_state == DISABLED

    token = await vault.oauth.GetAccessToken(
        oapb.GetAccessTokenRequest(organization_id=org, connection_id=conn)
    )
    assert token.access_token == first
    assert token.credential.version == 1

    listed = await vault.credentials.ListCredentialVersions(
        crpb.ListCredentialVersionsRequest(organization_id=org, connection_id=conn, type=ACCESS)
    )
    assert [(c.version, c.version_state) for c in listed.credentials] == [
        (2, DISABLED),
        (1, ENABLED),
    ]
    fetched = await vault.credentials.GetCredential(
        crpb.GetCredentialRequest(organization_id=org, credential_id=disabled.id)
    )
    assert fetched.credential.version_state == DISABLED

    enabled = await enable(vault, org, conn, 2)
    assert enabled.version_state == ENABLED
    assert await reveal(vault, org, conn) == second
    assert await reveal(vault, org, conn, 2) == second


async def test_with_every_version_disabled_the_current_one_is_refused(vault: Vault) -> None:
    """No enabled version left: version 0 is FAILED_PRECONDITION for the newest one,
    not NOT_FOUND and not an older value; a store makes a new current version."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("versions-only-1"))
    await store(vault, org, conn, canary("versions-only-2"))
    await disable(vault, org, conn, 1)
    await disable(vault, org, conn, 2)
    error = await refused(reveal_call(vault, org, conn, 0), FAILED, "CREDENTIAL_VERSION_DISABLED")
    assert details(error)["ErrorInfo"].metadata["version"] == "2"
    third = canary("versions-only-3")
    await store(vault, org, conn, third)
    assert await reveal(vault, org, conn) == third


async def test_a_scheduled_destruction_is_cancelled_and_the_version_is_revealed(
    vault: Vault, clocked: Components, clock: Clock
) -> None:
    """DestroyCredentialVersion disables the version until now + SINGURA_DESTROY_DELAY
    (destroy_time); CancelCredentialDestroy restores it, and a job pass long after the
    old destroy_time erases nothing."""
    org, conn = await tenant(vault)
    value = canary("versions-cancel")
    await store(vault, org, conn, value)
    scheduled = await destroy(vault, org, conn, 1)
    assert scheduled.version_state == DISABLED
    assert scheduled.destroy_time.ToDatetime(tzinfo=UTC) == clock.now + DELAY
    error = await refused(reveal_call(vault, org, conn, 1), FAILED, "CREDENTIAL_VERSION_DISABLED")
    assert "CancelCredentialDestroy" in (error.details() or "")
    assert "destroy_time" in details(error)["ErrorInfo"].metadata

    restored = await cancel(vault, org, conn, 1)
    assert restored.version_state == ENABLED
    assert not restored.HasField("destroy_time")
    assert await reveal(vault, org, conn) == value

    clock.advance(DELAY * 2)
    assert await clocked.version_destroyer.run_once() == 0
    assert await reveal(vault, org, conn, 1) == value


async def test_a_cancelled_destruction_gives_back_the_disabled_state(vault: Vault) -> None:
    """A version disabled before its destruction was scheduled is disabled again after
    the cancellation, not enabled."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("versions-cancel-disabled"))
    await disable(vault, org, conn, 1)
    await destroy(vault, org, conn, 1)
    assert (await cancel(vault, org, conn, 1)).version_state == DISABLED
    await refused(reveal_call(vault, org, conn, 1), FAILED, "CREDENTIAL_VERSION_DISABLED")


async def test_the_job_erases_the_ciphertext_after_the_delay_and_keeps_the_row(
    vault: Vault, clocked: Components, clock: Clock, owner_dsn: str
) -> None:
    """Before destroy_time the job leaves the version; after it, ciphertext and nonce are
    gone for good while id, version, fingerprint, key version and times stay; revealing
    it is FAILED_PRECONDITION (CREDENTIAL_VERSION_DESTROYED) and version 0 skips it."""
    org, conn = await tenant(vault)
    kept, doomed = canary("versions-kept"), canary("versions-doomed")
    await store(vault, org, conn, kept)
    stored = await store(vault, org, conn, doomed)
    scheduled = await destroy(vault, org, conn, 2)

    clock.advance(DELAY - timedelta(seconds=1))
    assert await clocked.version_destroyer.run_once() == 0
    clock.advance(timedelta(seconds=1))
    assert await clocked.version_destroyer.run_once() == 1

    owner = await asyncpg.connect(owner_dsn)
    try:
        row = await owner.fetchrow(
            "SELECT * FROM singura.encrypted_credentials WHERE id = $1", uuid.UUID(stored.id)
        )
    finally:
        await owner.close()
    assert row is not None
    assert row["ciphertext"] is None
    assert row["nonce"] is None
    assert row["version_state"] == "destroyed"
    assert row["destroy_at"] == scheduled.destroy_time.ToDatetime(tzinfo=UTC)
    assert (row["version"], row["fingerprint"], row["key_version"]) == (
        2,
        stored.fingerprint,
        stored.key_version,
    )
    assert row["created_at"] == stored.create_time.ToDatetime(tzinfo=UTC)

    error = await refused(reveal_call(vault, org, conn, 2), FAILED, "CREDENTIAL_VERSION_DESTROYED")
    assert doomed not in (error.details() or "")
    assert await reveal(vault, org, conn) == kept
    fetched = await vault.credentials.GetCredential(
        crpb.GetCredentialRequest(organization_id=org, credential_id=stored.id)
    )
    assert fetched.credential.version_state == DESTROYED
    assert fetched.credential.HasField("destroy_time")
    assert await clocked.version_destroyer.run_once() == 0


async def test_bad_transitions_get_precise_statuses(
    vault: Vault, clocked: Components, clock: Clock
) -> None:
    """Unknown version: NOT_FOUND; version 0 or no type: INVALID_ARGUMENT; destroying
    twice or enabling a scheduled version: DESTROY_SCHEDULED; cancelling nothing:
    DESTROY_NOT_SCHEDULED; anything on a destroyed version: DESTROYED; anything on a
    revoked one: CREDENTIAL_REVOKED. Disabling twice is no error and no second event."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("versions-bad-1"))
    second = await store(vault, org, conn, canary("versions-bad-2"))

    not_found = grpc.StatusCode.NOT_FOUND
    await refused(disable(vault, org, conn, 9), not_found, "NOT_FOUND")
    await refused(destroy(vault, org, str(uuid.uuid4()), 1), not_found, "NOT_FOUND")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    error = await refused(disable(vault, org, conn, 0), invalid, "INVALID_ARGUMENT")
    assert details(error)["BadRequest"].field_violations[0].field == "version"
    await refused(
        vault.credentials.EnableCredentialVersion(
            crpb.EnableCredentialVersionRequest(organization_id=org, connection_id=conn, version=1)
        ),
        invalid,
        "INVALID_ARGUMENT",
    )
    await refused(cancel(vault, org, conn, 1), FAILED, "CREDENTIAL_VERSION_DESTROY_NOT_SCHEDULED")

    await disable(vault, org, conn, 1)
    assert (await disable(vault, org, conn, 1)).version_state == DISABLED
    await destroy(vault, org, conn, 1)
    error = await refused(
        destroy(vault, org, conn, 1), FAILED, "CREDENTIAL_VERSION_DESTROY_SCHEDULED"
    )
    assert "CancelCredentialDestroy" in (error.details() or "")
    await refused(enable(vault, org, conn, 1), FAILED, "CREDENTIAL_VERSION_DESTROY_SCHEDULED")
    await refused(disable(vault, org, conn, 1), FAILED, "CREDENTIAL_VERSION_DESTROY_SCHEDULED")

    clock.advance(DELAY)
    assert await clocked.version_destroyer.run_once() == 1
    for call in (enable, disable, destroy, cancel):
        await refused(call(vault, org, conn, 1), FAILED, "CREDENTIAL_VERSION_DESTROYED")

    await vault.credentials.RevokeCredential(
        crpb.RevokeCredentialRequest(organization_id=org, credential_id=second.id)
    )
    for call in (enable, disable, destroy, cancel):
        await refused(call(vault, org, conn, 2), FAILED, "CREDENTIAL_REVOKED")

    types = [e.type for e in await events_of(vault, org)]
    assert types == [
        "credential.version_disabled",
        "credential.version_destroy_scheduled",
        "credential.version_destroyed",
    ]


async def test_only_writers_of_the_organization_change_states(vault: Vault) -> None:
    """reader and revealer keys are PERMISSION_DENIED, a writer key may, an admin key
    may; another organization's writer is PERMISSION_DENIED and, naming its own
    organization, finds nothing (NOT_FOUND): the version is untouched."""
    org, conn = await tenant(vault)
    value = canary("versions-roles")
    await store(vault, org, conn, value)
    other_org, _ = await tenant(vault)

    async def key(organization: str, role: int) -> Stubs:
        created = await vault.access.CreateApiKey(
            apb.CreateApiKeyRequest(organization_id=organization, roles=[role], name="versions")
        )
        return vault.as_key(created.secret)

    denied = grpc.StatusCode.PERMISSION_DENIED
    for role in (apb.API_KEY_ROLE_READER, apb.API_KEY_ROLE_REVEALER):
        stubs = await key(org, role)
        for call in (disable, enable, destroy, cancel):
            error = await refused(call(stubs, org, conn, 1), denied, "PERMISSION_DENIED")
            assert "API_KEY_ROLE_WRITER" in (error.details() or "")
    outsider = await key(other_org, apb.API_KEY_ROLE_WRITER)
    await refused(disable(outsider, org, conn, 1), denied, "PERMISSION_DENIED")
    await refused(disable(outsider, other_org, conn, 1), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    await refused(destroy(vault, other_org, conn, 1), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert await reveal(vault, org, conn) == value

    writer = await key(org, apb.API_KEY_ROLE_WRITER)
    assert (await disable(writer, org, conn, 1)).version_state == DISABLED
    assert (await enable(writer, org, conn, 1)).version_state == ENABLED


async def test_each_transition_is_audited_and_emits_its_event(
    vault: Vault, clocked: Components, clock: Clock
) -> None:
    """disable, enable, destroy, cancel, destroy and the job's destruction: one event of
    each type in commit order with ids, version, state and times (never the value), and
    one audit event each, the API key as actor and the job as system."""
    org, conn = await tenant(vault)
    value = canary("versions-events")
    stored = await store(vault, org, conn, value)
    await disable(vault, org, conn, 1)
    await enable(vault, org, conn, 1)
    await destroy(vault, org, conn, 1)
    await cancel(vault, org, conn, 1)
    scheduled = await destroy(vault, org, conn, 1)
    clock.advance(DELAY)
    assert await clocked.version_destroyer.run_once() == 1

    events = await events_of(vault, org)
    assert [e.type for e in events] == [
        "credential.version_disabled",
        "credential.version_enabled",
        "credential.version_destroy_scheduled",
        "credential.version_destroy_cancelled",
        "credential.version_destroy_scheduled",
        "credential.version_destroyed",
    ]
    assert {(e.connection_id, e.credential_id) for e in events} == {(conn, stored.id)}
    data = [json_format.MessageToDict(e.data) for e in events]
    assert [d["version_state"] for d in data] == [
        "disabled",
        "enabled",
        "disabled",
        "enabled",
        "disabled",
        "destroyed",
    ]
    assert all(d["version"] == 1 and d["credential_type"] == "access_token" for d in data)
    destroy_time = scheduled.destroy_time.ToDatetime(tzinfo=UTC)
    assert datetime.fromisoformat(data[4]["destroy_time"]) == destroy_time
    assert value not in str(events)
    assert stored.fingerprint not in str(events)

    audit = await audit_of(vault, org)
    assert [e.action for e in audit] == [e.type for e in events]
    assert {e.resource_id for e in audit} == {stored.id}
    assert all(e.outcome == aupb.AUDIT_OUTCOME_SUCCESS for e in audit)
    assert {e.actor for e in audit[:-1]} == {vault.admin_key[4:20]}
    assert audit[-1].actor == "system"
    assert value not in str(audit)


async def test_the_vault_runs_the_destruction_job_itself(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService
) -> None:
    """A serving vault's own background pass erases a due version: with a delay of 0
    and passes 50 ms apart, WatchEvents delivers credential.version_destroyed (the test
    waits on the stream, not on a timer)."""
    components = Components(
        db,
        key_manager=key_manager,
        access=access_service,
        destroy_delay=timedelta(0),
        destroy_interval_s=0.05,
        event_poll_interval_s=0.05,
    )
    running = await start_vault(components)
    try:
        org, conn = await tenant(running)
        await store(running, org, conn, canary("versions-background"))
        await destroy(running, org, conn, 1)
        stream = epb_grpc.EventServiceStub(running.channel).WatchEvents(
            epb.WatchEventsRequest(organization_id=org, types=["credential.version_destroyed"])
        )
        async with asyncio.timeout(30):
            event = (await anext(aiter(stream))).event
        stream.cancel()
        assert event.type == "credential.version_destroyed"
        await refused(reveal_call(running, org, conn, 1), FAILED, "CREDENTIAL_VERSION_DESTROYED")
    finally:
        await stop_vault(running)


async def test_two_processes_destroy_each_version_once(
    vault: Vault, clock: Clock, service_dsn: str, key_manager: keys.KeyManager
) -> None:
    """Two vault processes' jobs (two pools on one database) run at once over 40 due
    versions of two organizations: every version is destroyed exactly once (one event
    each), and neither job fails."""
    scheduled: list[tuple[str, str]] = []
    for _ in range(2):
        org, conn = await tenant(vault)
        for n in range(20):
            await store(vault, org, conn, canary(f"versions-many-{n}"))
            await destroy(vault, org, conn, n + 1)
        scheduled.append((org, conn))
    clock.advance(DELAY)
    other_db = await Database.connect(
        service_dsn, PoolSettings(min_size=1, max_size=3, connect_timeout_ms=5000)
    )
    try:
        mine = Components(vault.db, key_manager=key_manager, clock=clock)
        theirs = Components(other_db, key_manager=key_manager, clock=clock)
        counts = await asyncio.gather(
            *(c.version_destroyer.run_once() for c in (mine, theirs, mine, theirs))
        )
    finally:
        await other_db.close()
    assert sum(counts) == 40
    for org, _ in scheduled:
        events = await events_of(vault, org)
        destroyed = [e.credential_id for e in events if e.type == "credential.version_destroyed"]
        assert len(destroyed) == len(set(destroyed)) == 20
