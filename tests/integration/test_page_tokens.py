"""Page tokens are sealed: forged, edited, replayed by another key or on another
method, they are INVALID_ARGUMENT; genuine ones work on every vault process."""

from __future__ import annotations

import base64
import json
import random

import grpc

from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from tests.support.api_keys import make_key
from tests.support.auth import bearer
from tests.support.messages import connection_message
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault


async def first_page(stubs: Stubs, org: str) -> cpb.ListConnectionsResponse:
    return await stubs.connections.ListConnections(
        cpb.ListConnectionsRequest(organization_id=org, page_size=1)
    )


async def list_from(stubs: Stubs, org: str, token: str) -> cpb.ListConnectionsResponse:
    return await stubs.connections.ListConnections(
        cpb.ListConnectionsRequest(organization_id=org, page_size=1, page_token=token)
    )


def forged(cursor: dict[str, str]) -> str:
    """A token in the shape the unsealed cursor had (base64 JSON), made up by a client."""
    raw = json.dumps(cursor, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_forged_edited_and_replayed_tokens_are_refused(
    vault: Vault, second_process: str
) -> None:
    """Only a token the vault sealed for this method and API key continues a listing:
    200 forged or bit-flipped tokens and tokens used by another key or on another
    method are INVALID_ARGUMENT; the genuine one works on a second vault process."""
    org, _ = await tenant(vault)
    for _ in range(3):
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org))
        )
    page = await first_page(vault, org)
    token = page.next_page_token
    assert token
    assert [c.id for c in (await list_from(vault, org, token)).connections] != [
        c.id for c in page.connections
    ]

    inner, _, _ = token.rpartition(".")
    cursor = json.loads(base64.urlsafe_b64decode(inner + "=" * (-len(inner) % 4)))
    rng = random.Random(7)  # noqa: S311 - picks bytes to flip, not a secret
    candidates = [forged({**cursor, "i": "00000000-0000-4000-8000-000000000000"}), inner]
    while len(candidates) < 200:
        flipped = bytearray(token.encode())
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(7)
        text = flipped.decode("ascii", errors="replace")
        if text != token:
            candidates.append(text)
    refused = 0
    for candidate in candidates:
        try:
            await list_from(vault, org, candidate)
        except grpc.aio.AioRpcError as exc:
            refused += exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused == len(candidates)

    other_key = vault.as_key(await make_key(vault, org, (apb.API_KEY_ROLE_READER,)))
    await expect_status(list_from(other_key, org, token), grpc.StatusCode.INVALID_ARGUMENT)
    await expect_status(
        vault.credentials.ListCredentials(
            crpb.ListCredentialsRequest(
                organization_id=org, connection_id=page.connections[0].id, page_token=token
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )

    channel = grpc.aio.insecure_channel(second_process, interceptors=bearer(vault.admin_key))
    try:
        continued = await list_from(Stubs.on(channel), org, token)
    finally:
        await channel.close()
    assert len(continued.connections) == 1
    assert continued.connections[0].id != page.connections[0].id
