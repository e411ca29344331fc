"""A tenant to work in: an organization (enterprise plan) and a connection of it, made
through the vault's API as a client would."""

from __future__ import annotations

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.messages import connection_message, org_message
from tests.support.vault import Vault


async def new_org(vault: Vault) -> str:
    """A new enterprise organization's id."""
    response = await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_ENTERPRISE))
    )
    return response.organization.id


async def new_connection(vault: Vault, org: str) -> str:
    """A new Slack connection's id in ``org``."""
    response = await vault.connections.CreateConnection(
        cpb.CreateConnectionRequest(connection=connection_message(org))
    )
    return response.connection.id


async def tenant(vault: Vault) -> tuple[str, str]:
    """A new organization and a connection of it: (organization id, connection id)."""
    org = await new_org(vault)
    return org, await new_connection(vault, org)
