"""The connections page (attention first, across organizations) and the expiring
credentials page (within 7 or 30 days, by organization)."""

from __future__ import annotations

from typing import Any

from google.protobuf.duration_pb2 import Duration
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from singura_vault.console import overview
from singura_vault.console.fan_out import (
    PAGE_SIZE,
    OrgResult,
    organizations,
    per_organization,
    targets,
)
from singura_vault.console.forms import BadInputError, enum_param
from singura_vault.console.rendering import options
from singura_vault.console.vault_client import Operator
from singura_vault.console.web import Pages
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb


class ConnectionPages(Pages):
    """GET / (to /connections), GET /connections, GET /expiring."""

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home),
            Route("/connections", self.connections),
            Route("/expiring", self.expiring),
        ]

    async def home(self, request: Request) -> Response:
        self.session(request)
        return RedirectResponse("/connections", status_code=303)

    async def connections(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        query = request.query_params
        status = enum_param(
            query.get("status", ""), cpb.ConnectionStatus.items(), "CONNECTION_STATUS_", "status"
        )
        platform = enum_param(
            query.get("platform", ""), cpb.Platform.items(), "PLATFORM_", "platform"
        )
        drift = enum_param(
            query.get("drift", ""), cpb.ScopeDrift.items(), "SCOPE_DRIFT_", "scope drift"
        )
        failing = query.get("failing", "") == "1"
        orgs = await organizations(operator, session)
        covered = targets(orgs, query.get("org", ""))

        async def fetch(organization_id: str) -> tuple[list[Any], bool]:
            page = await operator.call(
                "connections",
                "ListConnections",
                cpb.ListConnectionsRequest(
                    organization_id=organization_id,
                    status=status,  # type: ignore[arg-type]  # a checked enum number
                    platform=platform,  # type: ignore[arg-type]
                    scope_drift=drift,  # type: ignore[arg-type]
                    page_size=PAGE_SIZE,
                ),
            )
            return list(page.connections), bool(page.next_page_token)

        results = await per_organization(covered, fetch)
        rows = overview.attention_first(
            [
                overview.connection_row(r.organization_id, r.organization_name, c)
                for r in results
                for c in r.items
            ]
        )
        if failing:
            rows = [r for r in rows if r.failing]
        return self.page(
            request,
            "connections.html",
            session,
            nav="connections",
            rows=rows,
            failures=[r for r in results if r.error is not None],
            truncated=[r for r in results if r.truncated],
            orgs=orgs,
            filters={
                "org": query.get("org", ""),
                "status": query.get("status", ""),
                "platform": query.get("platform", ""),
                "drift": query.get("drift", ""),
                "failing": failing,
            },
            status_options=options(cpb.ConnectionStatus.items(), "CONNECTION_STATUS_"),
            platform_options=options(cpb.Platform.items(), "PLATFORM_"),
            drift_options=options(cpb.ScopeDrift.items(), "SCOPE_DRIFT_"),
            failing_count=sum(1 for r in rows if r.failing),
        )

    async def expiring(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        within = request.query_params.get("within", "7")
        if within not in ("7", "30"):
            raise BadInputError("within is 7 or 30 (days)")
        days = int(within)
        orgs = await organizations(operator, session)
        covered = targets(orgs, request.query_params.get("org", ""))

        async def fetch(organization_id: str) -> tuple[list[Any], bool]:
            page = await operator.call(
                "credentials",
                "ListExpiringCredentials",
                crpb.ListExpiringCredentialsRequest(
                    organization_id=organization_id,
                    within=Duration(seconds=days * 86400),
                    page_size=PAGE_SIZE,
                ),
            )
            return list(page.credentials), bool(page.next_page_token)

        results = await per_organization(covered, fetch)
        names = await _connection_names(operator, [r for r in results if r.items])
        return self.page(
            request,
            "expiring.html",
            session,
            nav="expiring",
            within=days,
            results=results,
            connection_names=names,
            total=sum(len(r.items) for r in results),
        )


async def _connection_names(operator: Operator, results: list[OrgResult]) -> dict[str, str]:
    async def fetch(organization_id: str) -> tuple[list[Any], bool]:
        page = await operator.call(
            "connections",
            "ListConnections",
            cpb.ListConnectionsRequest(organization_id=organization_id, page_size=PAGE_SIZE),
        )
        return list(page.connections), False

    found = await per_organization(
        [(r.organization_id, r.organization_name) for r in results], fetch
    )
    return {c.id: c.display_name for r in found for c in r.items}
