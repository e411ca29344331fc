"""API keys made through the vault's AccessService, as an administrator would."""

from __future__ import annotations

from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from tests.support.vault import Vault


async def make_key(vault: Vault, org: str = "", roles: tuple[int, ...] = ()) -> str:
    response = await vault.access.CreateApiKey(
        apb.CreateApiKeyRequest(organization_id=org, roles=list(roles), name="test")
    )
    return response.secret
