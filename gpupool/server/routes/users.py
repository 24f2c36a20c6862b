"""/api/v1/users: `gpupool user add|list|remove|set-role` (admins; list: auditors too)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from gpupool.server import problems
from gpupool.server.deps import UnitOfWork, User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import UserAdd, UserRemoved, UserRole, UserView

router = APIRouter(
    prefix=API_PREFIX, tags=["users"], responses=problems.responses(*problems.COMMON)
)
UserName = Annotated[str, Path(min_length=1, max_length=128, description="The user's name.")]


@router.get("/users", response_model=list[UserView])
def list_users(user: User, work: UnitOfWork) -> list[dict]:
    from gpupool.scheduler import permissions

    with work() as session:
        return permissions.list_users(session, user.name)


@router.post("/users", status_code=201, response_model=UserView)
def add_user(body: UserAdd, user: User, work: UnitOfWork) -> dict:
    from gpupool.scheduler import permissions

    with work() as session:
        row = permissions.add_user(
            session, user.name, body.name, body.role.strip(), body.org, body.site
        )
        return permissions.user_view(row)


@router.delete("/users/{name}", response_model=UserRemoved)
def remove_user(name: UserName, user: User, work: UnitOfWork) -> dict:
    """Remove a user and its API tokens (admins): its tokens are refused from the next
    request on. The last admin is a 409."""
    from gpupool.scheduler import permissions

    with work() as session:
        return permissions.remove_user(session, user.name, name)


@router.put("/users/{name}/role", response_model=UserView)
def set_role(name: UserName, body: UserRole, user: User, work: UnitOfWork) -> dict:
    """Give a user another role, with the org (submitter) or site (agent) it acts for
    (admins). Demoting the last admin is a 409."""
    from gpupool.scheduler import permissions

    with work() as session:
        row = permissions.set_role(session, user.name, name, body.role.strip(), body.org, body.site)
        return permissions.user_view(row)
