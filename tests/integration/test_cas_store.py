"""Check-and-set stores (#29 item 2): StoreCredential.expected_version, over a real
channel and PostgreSQL. A store lands only on top of the version it expects (0: none
yet), else ABORTED (CREDENTIAL_VERSION_MISMATCH) with the current version in the
ErrorInfo metadata; of concurrent stores with one expectation exactly one wins; a
replayed request_id returns the credential its first call stored."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from singura_vault.context import Principal, RequestContext, bind_request
from singura_vault.domain.credentials import CredentialSlot, CredentialType
from singura_vault.domain.sealed import EncryptedValue
from singura_vault.errors import Aborted
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.repositories.credential_store_request import StoreRequest
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, reveal, store
from tests.support.error_details import details
from tests.support.gated_database import GatedDatabase, spin_until
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault


def cas(
    org: str, conn: str, value: str, expected: int | None, request_id: str = ""
) -> crpb.StoreCredentialRequest:
    request = crpb.StoreCredentialRequest(
        organization_id=org, connection_id=conn, type=ACCESS, value=value, request_id=request_id
    )
    if expected is not None:
        request.expected_version = expected
    return request


async def versions(vault: Stubs, org: str, conn: str) -> list[int]:
    listed = await vault.credentials.ListCredentialVersions(
        crpb.ListCredentialVersionsRequest(organization_id=org, connection_id=conn, type=ACCESS)
    )
    return [c.version for c in listed.credentials]


async def expect_mismatch(call: Any, current: int, expected: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    assert error.code() == grpc.StatusCode.ABORTED, error.details()
    found = details(error)["ErrorInfo"]
    assert found.reason == "CREDENTIAL_VERSION_MISMATCH"
    assert found.metadata["current_version"] == str(current)
    assert found.metadata["expected_version"] == str(expected)
    assert f"not version {expected}" in (error.details() or "")


async def test_a_store_that_expects_the_current_version_lands_on_top_of_it(vault: Vault) -> None:
    """expected_version 0 stores the first version, 1 the second; each is revealed."""
    org, conn = await tenant(vault)
    first = (await vault.credentials.StoreCredential(cas(org, conn, canary("cas-1"), 0))).credential
    assert first.version == 1
    value = canary("cas-2")
    second = (await vault.credentials.StoreCredential(cas(org, conn, value, 1))).credential
    assert second.version == 2
    assert await reveal(vault, org, conn) == value
    assert await versions(vault, org, conn) == [2, 1]


async def test_a_stale_expectation_is_aborted_with_the_current_version(vault: Vault) -> None:
    """Expecting version 1 when 2 is current: ABORTED, the current version (2) in the
    details, and nothing is stored."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("cas-stale-1"))
    current = canary("cas-stale-2")
    await store(vault, org, conn, current)
    await expect_mismatch(
        vault.credentials.StoreCredential(cas(org, conn, canary("cas-stale-3"), 1)), 2, 1
    )
    await expect_mismatch(
        vault.credentials.StoreCredential(cas(org, conn, canary("cas-stale-4"), 7)), 2, 7
    )
    assert await versions(vault, org, conn) == [2, 1]
    assert await reveal(vault, org, conn) == current


async def test_zero_means_none_yet_and_is_not_the_same_as_unset(vault: Vault) -> None:
    """expected_version 0 is refused once a version exists (current 1 in the details); a
    store that leaves the field unset still stores whatever is current."""
    org, conn = await tenant(vault)
    await vault.credentials.StoreCredential(cas(org, conn, canary("cas-zero-1"), 0))
    await expect_mismatch(
        vault.credentials.StoreCredential(cas(org, conn, canary("cas-zero-2"), 0)), 1, 0
    )
    unset = (
        await vault.credentials.StoreCredential(cas(org, conn, canary("cas-zero-3"), None))
    ).credential
    assert unset.version == 2


async def test_a_negative_expected_version_is_invalid(vault: Vault) -> None:
    """-1 is no version: INVALID_ARGUMENT naming the field."""
    org, conn = await tenant(vault)
    await expect_status(
        vault.credentials.StoreCredential(cas(org, conn, canary("cas-neg"), -1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expected_version",
    )


async def test_concurrent_stores_with_one_expectation_exactly_one_wins(vault: Vault) -> None:
    """Eight stores expecting version 1 at once: one lands as version 2, the other seven
    are ABORTED naming version 2 as current; one version stays current."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("cas-race-1"))
    values = [canary(f"cas-race-{n}") for n in range(8)]
    results = await asyncio.gather(
        *(vault.credentials.StoreCredential(cas(org, conn, v, 1)) for v in values),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, crpb.StoreCredentialResponse)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1, results
    assert len(lost) == 7, results
    assert won[0].credential.version == 2
    for error in lost:
        assert error.code() == grpc.StatusCode.ABORTED
        info = details(error)["ErrorInfo"]
        assert info.reason == "CREDENTIAL_VERSION_MISMATCH"
        assert info.metadata["current_version"] == "2"
    assert await versions(vault, org, conn) == [2, 1]
    assert await reveal(vault, org, conn) == values[results.index(won[0])]


async def test_check_and_set_stores_planned_in_one_batch_exactly_one_wins(
    gated: tuple[Vault, GatedDatabase],
) -> None:
    """Stores expecting version 1, all planned in one coalesced plan batch (migration
    022), and a plain store among them: the plain store and one check-and-set store land,
    every other check-and-set store is ABORTED with the version that is current."""
    vault, db = gated
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("cas-batch-1"))
    db.hold_next("credential_store_plan_batch")
    first = asyncio.ensure_future(
        vault.credentials.StoreCredential(cas(org, conn, canary("cas-batch-first"), 1))
    )
    await db.entered.wait()
    calls = [
        asyncio.ensure_future(
            vault.credentials.StoreCredential(cas(org, conn, canary(f"cas-batch-{n}"), 1))
        )
        for n in range(4)
    ]
    plain = asyncio.ensure_future(store(vault, org, conn, canary("cas-batch-plain")))
    repository = db.components.credential_store
    await spin_until(lambda: len(repository._store_plans._waiting) == 5)
    db.release.set()
    results = await asyncio.gather(first, *calls, return_exceptions=True)
    landed = await plain

    assert ("credential_store_plan_batch", 5) in db.batches
    won = [r for r in results if isinstance(r, crpb.StoreCredentialResponse)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1, results
    assert len(lost) == 4, results
    assert {won[0].credential.version, landed.version} == {2, 3}
    for error in lost:
        assert error.code() == grpc.StatusCode.ABORTED
        info = details(error)["ErrorInfo"]
        assert info.reason == "CREDENTIAL_VERSION_MISMATCH"
        assert info.metadata["current_version"] in {"2", "3"}
    assert await versions(vault, org, conn) == [3, 2, 1]


async def test_a_replayed_request_returns_its_credential_after_the_version_moved_on(
    vault: Vault,
) -> None:
    """A check-and-set store with a request_id lands as version 2; after a later store
    made version 3, the same request again returns version 2's credential instead of a
    mismatch, and stores nothing."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("cas-replay-1"))
    request_id = str(uuid.uuid4())
    request = cas(org, conn, canary("cas-replay-2"), 1, request_id)
    stored = (await vault.credentials.StoreCredential(request)).credential
    await store(vault, org, conn, canary("cas-replay-3"))
    replayed = (await vault.credentials.StoreCredential(request)).credential
    assert replayed.id == stored.id
    assert replayed.version == 2
    assert await versions(vault, org, conn) == [3, 2, 1]


async def test_concurrent_replays_of_one_request_both_get_its_credential(
    gated: tuple[Vault, GatedDatabase],
) -> None:
    """The same check-and-set request sent twice, planned in one batch: the second loses
    the version to the first and, finding its own request_id there, returns the same
    credential instead of a mismatch."""
    vault, db = gated
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("cas-twice-1"))
    request = cas(org, conn, canary("cas-twice-2"), 1, str(uuid.uuid4()))
    db.hold_next("credential_store_plan_batch")
    first = asyncio.ensure_future(vault.credentials.StoreCredential(request))
    await db.entered.wait()
    calls = [asyncio.ensure_future(vault.credentials.StoreCredential(request)) for _ in range(2)]
    repository = db.components.credential_store
    await spin_until(lambda: len(repository._store_plans._waiting) == 2)
    db.release.set()
    responses = await asyncio.gather(first, *calls)
    assert len({r.credential.id for r in responses}) == 1
    assert {r.credential.version for r in responses} == {2}
    assert await versions(vault, org, conn) == [2, 1]


async def test_the_locked_last_attempt_compares_under_the_lock(
    gated: tuple[Vault, GatedDatabase],
) -> None:
    """The store's last attempt (the connection locked across plan and write) refuses a
    stale expectation with the current version, lands a right one, and replays a
    request_id that already landed."""
    vault, db = gated
    org, conn = await tenant(vault)
    await store(vault, org, conn, canary("cas-locked-1"))
    components = db.components
    repository = components.credential_store
    sealing = components.sealing
    org_id, conn_id = uuid.UUID(org), uuid.UUID(conn)
    value = canary("cas-locked-2")
    plaintext = value.encode()

    async def seal(slot: CredentialSlot) -> EncryptedValue:
        return await sealing.seal_for(slot, plaintext)

    request_id = uuid.uuid4()

    def request(expected: int) -> StoreRequest:
        return StoreRequest(conn_id, CredentialType.ACCESS_TOKEN, None, request_id, expected)

    async def attempts() -> None:
        # As the interceptor does for an admin key's call, in this task only.
        bind_request(RequestContext("cas-locked", "test", Principal("test", None)))
        with pytest.raises(Aborted) as info:
            await repository._store_locked(org_id, request(0), seal)
        assert info.value.reason == "CREDENTIAL_VERSION_MISMATCH"
        assert info.value.metadata["current_version"] == "1"
        landed = await repository._store_locked(org_id, request(1), seal)
        assert landed.version == 2
        replayed = await repository._store_locked(org_id, request(1), seal)
        assert replayed.id == landed.id

    await asyncio.create_task(attempts())
    assert await reveal(vault, org, conn) == value
