"""Signing in and out.

The sign-in form has no session yet, so it carries a double-submit token instead of a
session's CSRF token: a SameSite=Strict cookie (``SIGNIN_COOKIE``, path /signin) that
must match the form field. Signing in asks the vault what the key is (admin, or
confined to one organization) and creates a session; the key itself is never logged
(``console_signed_in`` names its key id and the session's digest).
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from singura_vault.console.forms import FORM_LIMITS, BadInputError, form_text
from singura_vault.console.sessions import Session, session_digest
from singura_vault.console.vault_client import Operator, OperatorKey, VaultCallError
from singura_vault.console.web import SESSION_COOKIE, CsrfError, Pages
from singura_vault.logs import get_logger
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb

log = get_logger(__name__)

SIGNIN_COOKIE = "sv_signin"


class SignInPages(Pages):
    """GET /signin, POST /signin, POST /signout."""

    def routes(self) -> list[Route]:
        return [
            Route("/signin", self.signin_form, methods=["GET"]),
            Route("/signin", self.signin, methods=["POST"]),
            Route("/signout", self.signout, methods=["POST"]),
        ]

    async def signin_form(self, request: Request) -> Response:
        token = secrets.token_urlsafe(32)
        why = request.query_params.get("why", "")
        message = {
            "expired": "Your session ended (idle or too long); sign in again.",
            "refused": "The vault no longer accepts the key this session used; sign in again.",
            "signed_out": "You are signed out.",
        }.get(why, "")
        response = self.page(
            request, "signin.html", None, signin_token=token, message=message, entered_org=""
        )
        self.set_cookie(request, response, SIGNIN_COOKIE, token, path="/signin")
        return response

    async def signin(self, request: Request) -> Response:
        form = await request.form(**FORM_LIMITS)
        cookie = request.cookies.get(SIGNIN_COOKIE, "")
        token = form.get("csrf_token")
        if (
            not cookie
            or not isinstance(token, str)
            or not secrets.compare_digest(cookie.encode(), token.encode())
        ):
            raise CsrfError
        key_text = form_text(form, "api_key")
        organization_id = form_text(form, "organization_id")
        if not key_text:
            return self._signin_again(request, "Enter an API key.", organization_id)
        key = OperatorKey(key_text)
        operator = self.vault.as_operator(key)
        try:
            session = await self._who(operator, key, organization_id)
        except VaultCallError as exc:
            return self._signin_again(request, "", organization_id, error=exc)
        except BadInputError as exc:
            return self._signin_again(request, str(exc), organization_id)
        log.info(
            "console_signed_in",
            session=session_digest(session.id),
            key_id=key.key_id,
            admin=session.is_admin,
            organization_id=session.organization_id,
        )
        response = RedirectResponse("/connections", status_code=303)
        self.set_cookie(request, response, SESSION_COOKIE, session.id)
        response.delete_cookie(SIGNIN_COOKIE, path="/signin")
        return response

    async def _who(self, operator: Operator, key: OperatorKey, organization_id: str) -> Session:
        """Ask the vault what the key is: an admin key may list organizations; an
        organization key may not, and may read its own organization only."""
        try:
            await operator.call(
                "organizations", "ListOrganizations", opb.ListOrganizationsRequest(page_size=1)
            )
        except VaultCallError as exc:
            if exc.code != "PERMISSION_DENIED":
                raise
        else:
            return self.sessions.create(key, is_admin=True, organization_id=None)
        if not organization_id:
            raise BadInputError(
                "This is an organization key: enter the id of its organization as well."
            )
        got = await operator.call(
            "organizations",
            "GetOrganization",
            opb.GetOrganizationRequest(organization_id=organization_id),
        )
        return self.sessions.create(
            key,
            is_admin=False,
            organization_id=got.organization.id,
            organization_name=got.organization.name,
        )

    def _signin_again(
        self,
        request: Request,
        message: str,
        organization_id: str,
        *,
        error: VaultCallError | None = None,
    ) -> Response:
        token = secrets.token_urlsafe(32)
        response = self.page(
            request,
            "signin.html",
            None,
            status_code=401,
            signin_token=token,
            message=message,
            error=error,
            entered_org=organization_id,
        )
        self.set_cookie(request, response, SIGNIN_COOKIE, token, path="/signin")
        return response

    async def signout(self, request: Request) -> Response:
        session, _ = await self.posted(request)
        self.sessions.end(session.id)
        response = RedirectResponse("/signin?why=signed_out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
