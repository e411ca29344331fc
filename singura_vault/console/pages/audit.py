"""The audit page: a chain's events (filtered, paged with the API's tokens), its latest
signed checkpoint, and "verify now", whose result the session keeps for the page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from singura_vault.console import overview
from singura_vault.console.fan_out import organizations
from singura_vault.console.forms import enum_param, form_text, utc
from singura_vault.console.rendering import HTTP_STATUS, options
from singura_vault.console.vault_client import Operator, VaultCallError
from singura_vault.console.web import Pages
from singura_vault.proto.singura.vault.v1 import audit_pb2

# "system" in ?org= names the system audit trail (organization_id "" in the API).
SYSTEM_CHAIN = "system"
AUDIT_PAGE_SIZE = 50


class AuditPages(Pages):
    """GET /audit, POST /audit/verify."""

    def routes(self) -> list[Route]:
        return [
            Route("/audit", self.audit),
            Route("/audit/verify", self.verify_chain, methods=["POST"]),
        ]

    async def audit(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        query = request.query_params
        orgs = await organizations(operator, session)
        chain = query.get("org", "") or (
            session.organization_id or (orgs[0].id if orgs else SYSTEM_CHAIN)
        )
        organization_id = "" if chain == SYSTEM_CHAIN else chain
        audit_filter = _audit_filter(query)
        error: VaultCallError | None = None
        events: list[audit_pb2.AuditEvent] = []
        next_token = ""
        try:
            page = await operator.call(
                "audit",
                "ListAuditEvents",
                audit_pb2.ListAuditEventsRequest(
                    organization_id=organization_id,
                    filter=audit_filter,
                    page_size=AUDIT_PAGE_SIZE,
                    page_token=query.get("page_token", ""),
                ),
            )
            events, next_token = list(page.events), page.next_page_token
        except VaultCallError as exc:
            if exc.code == "UNAUTHENTICATED":
                raise
            error = exc
        checkpoint, checkpoint_error = await _latest_checkpoint(operator, organization_id)
        kept = {
            k: query.get(k, "")
            for k in ("action", "resource_type", "resource_id", "actor", "outcome", "start", "end")
        }
        next_link = (
            "/audit?" + urlencode({"org": chain, **kept, "page_token": next_token})
            if next_token
            else ""
        )
        first_link = (
            "/audit?" + urlencode({"org": chain, **kept}) if query.get("page_token") else ""
        )
        return self.page(
            request,
            "audit.html",
            session,
            status_code=HTTP_STATUS.get(error.code, 502) if error else 200,
            nav="audit",
            orgs=orgs,
            chain=chain,
            system_chain=SYSTEM_CHAIN,
            filters=kept,
            outcome_options=options(audit_pb2.AuditOutcome.items(), "AUDIT_OUTCOME_"),
            events=events,
            error=error,
            next_link=next_link,
            first_link=first_link,
            verification=session.verifications.get(chain),
            checkpoint=checkpoint,
            checkpoint_error=checkpoint_error,
        )

    async def verify_chain(self, request: Request) -> Response:
        session, form = await self.posted(request)
        chain = form_text(form, "org") or SYSTEM_CHAIN
        organization_id = "" if chain == SYSTEM_CHAIN else chain
        result = await self.operator(session).call(
            "audit",
            "VerifyAuditChain",
            audit_pb2.VerifyAuditChainRequest(organization_id=organization_id),
        )
        session.verifications[chain] = {
            "ok": result.ok,
            "event_count": result.event_count,
            "head_hash": result.head_hash,
            "first_bad_event_id": result.first_bad_event_id,
            "problem": result.problem,
            "pruned_count": result.pruned_count,
            "pending_event_count": result.pending_event_count,
            "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        return RedirectResponse("/audit?" + urlencode({"org": chain}), status_code=303)


def _audit_filter(query: Any) -> audit_pb2.AuditFilter:
    outcome = enum_param(
        query.get("outcome", ""), audit_pb2.AuditOutcome.items(), "AUDIT_OUTCOME_", "outcome"
    )
    result = audit_pb2.AuditFilter(
        action=query.get("action", "").strip(),
        resource_type=query.get("resource_type", "").strip(),
        resource_id=query.get("resource_id", "").strip(),
        actor=query.get("actor", "").strip(),
        outcome=outcome,  # type: ignore[arg-type]  # a checked enum number
    )
    start = utc(query.get("start", ""), "start")
    end = utc(query.get("end", ""), "end")
    if start is not None:
        result.start_time.CopyFrom(overview.timestamp(start))
    if end is not None:
        result.end_time.CopyFrom(overview.timestamp(end))
    return result


async def _latest_checkpoint(
    operator: Operator, organization_id: str
) -> tuple[audit_pb2.AuditCheckpoint | None, VaultCallError | None]:
    latest: audit_pb2.AuditCheckpoint | None = None
    try:
        async for batch in operator.stream(
            "audit",
            "ExportAuditCheckpoints",
            audit_pb2.ExportAuditCheckpointsRequest(organization_id=organization_id),
        ):
            if batch.checkpoints:
                latest = batch.checkpoints[-1]
    except VaultCallError as exc:
        return None, exc
    return latest, None
