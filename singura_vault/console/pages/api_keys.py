"""The API keys page: an organization's keys, creating one (its secret shown once, on
the one page that shows a secret) and revoking one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from singura_vault.console import overview
from singura_vault.console.fan_out import organizations
from singura_vault.console.forms import BadInputError, enum_param, form_text
from singura_vault.console.rendering import options
from singura_vault.console.web import Pages
from singura_vault.logs import get_logger
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb

log = get_logger(__name__)


class ApiKeyPages(Pages):
    """GET /api-keys, POST /api-keys, POST /api-keys/revoke."""

    def routes(self) -> list[Route]:
        return [
            Route("/api-keys", self.api_keys, methods=["GET"]),
            Route("/api-keys", self.create_api_key, methods=["POST"]),
            Route("/api-keys/revoke", self.revoke_api_key, methods=["POST"]),
        ]

    async def api_keys(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        org = request.query_params.get("org", "") or (session.organization_id or "")
        orgs = await organizations(operator, session)
        listed = await operator.call(
            "access",
            "ListApiKeys",
            apb.ListApiKeysRequest(
                organization_id=org,
                page_size=100,
                page_token=request.query_params.get("page_token", ""),
            ),
        )
        next_link = (
            "/api-keys?" + urlencode({"org": org, "page_token": listed.next_page_token})
            if listed.next_page_token
            else ""
        )
        return self.page(
            request,
            "api_keys.html",
            session,
            nav="api-keys",
            org=org,
            orgs=orgs,
            keys=list(listed.api_keys),
            next_link=next_link,
            role_options=options(apb.ApiKeyRole.items(), "API_KEY_ROLE_"),
        )

    async def create_api_key(self, request: Request) -> Response:
        session, form = await self.posted(request)
        org = form_text(form, "org")
        if not org:
            raise BadInputError("choose the organization the new key is confined to")
        roles = [
            enum_param(r, apb.ApiKeyRole.items(), "API_KEY_ROLE_", "role")
            for r in form.getlist("roles")
            if isinstance(r, str)
        ]
        create = apb.CreateApiKeyRequest(
            organization_id=org,
            roles=roles,  # type: ignore[arg-type]  # checked enum numbers
            name=form_text(form, "name"),
        )
        expires = form_text(form, "expires")
        if expires:
            try:
                day = datetime.fromisoformat(expires).replace(tzinfo=UTC)
            except ValueError:
                raise BadInputError(f"expiry {expires!r} is not a date like 2026-12-31") from None
            create.expire_time.CopyFrom(overview.timestamp(day + timedelta(days=1)))
        created = await self.operator(session).call("access", "CreateApiKey", create)
        log.info(
            "console_api_key_created",
            key_id=created.api_key.key_id,
            organization_id=created.api_key.organization_id,
        )
        # The one page that shows a secret: the new key, once (no-store, like every page).
        return self.page(
            request,
            "api_key_created.html",
            session,
            nav="api-keys",
            key=created.api_key,
            secret=created.secret,
        )

    async def revoke_api_key(self, request: Request) -> Response:
        session, form = await self.posted(request)
        key_id = form_text(form, "key_id")
        revoked = await self.operator(session).call(
            "access", "RevokeApiKey", apb.RevokeApiKeyRequest(key_id=key_id)
        )
        session.notices.append(f"API key {revoked.api_key.key_id} is revoked.")
        return RedirectResponse(
            "/api-keys?" + urlencode({"org": form_text(form, "org")}), status_code=303
        )
