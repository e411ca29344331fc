"""The console's pages: a Starlette application over ``VaultClient``.

Every page asks the vault with the signed-in operator's key and shows what comes back;
nothing is decided here that the API does not decide (an organization key that names
another organization gets the API's PERMISSION_DENIED, shown with its reason and
request id). State-changing requests are POSTs that carry the session's CSRF token; the
sign-in form, which has no session yet, carries a double-submit token instead (a
SameSite=Strict cookie that must match the form field).

Routes:
    GET  /signin, POST /signin, POST /signout
    GET  /connections            connections across organizations, attention first
    GET  /expiring               credentials expiring within 7 or 30 days, by organization
    GET  /audit, POST /audit/verify
    GET  /keys, POST /keys/rewrap, GET /keys/rewrap/{job_id} (JSON, for polling)
    GET  /api-keys, POST /api-keys, POST /api-keys/revoke
    GET  /orgs, GET /orgs/{organization_id}
    GET  /healthz                the console process itself (no vault call)
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from singura_vault.console import overview
from singura_vault.console.security import SecurityHeaders
from singura_vault.console.sessions import Session, SessionStore, session_digest
from singura_vault.console.vault_client import (
    Operator,
    OperatorKey,
    VaultCallError,
    VaultClient,
)
from singura_vault.errors import InvariantBroken
from singura_vault.logs import get_logger
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import audit_pb2
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb

log = get_logger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "sv_console"
SIGNIN_COOKIE = "sv_signin"
# "system" in ?org= names the system audit trail (organization_id "" in the API).
SYSTEM_CHAIN = "system"
# A page lists at most this many organizations and this many rows per organization;
# beyond that it says so rather than paging the vault without end.
MAX_ORGANIZATIONS = 1000
PAGE_SIZE = 1000
AUDIT_PAGE_SIZE = 50
# How many vault calls one page makes at once (one per organization).
FAN_OUT = 8
FORM_LIMITS: dict[str, int] = {"max_files": 0, "max_fields": 50, "max_part_size": 64 * 1024}
# gRPC codes and the HTTP status of the page that shows them.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
}


class NotSignedInError(Exception):
    """No live session: to the sign-in page (saying why, when we know)."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


class CsrfError(Exception):
    """A state-changing request without the session's CSRF token."""


class BadInputError(Exception):
    """A query or form value the console cannot use; shown on a 400 page."""


@dataclass(frozen=True)
class OrgResult:
    """One organization's part of a page: its rows, or the vault's refusal."""

    organization_id: str
    organization_name: str
    items: list[Any]
    error: VaultCallError | None = None
    truncated: bool = False


def _enum_filter(values: Iterable[tuple[str, int]], prefix: str) -> Callable[[int], str]:
    names = dict((number, name) for name, number in values)

    def label(value: int) -> str:
        return overview.enum_label(names.get(value, str(value)), prefix)

    return label


def _options(values: Iterable[tuple[str, int]], prefix: str) -> list[tuple[str, str]]:
    """(query value, label) for a <select>, without the UNSPECIFIED zero."""
    return [
        (name.removeprefix(prefix).lower(), overview.enum_label(name, prefix))
        for name, number in values
        if number != 0
    ]


def _enum_param(value: str, values: Iterable[tuple[str, int]], prefix: str, what: str) -> int:
    """A ?status=error style value as the enum's number; "" is 0 (any)."""
    if not value:
        return 0
    for name, number in values:
        if number != 0 and name == prefix + value.upper():
            return number
    raise BadInputError(f"{what} {value!r} is not one the console knows")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=overview.when,
        iso=overview.iso,
        connection_status=_enum_filter(cpb.ConnectionStatus.items(), "CONNECTION_STATUS_"),
        platform=_enum_filter(cpb.Platform.items(), "PLATFORM_"),
        credential_type=_enum_filter(crpb.CredentialType.items(), "CREDENTIAL_TYPE_"),
        credential_state=_enum_filter(crpb.CredentialState.items(), "CREDENTIAL_STATE_"),
        outcome=_enum_filter(audit_pb2.AuditOutcome.items(), "AUDIT_OUTCOME_"),
        rewrap_state=_enum_filter(kpb.RewrapJobState.items(), "REWRAP_JOB_STATE_"),
        role=_enum_filter(apb.ApiKeyRole.items(), "API_KEY_ROLE_"),
        plan=_enum_filter(opb.Plan.items(), "PLAN_"),
        struct_json=lambda s: json.dumps(json_format.MessageToDict(s), indent=2, sort_keys=True),
    )
    return env


def _utc(value: str, what: str) -> datetime | None:
    """A <input type=datetime-local> value, read as UTC; "" is None."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadInputError(f"{what} {value!r} is not a time like 2026-01-31T09:30") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _form_text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


class Console:
    """The pages, over one VaultClient and one SessionStore."""

    def __init__(self, vault: VaultClient, sessions: SessionStore) -> None:
        self.vault = vault
        self.sessions = sessions
        self.templates = Jinja2Templates(env=_environment())

    # -- sessions, forms, rendering -------------------------------------------------

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

    async def organizations(self, operator: Operator, session: Session) -> list[opb.Organization]:
        """Every organization an admin key sees (up to MAX_ORGANIZATIONS); an
        organization key's own."""
        if not session.is_admin:
            if session.organization_id is None:
                raise InvariantBroken("organizations: session.organization_id is None")
            got = await operator.call(
                "organizations",
                "GetOrganization",
                opb.GetOrganizationRequest(organization_id=session.organization_id),
            )
            return [got.organization]
        found: list[opb.Organization] = []
        token = ""
        while len(found) < MAX_ORGANIZATIONS:
            page = await operator.call(
                "organizations",
                "ListOrganizations",
                opb.ListOrganizationsRequest(page_size=PAGE_SIZE, page_token=token),
            )
            found.extend(page.organizations)
            token = page.next_page_token
            if not token:
                break
        return found[:MAX_ORGANIZATIONS]

    async def per_organization(
        self,
        targets: list[tuple[str, str]],
        fetch: Callable[[str], Awaitable[tuple[list[Any], bool]]],
    ) -> list[OrgResult]:
        """fetch(organization_id) for each (id, name), FAN_OUT at a time; a refusal is
        kept with its organization instead of failing the page."""
        gate = asyncio.Semaphore(FAN_OUT)

        async def one(organization_id: str, name: str) -> OrgResult:
            async with gate:
                try:
                    items, truncated = await fetch(organization_id)
                except VaultCallError as exc:
                    if exc.code == "UNAUTHENTICATED":
                        raise
                    return OrgResult(organization_id, name, [], exc)
                return OrgResult(organization_id, name, items, None, truncated)

        return list(await asyncio.gather(*(one(i, n) for i, n in targets)))

    def targets(self, orgs: list[opb.Organization], wanted: str) -> list[tuple[str, str]]:
        """The organizations a page covers: all the key sees, or the one asked for
        (which the API may refuse: that is its decision, not the console's)."""
        names = {o.id: o.name for o in orgs}
        if wanted:
            return [(wanted, names.get(wanted, wanted))]
        return [(o.id, o.name) for o in orgs]

    # -- sign-in and sign-out ------------------------------------------------------

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
        self._cookie(request, response, SIGNIN_COOKIE, token, path="/signin")
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
        key_text = _form_text(form, "api_key")
        organization_id = _form_text(form, "organization_id")
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
        self._cookie(request, response, SESSION_COOKIE, session.id)
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
        self._cookie(request, response, SIGNIN_COOKIE, token, path="/signin")
        return response

    async def signout(self, request: Request) -> Response:
        session, _ = await self.posted(request)
        self.sessions.end(session.id)
        response = RedirectResponse("/signin?why=signed_out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @staticmethod
    def _cookie(
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

    # -- pages -----------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        self.session(request)
        return RedirectResponse("/connections", status_code=303)

    async def connections(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        query = request.query_params
        status = _enum_param(
            query.get("status", ""), cpb.ConnectionStatus.items(), "CONNECTION_STATUS_", "status"
        )
        platform = _enum_param(
            query.get("platform", ""), cpb.Platform.items(), "PLATFORM_", "platform"
        )
        drift = _enum_param(
            query.get("drift", ""), cpb.ScopeDrift.items(), "SCOPE_DRIFT_", "scope drift"
        )
        failing = query.get("failing", "") == "1"
        orgs = await self.organizations(operator, session)
        targets = self.targets(orgs, query.get("org", ""))

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

        results = await self.per_organization(targets, fetch)
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
            status_options=_options(cpb.ConnectionStatus.items(), "CONNECTION_STATUS_"),
            platform_options=_options(cpb.Platform.items(), "PLATFORM_"),
            drift_options=_options(cpb.ScopeDrift.items(), "SCOPE_DRIFT_"),
            failing_count=sum(1 for r in rows if r.failing),
        )

    async def expiring(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        within = request.query_params.get("within", "7")
        if within not in ("7", "30"):
            raise BadInputError("within is 7 or 30 (days)")
        days = int(within)
        orgs = await self.organizations(operator, session)
        targets = self.targets(orgs, request.query_params.get("org", ""))

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

        results = await self.per_organization(targets, fetch)
        names = await self._connection_names(operator, [r for r in results if r.items])
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

    async def _connection_names(
        self, operator: Operator, results: list[OrgResult]
    ) -> dict[str, str]:
        async def fetch(organization_id: str) -> tuple[list[Any], bool]:
            page = await operator.call(
                "connections",
                "ListConnections",
                cpb.ListConnectionsRequest(organization_id=organization_id, page_size=PAGE_SIZE),
            )
            return list(page.connections), False

        found = await self.per_organization(
            [(r.organization_id, r.organization_name) for r in results], fetch
        )
        return {c.id: c.display_name for r in found for c in r.items}

    def _audit_filter(self, query: Any) -> audit_pb2.AuditFilter:
        outcome = _enum_param(
            query.get("outcome", ""), audit_pb2.AuditOutcome.items(), "AUDIT_OUTCOME_", "outcome"
        )
        result = audit_pb2.AuditFilter(
            action=query.get("action", "").strip(),
            resource_type=query.get("resource_type", "").strip(),
            resource_id=query.get("resource_id", "").strip(),
            actor=query.get("actor", "").strip(),
            outcome=outcome,  # type: ignore[arg-type]  # a checked enum number
        )
        start = _utc(query.get("start", ""), "start")
        end = _utc(query.get("end", ""), "end")
        if start is not None:
            result.start_time.CopyFrom(overview.timestamp(start))
        if end is not None:
            result.end_time.CopyFrom(overview.timestamp(end))
        return result

    async def audit(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        query = request.query_params
        orgs = await self.organizations(operator, session)
        chain = query.get("org", "") or (
            session.organization_id or (orgs[0].id if orgs else SYSTEM_CHAIN)
        )
        organization_id = "" if chain == SYSTEM_CHAIN else chain
        audit_filter = self._audit_filter(query)
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
        checkpoint, checkpoint_error = await self._latest_checkpoint(operator, organization_id)
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
            outcome_options=_options(audit_pb2.AuditOutcome.items(), "AUDIT_OUTCOME_"),
            events=events,
            error=error,
            next_link=next_link,
            first_link=first_link,
            verification=session.verifications.get(chain),
            checkpoint=checkpoint,
            checkpoint_error=checkpoint_error,
        )

    async def _latest_checkpoint(
        self, operator: Operator, organization_id: str
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

    async def verify_chain(self, request: Request) -> Response:
        session, form = await self.posted(request)
        chain = _form_text(form, "org") or SYSTEM_CHAIN
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

    async def keys(self, request: Request) -> Response:
        session = self.session(request)
        status = await self.operator(session).call(
            "keys",
            "GetKeyStatus",
            kpb.GetKeyStatusRequest(organization_id=request.query_params.get("org", "")),
        )
        job = status.latest_rewrap_job if status.HasField("latest_rewrap_job") else None
        return self.page(
            request,
            "keys.html",
            session,
            nav="keys",
            status=status,
            job=job,
            running=job is not None and job.state == kpb.REWRAP_JOB_STATE_RUNNING,
        )

    async def start_rewrap(self, request: Request) -> Response:
        session, _ = await self.posted(request)
        started = await self.operator(session).call("keys", "StartRewrap", kpb.StartRewrapRequest())
        session.notices.append(f"Rewrap job {started.job.id} is running.")
        return RedirectResponse("/keys", status_code=303)

    async def rewrap_progress(self, request: Request) -> Response:
        try:
            session = self.session(request)
        except NotSignedInError:
            return JSONResponse({"error": "signed out"}, status_code=401)
        try:
            got = await self.operator(session).call(
                "keys",
                "GetRewrapJob",
                kpb.GetRewrapJobRequest(job_id=request.path_params["job_id"]),
            )
        except VaultCallError as exc:
            return JSONResponse(
                {"error": exc.code, "reason": exc.reason, "request_id": exc.request_id},
                status_code=HTTP_STATUS.get(exc.code, 502),
            )
        job = got.job
        return JSONResponse(
            {
                "id": job.id,
                "state": overview.enum_label(
                    kpb.RewrapJobState.Name(job.state), "REWRAP_JOB_STATE_"
                ),
                "done": job.done,
                "total": job.total,
                "failed": job.failed,
                "update_time": overview.when(job.update_time),
            }
        )

    async def api_keys(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        org = request.query_params.get("org", "") or (session.organization_id or "")
        orgs = await self.organizations(operator, session)
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
            role_options=_options(apb.ApiKeyRole.items(), "API_KEY_ROLE_"),
        )

    async def create_api_key(self, request: Request) -> Response:
        session, form = await self.posted(request)
        org = _form_text(form, "org")
        if not org:
            raise BadInputError("choose the organization the new key is confined to")
        roles = [
            _enum_param(r, apb.ApiKeyRole.items(), "API_KEY_ROLE_", "role")
            for r in form.getlist("roles")
            if isinstance(r, str)
        ]
        create = apb.CreateApiKeyRequest(
            organization_id=org,
            roles=roles,  # type: ignore[arg-type]  # checked enum numbers
            name=_form_text(form, "name"),
        )
        expires = _form_text(form, "expires")
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
        key_id = _form_text(form, "key_id")
        revoked = await self.operator(session).call(
            "access", "RevokeApiKey", apb.RevokeApiKeyRequest(key_id=key_id)
        )
        session.notices.append(f"API key {revoked.api_key.key_id} is revoked.")
        return RedirectResponse(
            "/api-keys?" + urlencode({"org": _form_text(form, "org")}), status_code=303
        )

    async def org_list(self, request: Request) -> Response:
        session = self.session(request)
        if not session.is_admin:
            return RedirectResponse(f"/orgs/{session.organization_id}", status_code=303)
        operator = self.operator(session)
        orgs = await self.organizations(operator, session)
        usage = await self.per_organization(
            [(o.id, o.name) for o in orgs], lambda org: self._active(operator, org)
        )
        return self.page(
            request,
            "orgs.html",
            session,
            nav="orgs",
            rows=list(zip(orgs, usage, strict=True)),
        )

    async def _active(self, operator: Operator, organization_id: str) -> tuple[list[Any], bool]:
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

    async def org_detail(self, request: Request) -> Response:
        session = self.session(request)
        operator = self.operator(session)
        organization_id = request.path_params["organization_id"]
        got = await operator.call(
            "organizations",
            "GetOrganization",
            opb.GetOrganizationRequest(organization_id=organization_id),
        )
        (usage,) = await self.per_organization(
            [(organization_id, got.organization.name)],
            lambda org: self._active(operator, org),
        )
        return self.page(
            request, "org.html", session, nav="orgs", org=got.organization, usage=usage
        )

    async def healthz(self, _request: Request) -> Response:
        return PlainTextResponse("ok")

    # -- errors ----------------------------------------------------------------------

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


def create_app(vault: VaultClient, *, sessions: SessionStore | None = None) -> Starlette:
    """The console application over ``vault`` (sessions: a store with its own clock
    and timeouts; a default one when None)."""
    console = Console(vault, sessions if sessions is not None else SessionStore())
    routes = [
        Route("/", console.home),
        Route("/signin", console.signin_form, methods=["GET"]),
        Route("/signin", console.signin, methods=["POST"]),
        Route("/signout", console.signout, methods=["POST"]),
        Route("/connections", console.connections),
        Route("/expiring", console.expiring),
        Route("/audit", console.audit),
        Route("/audit/verify", console.verify_chain, methods=["POST"]),
        Route("/keys", console.keys),
        Route("/keys/rewrap", console.start_rewrap, methods=["POST"]),
        Route("/keys/rewrap/{job_id}", console.rewrap_progress),
        Route("/api-keys", console.api_keys, methods=["GET"]),
        Route("/api-keys", console.create_api_key, methods=["POST"]),
        Route("/api-keys/revoke", console.revoke_api_key, methods=["POST"]),
        Route("/orgs", console.org_list),
        Route("/orgs/{organization_id}", console.org_detail),
        Route("/healthz", console.healthz),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            NotSignedInError: console.on_signin_required,
            CsrfError: console.on_csrf_refused,
            BadInputError: console.on_bad_input,
            VaultCallError: console.on_vault_error,
            HTTPException: console.on_http_error,
        },
    )
    app.state.console = console
    return app
