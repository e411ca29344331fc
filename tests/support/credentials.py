"""Storing and revealing credentials through the CredentialService, as a client does,
and the credential types tests store."""

from __future__ import annotations

from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from tests.support.vault import Stubs

ACCESS = crpb.CREDENTIAL_TYPE_ACCESS_TOKEN
API_KEY = crpb.CREDENTIAL_TYPE_API_KEY


async def store(
    vault: Stubs, org: str, conn: str, value: str, type_: int = ACCESS
) -> crpb.Credential:
    return (
        await vault.credentials.StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=org, connection_id=conn, type=type_, value=value
            )
        )
    ).credential


async def reveal(vault: Stubs, org: str, conn: str, version: int = 0, type_: int = ACCESS) -> str:
    return (
        await vault.credentials.RevealCredential(
            crpb.RevealCredentialRequest(
                organization_id=org, connection_id=conn, type=type_, version=version
            )
        )
    ).value
