"""/api/v1/exports/{kind}: `gpupool export kueue|slurm`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from gpupool.server import problems
from gpupool.server.deps import UnitOfWork, User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import ExportView, Text

router = APIRouter(
    prefix=API_PREFIX, tags=["exports"], responses=problems.responses(*problems.COMMON)
)
Pairs = Annotated[list[Annotated[str, Query(max_length=200)]], Query(max_length=64)]


@router.get("/exports/{kind}", response_model=ExportView)
def export(
    kind: Literal["kueue", "slurm"],
    user: User,
    work: UnitOfWork,
    site: Annotated[Text | None, Query()] = None,
    resource: Pairs = [],  # noqa: B006 - FastAPI copies defaults
    gres: Pairs = [],  # noqa: B006
) -> dict:
    """The platform and its active policy for a site's workload manager: Kueue objects
    (YAML) or sacctmgr commands. ``resource``/``gres``: ``TYPE=NAME`` (admins, auditors;
    an agent for its own site)."""
    from gpupool.exports.options import pairs
    from gpupool.scheduler.exporting import export as run

    with work() as session:
        return run(session, user.name, kind, site, pairs(resource, "resource"), pairs(gres, "gres"))
