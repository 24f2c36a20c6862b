"""/api/v1/schedule: `gpupool schedule [--dry-run]`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gpupool.server import problems
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
