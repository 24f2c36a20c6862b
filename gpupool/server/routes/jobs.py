"""/api/v1/jobs: `gpupool job submit|submit-batch|list|show|cancel|finish|reap`."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from gpupool import limits
from gpupool.model import GpupoolError
from gpupool.server import problems
from gpupool.server.deps import UnitOfWork, User, other_orgs_hidden
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import (
    Grace,
    JobBatch,
    JobDetail,
    JobFinish,
    JobPage,
    JobSubmit,
    JobView,
    Reaped,
    SubmitResult,
)
from gpupool.server.uploads import upload_name, uploaded_text

router = APIRouter(prefix=API_PREFIX, tags=["jobs"], responses=problems.responses(*problems.COMMON))
JobId = Annotated[int, Path(gt=0, le=2_147_483_647, description="The job's id.")]
_CREATED_OR_SAME = {200: {"model": SubmitResult, "description": "The key's job, already there"}}


@router.post("/jobs", status_code=201, response_model=SubmitResult, responses=_CREATED_OR_SAME)
async def submit_job(
    body: JobSubmit,
    user: User,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> JSONResponse:
    """Submit one job: 201 when created; 200 with the same job when its key was used
    before with the same content; 409 when the key was used with other content."""
    from gpupool.scheduler.service import JobRequest

    job = JobRequest(
        org=body.org,
        gpus=body.gpus,
        hours=body.hours,
        gpu_types=body.gpu_types,
        name=body.name,
        priority=body.priority,
        submit_key=_one_key(body.key, idempotency_key),
        payload=body.payload,
        job_class=body.job_class,
    )
    # committed with the submissions that arrived alongside (gpupool.server.submissions)
    job_id, created = await request.app.state.submissions.submit(user.name, job)
    # The busiest route: its two-field answer is written directly (SubmitResult
    # documents it) rather than validated and serialised through pydantic.
    return JSONResponse(
        {"id": job_id, "created": created},
        status_code=201 if created else 200,
        headers={"Location": f"/api/v1/jobs/{job_id}"},
    )


def _one_key(in_body: str | None, in_header: str | None) -> str | None:
    if in_body and in_header and in_body != in_header:
        raise GpupoolError("differs from the key in the body", location="Idempotency-Key")
    return in_body or in_header


@router.post(
    "/jobs/batch",
    status_code=201,
    response_model=list[SubmitResult],
    responses={200: {"model": list[SubmitResult], "description": "Every job was there already"}},
)
def submit_batch(body: JobBatch, response: Response, user: User, work: UnitOfWork) -> list[dict]:
    """Submit every job of an uploaded CSV or YAML file, all or none; each bad row is
    listed in the problem's ``errors`` with its ``file:line``."""
    from gpupool.scheduler.service import submit_jobs

    requests, malformed = _parse_batch(body.filename, body.content)
    with work() as session:
        results = submit_jobs(session, user.name, requests, prior_errors=malformed)
    response.status_code = 201 if any(created for _, created in results) else 200
    return [{"id": job_id, "created": created} for job_id, created in results]


def _parse_batch(filename: str, content: str):
    """The upload parsed as `job submit-batch` parses a file of that name."""
    from gpupool.files import BATCH_CSV, BATCH_YAML
    from gpupool.scheduler.batch import parse_csv, parse_yaml

    name = upload_name(filename, "jobs.csv")
    suffix = PurePosixPath(name).suffix.lower()
    if suffix == ".csv":
        requests, malformed = parse_csv(uploaded_text(content, BATCH_CSV, name), name)
    elif suffix in (".yaml", ".yml"):
        requests, malformed = parse_yaml(uploaded_text(content, BATCH_YAML, name), name)
    else:
        raise GpupoolError("batch files must end in .csv, .yaml or .yml", location=name)
    if not requests and not malformed:
        raise GpupoolError("no jobs in batch file", location=name)
    return requests, malformed


_PAGE_SIZE = f"Jobs per page, {limits.JOB_PAGE.span()} (default {limits.JOB_PAGE_DEFAULT})."


def _cursor(description: str):
    return Query(ge=1, le=2_147_483_647, description=description)  # as JobId


@router.get("/jobs", response_model=JobPage)
def list_jobs(
    user: User,
    work: UnitOfWork,
    state: Annotated[list[str], Query(max_length=16)] = [],  # noqa: B006 (FastAPI copies it)
    org: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[
        int, Query(ge=limits.JOB_PAGE.low, le=limits.JOB_PAGE.high, description=_PAGE_SIZE)
    ] = limits.JOB_PAGE_DEFAULT,
    after: Annotated[int | None, _cursor("Jobs after this id: a page's next_after.")] = None,
    before: Annotated[int | None, _cursor("Jobs before this id: previous_before.")] = None,
) -> dict:
    """One page of the jobs the user may see (a submitter: its organisation's), in id
    order; ``next_after`` and ``previous_before`` name the neighbouring pages."""
    from gpupool.model import JobState
    from gpupool.scheduler.queries import job_page

    known = [s.value for s in JobState]
    for value in state:
        if value not in known:
            raise GpupoolError(
                f"unknown state {value!r}; one of {', '.join(known)}", location="--state"
            )
    with work() as session:
        return job_page(session, user.name, state or None, org, limit, after, before)


@router.get("/jobs/{job_id}", response_model=JobDetail)
def show_job(job_id: JobId, user: User, work: UnitOfWork) -> dict:
    """One job with where it ran and its price explained. Another organisation's job
    is a 404, exactly like a missing one."""
    from gpupool.scheduler.queries import job_detail

    with work() as session, other_orgs_hidden(session, user, job_id):
        return job_detail(session, user.name, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobView)
def cancel_job(job_id: JobId, user: User, work: UnitOfWork) -> dict:
    """Cancel a pending, running or preempted job (409 if it has ended)."""
    from gpupool.scheduler.service import cancel

    with work() as session, other_orgs_hidden(session, user, job_id):
        return cancel(session, user.name, job_id)


@router.post("/jobs/{job_id}/finish", response_model=JobView)
def finish_job(job_id: JobId, body: JobFinish, user: User, work: UnitOfWork) -> dict:
    """A site reports a running job completed (or failed): frees its GPUs, charges its use."""
    from gpupool.scheduler.service import finish

    with work() as session, other_orgs_hidden(session, user, job_id):
        return finish(session, user.name, job_id, failed=body.failed, at=body.at)


@router.post("/jobs/reap", response_model=Reaped)
def reap_jobs(body: Grace, user: User, work: UnitOfWork) -> dict:
    """Mark timed_out every running job past its estimate + grace (admins)."""
    from gpupool.scheduler.service import reap

    with work() as session:
        return reap(session, user.name, body.grace)
