"""/api/v1/agent: what a site's agent calls (`gpupool agent run`); /api/v1/sites.

An agent's token acts for its one site (role ``agent``): it sees only the runs
placed on that site's pools. A report on another site's run is refused (403).
Every call counts as a heartbeat (gpupool.scheduler.sites).
"""

from __future__ import annotations

from fastapi import APIRouter

from gpupool.server import problems
from gpupool.server.deps import UnitOfWork, User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import Heartbeat, Orders, ReportResults, RunReports, SiteView, Starts

router = APIRouter(
    prefix=API_PREFIX, tags=["site agents"], responses=problems.responses(*problems.COMMON)
)


@router.get("/agent/starts", response_model=Starts)
def pull_starts(user: User, work: UnitOfWork) -> dict:
    """The runs placed on the agent's site that have a payload, each with its GPU
    indices, time limit (estimate on its GPU type + the timeout grace) and payload."""
    from gpupool.scheduler.sites import starts

    with work() as session:
        return starts(session, user.name)


@router.post("/agent/reports", response_model=ReportResults)
def report_runs(body: RunReports, user: User, work: UnitOfWork) -> dict:
    """Runs running, ended or failed; an end finishes its job (charged as `job finish`).
    Idempotent: a report made before changes nothing."""
    from gpupool.scheduler.sites import RunReport, report

    reports = [RunReport(**item.model_dump()) for item in body.reports]
    with work() as session:
        return report(session, user.name, reports)


@router.post("/agent/heartbeat", response_model=Orders)
def heartbeat(body: Heartbeat, user: User, work: UnitOfWork) -> dict:
    """The site is alive; of the runs it runs, those to stop (preempted, cancelled,
    timed out, or unknown here)."""
    from gpupool.scheduler.sites import heartbeat as beat

    running = [(item.job_id, item.run_id) for item in body.running]
    with work() as session:
        return beat(session, user.name, running)


@router.get("/sites", response_model=list[SiteView])
def list_sites(user: User, work: UnitOfWork) -> list[dict]:
    """Each site whose agent has called in: when it was last heard from, and whether
    it is reachable (admins and auditors)."""
    from gpupool.scheduler.sites import site_views

    with work() as session:
        return site_views(session, user.name)
