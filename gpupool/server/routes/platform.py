"""/api/v1/gpu-types, /job-classes, /pools, /domains, /orgs: `gpupool gpu-type|job-class|pool|
domain|org add|list` (and `job-class remove`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from gpupool.scheduler.permissions import authorize
from gpupool.server import problems
from gpupool.server.deps import UnitOfWork, User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import (
    DomainAdd,
    DomainView,
    GpuTypeAdd,
    GpuTypeView,
    JobClassAdd,
    JobClassView,
    OrgAdd,
    OrgView,
    PoolAdd,
    PoolView,
)

JobClassName = Annotated[str, Path(min_length=1, max_length=64, description="The class's name.")]

router = APIRouter(
    prefix=API_PREFIX, tags=["platform"], responses=problems.responses(*problems.COMMON)
)


@router.get("/gpu-types", response_model=list[GpuTypeView])
def list_gpu_types(user: User, work: UnitOfWork) -> list[dict]:
    from gpupool.scheduler import repository
    from gpupool.scheduler.service import gpu_type_view

    with work() as session:
        authorize(session, user.name, "platform.read")
        return [gpu_type_view(r) for r in repository.list_gpu_types(session)]


@router.post("/gpu-types", status_code=201, response_model=GpuTypeView)
def add_gpu_type(body: GpuTypeAdd, user: User, work: UnitOfWork) -> dict:
    """Add a GPU type (admins)."""
    from gpupool.scheduler import service

    with work() as session:
        row = service.add_gpu_type(
            session, user.name, body.name, body.vendor, body.memory_gb, body.speed, body.domestic
        )
        return service.gpu_type_view(row)


@router.get("/job-classes", response_model=list[JobClassView])
def list_job_classes(user: User, work: UnitOfWork) -> list[dict]:
    """Job classes and their speed on each GPU type they name."""
    from gpupool.scheduler import repository
    from gpupool.scheduler.service import job_class_view

    with work() as session:
        authorize(session, user.name, "platform.read")
        return [job_class_view(r) for r in repository.list_job_classes(session)]


@router.post("/job-classes", status_code=201, response_model=JobClassView)
def add_job_class(body: JobClassAdd, user: User, work: UnitOfWork) -> dict:
    """Add a job class: its speed on each GPU type it names (admins)."""
    from gpupool.scheduler import service

    with work() as session:
        row = service.add_job_class(session, user.name, body.name, body.speeds)
        return service.job_class_view(row)


@router.delete("/job-classes/{name}", response_model=JobClassView)
def remove_job_class(name: JobClassName, user: User, work: UnitOfWork) -> dict:
    """Remove a job class no unfinished job names (admins); else a 409."""
    from gpupool.scheduler import service

    with work() as session:
        return service.remove_job_class(session, user.name, name)


@router.get("/pools", response_model=list[PoolView])
def list_pools(user: User, work: UnitOfWork) -> list[dict]:
    """Pools with their free GPUs now."""
    from gpupool.scheduler.service import pool_views

    with work() as session:
        authorize(session, user.name, "platform.read")
        return pool_views(session)


@router.post("/pools", status_code=201, response_model=PoolView)
def add_pool(body: PoolAdd, user: User, work: UnitOfWork) -> dict:
    """Add a pool of identical GPUs at a site (admins)."""
    from gpupool.scheduler import service

    with work() as session:
        row = service.add_pool(
            session,
            user.name,
            body.name,
            body.site,
            body.gpu_type,
            body.gpus,
            body.gpus_per_node,
            body.price_per_gpu_hour,
        )
        return service.pool_view(row, row.gpus)


@router.get("/domains", response_model=list[DomainView])
def list_domains(user: User, work: UnitOfWork) -> list[dict]:
    from gpupool.scheduler import repository
    from gpupool.scheduler.service import domain_view

    with work() as session:
        authorize(session, user.name, "platform.read")
        return [domain_view(r) for r in repository.list_domains(session)]


@router.post("/domains", status_code=201, response_model=DomainView)
def add_domain(body: DomainAdd, user: User, work: UnitOfWork) -> dict:
    """Add an application domain (admins)."""
    from gpupool.scheduler import service

    with work() as session:
        return service.domain_view(service.add_domain(session, user.name, body.name, body.weight))


@router.get("/orgs", response_model=list[OrgView])
def list_orgs(
    user: User,
    work: UnitOfWork,
    domain: Annotated[str | None, Query(max_length=64)] = None,
) -> list[dict]:
    from gpupool.scheduler import repository
    from gpupool.scheduler.service import org_view

    with work() as session:
        grant = authorize(session, user.name, "org.list")  # a submitter: its own only
        return [
            org_view(r) for r in repository.list_orgs(session, domain) if grant.sees_org(r.name)
        ]


@router.post("/orgs", status_code=201, response_model=OrgView)
def add_org(body: OrgAdd, user: User, work: UnitOfWork) -> dict:
    """Add an organisation in a domain (admins)."""
    from gpupool.scheduler import service

    with work() as session:
        row = service.add_org(session, user.name, body.name, body.domain, body.budget)
        return service.org_view(row)
