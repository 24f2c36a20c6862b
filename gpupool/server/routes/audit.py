"""/api/v1/audit: `gpupool audit list` (admins and auditors)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from gpupool.server import problems
from gpupool.server.deps import UnitOfWork, User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import _View

router = APIRouter(
    prefix=API_PREFIX, tags=["audit"], responses=problems.responses(*problems.COMMON)
)


class AuditEntry(_View):
    id: int
    at: str | None
    actor: str
    action: str
    target: str
    outcome: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@router.get("/audit", response_model=list[AuditEntry])
def list_audit(
    user: User,
    work: UnitOfWork,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="7d, 12h, 30m, 2w or a UTC date/time")
    ] = None,
    outcome: Annotated[str | None, Query(max_length=16, description="ok or denied")] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="a prefix: job, job.cancel, auth")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> list[dict]:
    """The newest ``limit`` audit entries matching every filter, oldest first
    (admins and auditors)."""
    from gpupool.scheduler.permissions import audit_since, list_audit

    start = None if since is None else audit_since(since)
    with work() as session:
        return list_audit(session, user.name, actor, start, outcome, action, limit)
