"""/healthz, /readyz and /metrics: for load balancers, orchestrators and Prometheus.

/healthz and /readyz need no token (probes rarely carry one) and say nothing
about the platform's data; /metrics needs an admin's or auditor's token.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gpupool.server import problems
from gpupool.server.auth import refuse
from gpupool.server.deps import User
from gpupool.server.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> dict:
    """The process is up and answering (it does not touch the database)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
def readyz(request: Request):
    """The database answers and its schema is at this gpupool's newest migration."""
    from gpupool.model import GpupoolError
    from gpupool.scheduler.database import current_revision
    from gpupool.scheduler.migrations import HEAD

    try:
        revision = current_revision(request.app.state.engine)
    except GpupoolError:
        return _not_ready("database unreachable", None)
    if revision != HEAD:
        found = revision or "none"
        return _not_ready(
            f"schema at revision {found}, needs {HEAD}: run `gpupool db upgrade`", found
        )
    return {"status": "ready", "revision": revision}


def _not_ready(reason: str, revision: str | None) -> JSONResponse:
    body = {"status": "not ready", "revision": revision, "reason": reason}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics"},
        **problems.responses(401, 403, 429),
    },
)
def metrics(request: Request, user: User) -> Response:
    """Prometheus text format (needs an admin's or auditor's token)."""
    allowed = request.app.state.settings.metrics_roles
    if user.role not in allowed:
        message = f"{user.name} may not read metrics: {', '.join(allowed)} only"
        refuse(request.app.state.engine, user.name, "read metrics", message, "metrics")
    body, content_type = request.app.state.metrics.exposition()
    return Response(body, media_type=content_type)
