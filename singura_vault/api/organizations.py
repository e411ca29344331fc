"""gRPC servicer for OrganizationService: protobuf <-> domain mapping only."""

from __future__ import annotations

from typing import Any

import grpc

from singura_vault.api._convert import (
    enum_from_proto,
    enum_to_proto_name,
    from_struct,
    struct,
    timestamp,
)
from singura_vault.domain.organizations import Organization, Plan
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as pb
from singura_vault.proto.singura.vault.v1 import organizations_pb2_grpc as pb_grpc
from singura_vault.service.organizations import OrganizationInput, OrganizationService
from singura_vault.service.validation import etag_for

Context = grpc.aio.ServicerContext[Any, Any]


def organization_to_proto(org: Organization) -> pb.Organization:
    return pb.Organization(
        id=str(org.id),
        name=org.name,
        slug=org.slug,
        domain=org.domain,
        plan=pb.Plan.Value(enum_to_proto_name(org.plan, "PLAN_")),
        settings=struct(org.settings),
        connection_limit=org.connection_limit,
        create_time=timestamp(org.created_at),
        update_time=timestamp(org.updated_at),
        etag=etag_for(org.version),
    )


def _input(message: pb.Organization) -> OrganizationInput:
    return OrganizationInput(
        name=message.name,
        slug=message.slug,
        domain=message.domain,
        plan=enum_from_proto(Plan, pb.Plan.Name, message.plan, "PLAN_", "organization.plan"),
        settings=from_struct(message.settings),
    )


class OrganizationServicer(pb_grpc.OrganizationServiceServicer):
    def __init__(self, service: OrganizationService) -> None:
        self._service = service

    async def CreateOrganization(
        self, request: pb.CreateOrganizationRequest, context: Context
    ) -> pb.CreateOrganizationResponse:
        org = await self._service.create(_input(request.organization), request.request_id)
        return pb.CreateOrganizationResponse(organization=organization_to_proto(org))

    async def GetOrganization(
        self, request: pb.GetOrganizationRequest, context: Context
    ) -> pb.GetOrganizationResponse:
        org = await self._service.get(request.organization_id)
        return pb.GetOrganizationResponse(organization=organization_to_proto(org))

    async def ListOrganizations(
        self, request: pb.ListOrganizationsRequest, context: Context
    ) -> pb.ListOrganizationsResponse:
        page = await self._service.list(request.page_size, request.page_token)
        return pb.ListOrganizationsResponse(
            organizations=[organization_to_proto(o) for o in page.organizations],
            next_page_token=page.next_page_token,
        )

    async def UpdateOrganization(
        self, request: pb.UpdateOrganizationRequest, context: Context
    ) -> pb.UpdateOrganizationResponse:
        org = await self._service.update(
            request.organization.id,
            _input(request.organization),
            list(request.update_mask.paths),
            request.etag,
        )
        return pb.UpdateOrganizationResponse(organization=organization_to_proto(org))

    async def DeleteOrganization(
        self, request: pb.DeleteOrganizationRequest, context: Context
    ) -> pb.DeleteOrganizationResponse:
        await self._service.delete(request.organization_id, request.etag)
        return pb.DeleteOrganizationResponse()
