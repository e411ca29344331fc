"""The data set, written before measuring: one organization with 60 connections and
3 credentials each in the vault (the access tokens expiring in a day, so always fresh
for GetAccessToken), and the same 180 values as KV v2 entries in OpenBao."""

from __future__ import annotations

import asyncio
import secrets

import _harness as h
import grpc

from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb

from .bao_server import BaoProcess, http
from .pairs import CONNECTIONS, KV_MOUNT, TYPES, Slot
from .vault_calls import store_request
from .vault_server import VaultProcess


async def setup(vault: VaultProcess, bao: BaoProcess) -> tuple[str, list[Slot]]:
    """One organization, 60 connections x 3 credentials in the vault; the same 180
    values in OpenBao. Returns the organization id and the slots (no values)."""
    admin = h.auth(vault.admin_key())
    slots: list[Slot] = []
    async with grpc.aio.insecure_channel(vault.address) as channel:
        suffix = secrets.token_hex(5)
        # Enterprise: 60 connections (free allows 3).
        org = await h.create_organization(channel, admin, suffix, opb.PLAN_ENTERPRISE)
        credentials = crgrpc.CredentialServiceStub(channel)
        for index in range(CONNECTIONS):
            connection = await h.create_connection(
                channel,
                admin,
                org.id,
                f"U{suffix}{index:02d}",
                f"Bench Slack {index}",
                ["channels:read", "users:read"],
            )
            for name, kind in TYPES.items():
                value = secrets.token_urlsafe(48)
                slot: Slot = {"connection_id": connection.id, "type": kind}
                stored = await credentials.StoreCredential(
                    store_request(org.id, slot, value), metadata=admin
                )
                path = f"bench/{connection.id}/{name}"
                status, _ = await asyncio.to_thread(
                    http,
                    "POST",
                    f"{bao.url}/v1/{KV_MOUNT}/data/{path}",
                    bao.token,
                    {"data": {"value": value}},
                )
                if status != 200:
                    raise RuntimeError(f"OpenBao KV write answered HTTP {status}")
                slots.append({**slot, "credential_id": stored.credential.id, "path": path})
    return org.id, slots


async def setup_floor(address: str, like: list[Slot]) -> list[Slot]:
    """The same shape in the floor server (:mod:`.floor_server`): 180 new values, one
    per (connection, type) of ``like``, stored through its StoreCredential. Returns its
    slots, whose connection ids are the vault's (the floor does not check them)."""
    slots: list[Slot] = []
    async with grpc.aio.insecure_channel(address) as channel:
        credentials = crgrpc.CredentialServiceStub(channel)
        for slot in like:
            stored = await credentials.StoreCredential(
                crpb.StoreCredentialRequest(
                    connection_id=slot["connection_id"],
                    type=slot["type"],
                    value=secrets.token_urlsafe(48),
                )
            )
            slots.append({**slot, "credential_id": stored.credential.id})
    return slots
