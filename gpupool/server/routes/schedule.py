"""/api/v1/schedule: `gpupool schedule`; /api/v1/schedule/dry-run: `gpupool schedule --dry-run`.

The dry run has its own route because it writes nothing: a read-only token (an
auditor's dashboard, a monitoring script) may call it, and the scope check is made
on the route before any body is read (gpupool.server.auth).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from gpupool.server import problems
from gpupool.server.auth import reads_only
from gpupool.server.deps import User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import ScheduleRequest, ScheduleView

router = APIRouter(
    prefix=API_PREFIX, tags=["scheduling"], responses=problems.responses(*problems.COMMON)
)


@router.post("/schedule", response_model=ScheduleView)
def schedule(body: ScheduleRequest, request: Request, user: User) -> dict:
    """One round with the active policy: live (admins; waits for a daemon's round in
    progress) or, with ``dry_run``, the same decision with nothing written."""
    from gpupool.scheduler.lifecycle import parse_grace
    from gpupool.scheduler.queries import schedule as run

    grace = parse_grace(body.grace)
    return run(request.app.state.engine, user.name, body.dry_run, grace)


@router.post("/schedule/dry-run", response_model=ScheduleView)
@reads_only
def schedule_dry_run(body: ScheduleRequest, request: Request, user: User) -> dict:
    """The decision the next round would make with the active policy, nothing written
    (``dry_run`` in the body is ignored: this route never writes)."""
    from gpupool.scheduler.lifecycle import parse_grace
    from gpupool.scheduler.queries import schedule as run

    return run(request.app.state.engine, user.name, True, parse_grace(body.grace))
