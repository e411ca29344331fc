"""The organizations and Slack connections that the benchmarks' setups create over
gRPC with the admin key, named after a random suffix so that they never collide."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import connections_pb2_grpc as cgrpc
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.proto.singura.vault.v1 import organizations_pb2_grpc as ogrpc

Metadata = tuple[tuple[str, str], ...]
"""Per-call metadata, as :func:`.vault.auth` makes it."""


async def create_organization(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    suffix: str,
    plan: opb.Plan.ValueType = opb.PLAN_FREE,
) -> opb.Organization:
    """The organization ``Bench <suffix>`` (slug ``bench-<suffix>``) on ``plan``."""
    response = await ogrpc.OrganizationServiceStub(channel).CreateOrganization(
        opb.CreateOrganizationRequest(
            organization=opb.Organization(
                name=f"Bench {suffix}",
                slug=f"bench-{suffix}",
                domain=f"bench-{suffix}.example",
                plan=plan,
            )
        ),
        metadata=metadata,
    )
    return response.organization


async def create_connection(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    organization_id: str,
    platform_user_id: str,
    display_name: str = "Bench Slack",
    permissions: Sequence[str] = (),
) -> cpb.Connection:
    """A Slack connection of ``organization_id`` in workspace T0001."""
    response = await cgrpc.ConnectionServiceStub(channel).CreateConnection(
        cpb.CreateConnectionRequest(
            connection=cpb.Connection(
                organization_id=organization_id,
                platform=cpb.PLATFORM_SLACK,
                platform_user_id=platform_user_id,
                platform_workspace_id="T0001",
                display_name=display_name,
                permissions_granted=permissions,
            )
        ),
        metadata=metadata,
    )
    return response.connection
