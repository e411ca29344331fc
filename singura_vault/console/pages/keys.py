"""The keys page: the root and data keys' status, starting a rewrap job, and its
progress as JSON for the page's polling script."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from singura_vault.console import overview
from singura_vault.console.rendering import HTTP_STATUS
from singura_vault.console.vault_client import VaultCallError
from singura_vault.console.web import NotSignedInError, Pages
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb


class KeyPages(Pages):
    """GET /keys, POST /keys/rewrap, GET /keys/rewrap/{job_id} (JSON, for polling)."""

    def routes(self) -> list[Route]:
        return [
            Route("/keys", self.keys),
            Route("/keys/rewrap", self.start_rewrap, methods=["POST"]),
            Route("/keys/rewrap/{job_id}", self.rewrap_progress),
        ]

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
