"""Clients that keep storing through an outage, and the check that nothing they were
told was stored is missing: the shared part of the failover and several-host tests.

Each writer stores new values on its own connection, one after another; a refused
store is retried with the same request_id until it is acknowledged, as a client
following docs/high-availability.md would. The ledger records every acknowledgement
and the code of every refusal."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import grpc

from singura_vault.proto.singura.vault.v1 import audit_pb2, audit_pb2_grpc
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.canaries import canary
from tests.support.messages import connection_message, org_message
from tests.support.vault import Stubs

ACCESS = crpb.CREDENTIAL_TYPE_ACCESS_TOKEN
RETRY_BACKOFF_S = 0.05  # a client's pause between retries, not a synchronisation


@dataclass
class Ledger:
    """What the clients were told: every acknowledged store, every refusal's code."""

    acknowledged: list[tuple[str, int, str]] = field(default_factory=list)  # conn, version, value
    codes: list[grpc.StatusCode] = field(default_factory=list)
    refused: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, count: int) -> None:
        """Until ``count`` stores in all have been acknowledged."""
        while len(self.acknowledged) < count:
            self.progress.clear()
            await self.progress.wait()


async def tenant_with_connections(stubs: Stubs, count: int) -> tuple[str, list[str]]:
    org = (
        await stubs.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_ENTERPRISE))
        )
    ).organization.id
    conns = [
        (
            await stubs.connections.CreateConnection(
                cpb.CreateConnectionRequest(connection=connection_message(org))
            )
        ).connection.id
        for _ in range(count)
    ]
    return org, conns


async def writer(stubs: Stubs, org: str, conn: str, ledger: Ledger, stop: asyncio.Event) -> None:
    while not stop.is_set():
        value, request_id = canary("outage"), str(uuid.uuid4())
        request = crpb.StoreCredentialRequest(
            organization_id=org, connection_id=conn, type=ACCESS, value=value, request_id=request_id
        )
        while True:
            try:
                stored = await stubs.credentials.StoreCredential(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                ledger.codes.append(error.code())
                ledger.refused.set()
                await asyncio.sleep(RETRY_BACKOFF_S)
                continue
            ledger.acknowledged.append((conn, stored.credential.version, value))
            ledger.progress.set()
            break


async def check_every_store_survived(
    stubs: Stubs, org: str, conns: list[str], ledger: Ledger
) -> None:
    """Each connection holds exactly the acknowledged versions (none lost, none stored
    twice by a retry), each reveals its value, and the audit chain verifies."""
    for conn in conns:
        mine = sorted((v, value) for c, v, value in ledger.acknowledged if c == conn)
        versions = await stubs.credentials.ListCredentialVersions(
            crpb.ListCredentialVersionsRequest(
                organization_id=org, connection_id=conn, type=ACCESS, page_size=1000
            )
        )
        assert sorted(c.version for c in versions.credentials) == [v for v, _ in mine]
        for version, value in mine:
            revealed = await stubs.credentials.RevealCredential(
                crpb.RevealCredentialRequest(
                    organization_id=org, connection_id=conn, type=ACCESS, version=version
                )
            )
            assert revealed.value == value
    audit = audit_pb2_grpc.AuditServiceStub(stubs.channel)
    verified = await audit.VerifyAuditChain(audit_pb2.VerifyAuditChainRequest(organization_id=org))
    assert verified.ok, verified
    assert verified.pending_event_count == 0, verified
