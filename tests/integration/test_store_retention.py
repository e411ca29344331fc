"""What a store leaves behind in the server process: nothing, once it has answered.

A store that loses the race for its planned version plans again (migration 014); the
constraint error it met must not outlive the call. When the repositories mapped a
constraint name to one shared exception *instance*, every raise chained its traceback,
frames and driver error onto that instance, and ``serve`` grew 8-12 KB per contended
store for as long as it ran (issue #25, item 0).
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from uuid import UUID

import asyncpg

from singura_vault.domain.credentials import CredentialSlot, CredentialType
from singura_vault.domain.sealed import EncryptedValue
from singura_vault.errors import VaultError
from singura_vault.repositories.credential_store_request import StoreRequest
from tests.support.credentials import store
from tests.support.tenants import tenant
from tests.support.vault import Vault

ROUNDS = 20


def _alive(kind: type[BaseException]) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


def _seal_after_a_rival(
    vault: Vault, org: str, conn: str, rival_value: str, taken: list[int]
) -> Callable[[CredentialSlot], Awaitable[EncryptedValue]]:
    """A seal step that, the first time only, lets a rival store of the same credential
    commit first (it takes the planned version); it records the rival's version."""
    sealing = vault.server.components.sealing

    async def seal(slot: CredentialSlot) -> EncryptedValue:
        if not taken:  # the retry seals undisturbed
            rival = await store(vault, org, conn, rival_value)
            taken.append(rival.version)
        return await sealing.seal_for(slot, b"winner")

    return seal


async def test_a_store_that_lost_its_version_race_leaves_no_error_alive(vault: Vault) -> None:
    """Each round, a concurrent store takes the version a store planned, so that store
    meets the unique constraint and plans again; after all rounds, no driver error or
    vault error of those races is still reachable."""
    org, conn = await tenant(vault)
    await store(vault, org, conn, "first")  # the organization's data key exists from here
    repository = vault.server.components.credential_store
    driver_errors_before = _alive(asyncpg.exceptions.UniqueViolationError)
    vault_errors_before = _alive(VaultError)

    versions: list[tuple[int, int]] = []
    for round_ in range(ROUNDS):
        taken: list[int] = []
        seal = _seal_after_a_rival(vault, org, conn, f"rival-{round_}", taken)
        stored = await repository.store(
            UUID(org), StoreRequest(UUID(conn), CredentialType.ACCESS_TOKEN, None, None), seal
        )
        versions.append((taken[0], stored.version))

    # Every round really raced: the rival took the planned version, the store came next.
    assert all(mine == rival + 1 for rival, mine in versions), versions
    assert _alive(asyncpg.exceptions.UniqueViolationError) == driver_errors_before
    assert _alive(VaultError) == vault_errors_before
