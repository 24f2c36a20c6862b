"""/api/v1/policy: `gpupool policy validate|apply|show|history|diff|rollback|whatif`.

Documents are uploaded as text with the file name their errors should cite
(``policy.yaml:12 domains.medical.weight: ...``, one entry each in ``errors``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from gpupool.scheduler.permissions import authorize
from gpupool.server import problems
from gpupool.server.auth import reads_only
from gpupool.server.deps import UnitOfWork, User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import (
    PolicyApply,
    PolicyDiffView,
    PolicyRollback,
    PolicyText,
    PolicyValid,
    PolicyVersionText,
    PolicyVersionView,
    PolicyWhatIf,
)
from gpupool.server.uploads import upload_name, uploaded_text

router = APIRouter(
    prefix=API_PREFIX, tags=["policy"], responses=problems.responses(*problems.COMMON)
)
Version = Annotated[str, Path(max_length=32, description="A policy version: 3 or v3.")]


def _document(body: PolicyText):
    from gpupool.files import POLICY
    from gpupool.policies.document import parse_policy_text

    name = upload_name(body.filename, "policy.yaml")
    return parse_policy_text(uploaded_text(body.content, POLICY, name), name)


@router.post("/policy/validate", response_model=PolicyValid)
@reads_only
def validate_policy(body: PolicyText, user: User) -> dict:
    """Check a document without storing it; every problem in ``errors``."""
    document = _document(body)
    return {"kind": document.kind, "domains": len(document.to_dict()["domains"])}


@router.post("/policy/apply", status_code=201, response_model=PolicyVersionView)
def apply_policy(body: PolicyApply, user: User, work: UnitOfWork) -> dict:
    """Store the document as a new version and make it active (admins); ``replaces``
    is the version it replaced (None: the FIFO default)."""
    from gpupool.scheduler import policies_store, repository

    document = _document(body)  # before the database is touched at all
    with work() as session:
        previous = repository.active_policy_row(session)
        row = policies_store.apply_policy(session, user.name, document, body.comment)
        return _replacing(policies_store.version_view(row), previous)


def _replacing(view: dict, previous) -> dict:
    return {**view, "replaces": None if previous is None else previous.version}


@router.get("/policy", response_model=PolicyVersionText)
def show_active_policy(user: User, work: UnitOfWork) -> dict:
    """The active version with its text (404 while the FIFO default is in use)."""
    return _show(work, user.name, None)


@router.get("/policy/versions/{version}", response_model=PolicyVersionText)
def show_policy(version: Version, user: User, work: UnitOfWork) -> dict:
    from gpupool.scheduler import policies_store

    return _show(work, user.name, policies_store.parse_version(version))


def _show(work, user: str, number: int | None) -> dict:
    from gpupool.scheduler import policies_store

    with work() as session:
        authorize(session, user, "policy.read")
        row = policies_store.get_version(session, number)
        return {**policies_store.version_view(row), "document": row.document}


@router.get("/policy/history", response_model=list[PolicyVersionView])
def policy_history(user: User, work: UnitOfWork) -> list[dict]:
    """Every version, oldest first; the active one has ``active`` true."""
    from gpupool.scheduler import policies_store

    with work() as session:
        authorize(session, user.name, "policy.read")
        return [policies_store.version_view(r) for r in policies_store.list_versions(session)]


@router.get("/policy/diff", response_model=PolicyDiffView)
def diff_policies(
    user: User,
    work: UnitOfWork,
    old: Annotated[str, Query(max_length=32, description="The older version (3 or v3).")],
    new: Annotated[str, Query(max_length=32, description="The newer version.")],
) -> dict:
    from gpupool.scheduler import policies_store

    first = policies_store.parse_version(old, location="V1")
    second = policies_store.parse_version(new, location="V2")
    with work() as session:
        authorize(session, user.name, "policy.read")
        result = policies_store.diff_versions(session, first, second)
    return {
        "old": result.old,
        "new": result.new,
        "changes": list(result.changes),
        "diff": result.unified,
    }


@router.post("/policy/rollback", status_code=201, response_model=PolicyVersionView)
def rollback_policy(body: PolicyRollback, user: User, work: UnitOfWork) -> dict:
    """Make a version's document active again, as a new version (admins)."""
    from gpupool.scheduler import policies_store, repository

    number = policies_store.parse_version(body.version)
    with work() as session:
        previous = repository.active_policy_row(session)
        row = policies_store.rollback_policy(session, user.name, number, body.comment)
        return _replacing(policies_store.version_view(row), previous)


@router.post("/policy/whatif", response_model=dict[str, Any])
@reads_only
def whatif(body: PolicyWhatIf, user: User, work: UnitOfWork) -> dict:
    """Replay the recorded jobs under the document and the active policy; writes nothing.
    With ``files``, also the per-job files `policy whatif --out` writes (413-free: a
    window whose files would pass the size limit is a 422 naming ``files``)."""
    from gpupool.scheduler import clock
    from gpupool.scheduler.queries import whatif as replay

    document = _document(body)
    with work() as session:
        authorize(session, user.name, "policy.whatif")  # replays every org's jobs
        label = upload_name(body.filename, "policy.yaml")
        return replay(session, document, label, body.since, body.until, clock.utcnow(), body.files)
