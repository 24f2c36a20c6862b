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
    since: Annotated[str | None, Query(max_length=64, description="ISO date/time (UTC)")] = None,
    outcome: Annotated[str | None, Query(max_length=16, description="ok or denied")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict]:
    """The newest ``limit`` audit entries matching the filters, oldest first."""
    from gpupool.scheduler.audit_log import list_entries
    from gpupool.scheduler.lifecycle import parse_time

    start = None if since is None else parse_time(since, "--since")
    with work() as session:
        return list_entries(session, user.name, actor, start, outcome, limit)
