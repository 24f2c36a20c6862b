"""What route handlers receive: the authenticated user and a unit-of-work factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from gpupool.server.auth import Principal, authenticated

Work = Callable[[], AbstractContextManager[Session]]


async def _work(request: Request) -> Work:
    """``with work() as session:``: one transaction on the process's engine.

    ``async`` although it blocks on nothing: FastAPI runs a plain ``def``
    dependency in its thread pool, a thread hop per request for nothing."""
    engine = request.app.state.engine

    @contextmanager
    def work() -> Iterator[Session]:
        from gpupool.scheduler.database import unit_of_work

        with unit_of_work(engine) as session:
            yield session

    return work


User = Annotated[Principal, Depends(authenticated)]
UnitOfWork = Annotated[Work, Depends(_work)]


@contextmanager
def other_orgs_hidden(session: Session, user: Principal, job_id: int) -> Iterator[None]:
    """Another organisation's job looks exactly like a job that does not exist.

    A submitter refused a job of another organisation gets the same 404 as for
    a missing id, so job ids cannot be probed across organisations; the refusal
    is still audited (the NotFound carries the Denied's audit entry, which the
    unit of work records after rolling back).
    """
    from gpupool.model import NotFound, PermissionDenied
    from gpupool.scheduler import repository
    from gpupool.scheduler.orm import JobRow

    try:
        yield
    except PermissionDenied as exc:
        job = session.get(JobRow, job_id)
        actor = repository.find_user(session, user.name)
        if job is None or actor is None or actor.org_id in (None, job.org_id):
            raise
        hidden = NotFound(f"no job with id {job_id}", location="job id")
        hidden.audit_entry = getattr(exc, "audit_entry", None)
        raise hidden from None
