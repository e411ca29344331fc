"""The organizations pages: the list (an admin key's, with each one's ACTIVE
connections against its plan) and one organization's detail."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from singura_vault.console.fan_out import PAGE_SIZE, organizations, per_organization
from singura_vault.console.vault_client import Operator
from singura_vault.console.web import Pages
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb


class OrganizationPages(Pages):
    """GET /orgs, GET /orgs/{organization_id}."""

    def routes(self) -> list[Route]:
        return [
            Route("/orgs", self.org_list),
            Route("/orgs/{organization_id}", self.org_detail),
        ]

    async def org_list(self, request: Request) -> Response:
        session = self.session(request)
        if not session.is_admin:
            return RedirectResponse(f"/orgs/{session.organization_id}", status_code=303)
        operator = self.operator(session)
        orgs = await organizations(operator, session)
        usage = await per_organization(
            [(o.id, o.name) for o in orgs], lambda org: _active(operator, org)
        )
        return self.page(
            request,
            "orgs.html",
            session,
            nav="orgs",
            rows=list(zip(orgs, usage, strict=True)),
        )

    async def org_detail(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        organization_id = request.path_params["organization_id"]
        got = await operator.call(
            "organizations",
            "GetOrganization",
            opb.GetOrganizationRequest(organization_id=organization_id),
        )
        (usage,) = await per_organization(
            [(organization_id, got.organization.name)],
            lambda org: _active(operator, org),
        )
        return self.page(
            request, "org.html", session, nav="orgs", org=got.organization, usage=usage
        )


async def _active(operator: Operator, organization_id: str) -> tuple[list[Any], bool]:
    """The organization's ACTIVE connections (what its plan limits), as a count."""
    count = 0
    token = ""
    while True:
        page = await operator.call(
            "connections",
            "ListConnections",
            cpb.ListConnectionsRequest(
                organization_id=organization_id,
                status=cpb.CONNECTION_STATUS_ACTIVE,
                page_size=PAGE_SIZE,
                page_token=token,
            ),
        )
        count += len(page.connections)
        token = page.next_page_token
        if not token:
            return [count], False
