"""The console application: a Starlette app over ``VaultClient``, put together from the
pages of each area (pages/), the error pages and the security headers.

Every page asks the vault with the signed-in operator's key and shows what comes back;
nothing is decided here that the API does not decide (an organization key that names
another organization gets the API's PERMISSION_DENIED, shown with its reason and
request id). State-changing requests are POSTs that carry the session's CSRF token
(web.py); the sign-in form, which has no session yet, carries a double-submit token
instead (pages/signin.py).

Routes:
    GET  /signin, POST /signin, POST /signout          pages/signin.py
    GET  /connections            connections across organizations, attention first
    GET  /expiring               credentials expiring within 7 or 30 days, by organization
                                                       (both pages/connections.py)
    GET  /audit, POST /audit/verify                     pages/audit.py
    GET  /keys, POST /keys/rewrap, GET /keys/rewrap/{job_id} (JSON, for polling)
                                                       pages/keys.py
    GET  /api-keys, POST /api-keys, POST /api-keys/revoke   pages/api_keys.py
    GET  /orgs, GET /orgs/{organization_id}             pages/organizations.py
    GET  /healthz                the console process itself (no vault call)
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from singura_vault.console.forms import BadInputError
from singura_vault.console.pages.api_keys import ApiKeyPages
from singura_vault.console.pages.audit import AuditPages
from singura_vault.console.pages.connections import ConnectionPages
from singura_vault.console.pages.keys import KeyPages
from singura_vault.console.pages.organizations import OrganizationPages
from singura_vault.console.pages.signin import SignInPages
from singura_vault.console.rendering import HERE, HTTP_STATUS, environment
from singura_vault.console.security import SecurityHeaders
from singura_vault.console.sessions import Session, SessionStore
from singura_vault.console.vault_client import VaultCallError, VaultClient
from singura_vault.console.web import SESSION_COOKIE, CsrfError, NotSignedInError, Pages
from singura_vault.errors import InvariantBroken


class ErrorPages(Pages):
    """What a request that failed is answered with: the exception handlers."""

    async def on_signin_required(self, request: Request, exc: Exception) -> Response:
        why = exc.why if isinstance(exc, NotSignedInError) else ""
        response = RedirectResponse("/signin" + (f"?why={why}" if why else ""), status_code=303)
        if why:
            response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def on_csrf_refused(self, request: Request, _exc: Exception) -> Response:
        return self.page(
            request,
            "message.html",
            getattr(request.state, "session", None),
            status_code=403,
            title="Refused: the form is missing its token",
            message=(
                "This request changes something and did not carry the console's form "
                "token (CSRF). Reload the page and submit the form again."
            ),
        )

    async def on_bad_input(self, request: Request, exc: Exception) -> Response:
        return self.page(
            request,
            "message.html",
            getattr(request.state, "session", None),
            status_code=400,
            title="The console cannot use that value",
            message=str(exc),
        )

    async def on_vault_error(self, request: Request, exc: Exception) -> Response:
        if not isinstance(exc, VaultCallError):
            raise InvariantBroken("on_vault_error: exc is not a VaultCallError")
        session: Session | None = getattr(request.state, "session", None)
        if exc.code == "UNAUTHENTICATED" and session is not None:
            self.sessions.end(session.id, reason="refused_by_vault")
            response = RedirectResponse("/signin?why=refused", status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response
        return self.page(
            request,
            "message.html",
            session,
            status_code=HTTP_STATUS.get(exc.code, 502),
            title="The vault refused or failed this request",
            message="",
            error=exc,
        )

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):
            raise InvariantBroken("on_http_error: exc is not a HTTPException")
        return self.page(
            request,
            "message.html",
            getattr(request.state, "session", None),
            status_code=exc.status_code,
            title=f"{exc.status_code}",
            message=str(exc.detail),
        )


async def healthz(_request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(vault: VaultClient, *, sessions: SessionStore | None = None) -> Starlette:
    """The console application over ``vault`` (sessions: a store with its own clock
    and timeouts; a default one when None)."""
    store = sessions if sessions is not None else SessionStore()
    templates = Jinja2Templates(env=environment())
    areas = (SignInPages, ConnectionPages, AuditPages, KeyPages, ApiKeyPages, OrganizationPages)
    routes: list[BaseRoute] = [
        route for area in areas for route in area(vault, store, templates).routes()
    ]
    routes += [
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    errors = ErrorPages(vault, store, templates)
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            NotSignedInError: errors.on_signin_required,
            CsrfError: errors.on_csrf_refused,
            BadInputError: errors.on_bad_input,
            VaultCallError: errors.on_vault_error,
            HTTPException: errors.on_http_error,
        },
    )
