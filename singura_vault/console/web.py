"""What every page handler shares: who is signed in, the operator's vault client, and
rendering a page.

``Pages`` is the base of each area's handlers (pages/): ``session`` finds the request's
live session from its cookie (else ``NotSignedInError``: to the sign-in page),
``posted`` reads a state-changing request's form and refuses it without the session's
CSRF token (``CsrfError``: a 403 page), ``operator`` is the vault client acting with the
session's key, and ``page`` renders a template with the session's CSRF token and
notices. The session cookie is HttpOnly and SameSite=Strict, Secure over HTTPS.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from singura_vault.console.forms import FORM_LIMITS
from singura_vault.console.sessions import Session, SessionStore
from singura_vault.console.vault_client import Operator, VaultClient
from singura_vault.logs import get_logger

log = get_logger(__name__)

SESSION_COOKIE = "sv_console"


class NotSignedInError(Exception):
    """No live session: to the sign-in page (saying why, when we know)."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


class CsrfError(Exception):
    """A state-changing request without the session's CSRF token."""


class Pages:
    """Handlers over one VaultClient, one SessionStore and one set of templates."""

    def __init__(
        self, vault: VaultClient, sessions: SessionStore, templates: Jinja2Templates
    ) -> None:
        self.vault = vault
        self.sessions = sessions
        self.templates = templates

    def session(self, request: Request) -> Session:
        session_id = request.cookies.get(SESSION_COOKIE, "")
        session = self.sessions.get(session_id) if session_id else None
        if session is None:
            raise NotSignedInError("expired" if session_id else "")
        request.state.session = session
        return session

    async def posted(self, request: Request) -> tuple[Session, FormData]:
        """The session and form of a state-changing request, whose CSRF token matches."""
        session = self.session(request)
        form = await request.form(**FORM_LIMITS)
        token = form.get("csrf_token")
        if not isinstance(token, str) or not session.csrf_ok(token):
            log.info("console_csrf_refused", path=request.url.path)
            raise CsrfError
        return session, form

    def operator(self, session: Session) -> Operator:
        return self.vault.as_operator(session.key)

    def page(
        self,
        request: Request,
        template: str,
        session: Session | None,
        *,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        context.setdefault("error", None)
        context.setdefault("nav", "")
        return self.templates.TemplateResponse(
            request,
            template,
            {
                "session": session,
                "csrf_token": session.csrf_token if session else "",
                "notices": session.take_notices() if session else [],
                **context,
            },
            status_code=status_code,
        )

    @staticmethod
    def set_cookie(
        request: Request, response: Response, name: str, value: str, *, path: str = "/"
    ) -> None:
        response.set_cookie(
            name,
            value,
            path=path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
