"""The vault's side of the load: one call of each measured operation (StoreCredential,
RevealCredential, GetCredential, BatchRevealCredentials, GetAccessToken) over the
client's gRPC channels with the admin key, and whether this build has the batch RPC at
all."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import _harness as h
import grpc

from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as oapb
from singura_vault.proto.singura.vault.v1 import oauth_pb2_grpc as oagrpc

from .pairs import BATCH_RPC, CALL_TIMEOUT_S, TOKEN_LIFETIME, TYPES, Slot


def store_request(organization_id: str, slot: Slot, value: str) -> crpb.StoreCredentialRequest:
    """A StoreCredential of ``value`` into ``slot``; an access token expires in
    :data:`.pairs.TOKEN_LIFETIME`, so GetAccessToken finds it fresh and never refreshes."""
    request = crpb.StoreCredentialRequest(
        organization_id=organization_id,
        connection_id=slot["connection_id"],
        type=slot["type"],
        value=value,
    )
    if slot["type"] == TYPES["access_token"]:
        request.expire_time.FromDatetime(datetime.now(UTC) + TOKEN_LIFETIME)
    return request


def batch_available() -> bool:
    channel = grpc.insecure_channel("127.0.0.1:1")  # never connected: stubs are lazy
    try:
        return hasattr(crgrpc.CredentialServiceStub(channel), BATCH_RPC)
    finally:
        channel.close()


def batch_request(organization_id: str, slots: list[Slot]) -> Any:
    """A BatchRevealCredentials request (only called when the stub has the RPC).

    Shape: the organization on the request (if it has the field) and one repeated
    message field whose items address a credential as RevealCredential does
    (connection_id, type, version; organization_id too if the item has it). Built from
    the descriptor, so only those field names are assumed.
    """
    request_class: Any = crpb.BatchRevealCredentialsRequest  # type: ignore[attr-defined,unused-ignore]  # absent from older generated stubs
    request = request_class()
    fields = request_class.DESCRIPTOR.fields_by_name
    if "organization_id" in fields:
        request.organization_id = organization_id
    items = next(f for f in request_class.DESCRIPTOR.fields if f.is_repeated and f.message_type)
    item_fields = items.message_type.fields_by_name
    for slot in slots:
        values = {
            "organization_id": organization_id,
            "connection_id": slot["connection_id"],
            "type": slot["type"],
            "version": 0,
        }
        getattr(request, items.name).add(**{k: v for k, v in values.items() if k in item_fields})
    return request


def batch_counts(response: Any) -> tuple[int, int]:
    """(revealed, failed) items of a BatchRevealCredentials response: the items of its
    repeated message field; an item failed if its google.rpc ``code`` is not 0 (or, for
    other shapes, if it has a set ``error`` message)."""
    results = next(f for f in response.DESCRIPTOR.fields if f.is_repeated and f.message_type)
    ok = failed = 0
    for item in getattr(response, results.name):
        names = item.DESCRIPTOR.fields_by_name
        bad = ("code" in names and item.code != 0) or (
            "error" in names and names["error"].message_type is not None and item.HasField("error")
        )
        failed += bad
        ok += not bad
    return ok, failed


def vault_call(config: dict[str, Any], channels: list[grpc.aio.Channel]) -> h.Call:
    """The call of ``config["op"]``: store, reveal, get, batch or token."""
    stubs = [crgrpc.CredentialServiceStub(c) for c in channels]
    metadata = h.auth(config["secret"])
    org = config["organization_id"]
    slots: list[Slot] = config["slots"]
    if config["op"] == "token":  # only the connections' access tokens
        slots = [s for s in slots if s["type"] == TYPES["access_token"]]
    concurrency: int = config["concurrency"]
    op = config["op"]

    def slot_of(worker: int, n: int) -> Slot:
        # Worker i owns slots i, i+c, i+2c, ...: no two calls in flight write the same
        # (connection, type) while concurrency <= 180.
        own = slots[worker % len(slots) :: concurrency] or slots
        return own[n % len(own)]

    # The single-credential operations differ only in their RPC and request: each
    # builder names the RPC and builds a new request (a new value, for a store).
    def store(slot: Slot) -> tuple[str, Any]:
        return "StoreCredential", store_request(org, slot, secrets.token_urlsafe(32))

    def reveal(slot: Slot) -> tuple[str, Any]:
        return "RevealCredential", crpb.RevealCredentialRequest(
            organization_id=org, connection_id=slot["connection_id"], type=slot["type"]
        )

    def get(slot: Slot) -> tuple[str, Any]:
        return "GetCredential", crpb.GetCredentialRequest(
            organization_id=org, credential_id=slot["credential_id"]
        )

    size: int = config["batch_size"]

    async def batch(worker: int, n: int) -> tuple[int, str]:
        start = (worker * 7 + n * size) % len(slots)
        chosen = [slots[(start + i) % len(slots)] for i in range(size)]
        method = getattr(stubs[worker % len(stubs)], BATCH_RPC)
        response = await method(
            batch_request(org, chosen), metadata=metadata, timeout=CALL_TIMEOUT_S
        )
        ok, failed = batch_counts(response)
        return ok, "OK" if not failed else "ITEM_ERROR"

    oauth = [oagrpc.OAuthServiceStub(c) for c in channels]

    async def token(worker: int, n: int) -> tuple[int, str]:
        slot = slot_of(worker, n)
        response = await oauth[worker % len(oauth)].GetAccessToken(
            oapb.GetAccessTokenRequest(organization_id=org, connection_id=slot["connection_id"]),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        # The row measures the fresh path: a refresh would be a different call.
        return (0, "REFRESHED") if response.refreshed else (1, "OK")

    if op == "batch":
        return batch
    if op == "token":
        return token
    builders: dict[str, Callable[[Slot], tuple[str, Any]]] = {
        "store": store,
        "reveal": reveal,
        "get": get,
    }
    build = builders[op]

    async def single(worker: int, n: int) -> tuple[int, str]:
        rpc, request = build(slot_of(worker, n))
        await getattr(stubs[worker % len(stubs)], rpc)(
            request, metadata=metadata, timeout=CALL_TIMEOUT_S
        )
        return 1, "OK"

    return single
