"""/api/v1/users: `gpupool user add|list` (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from gpupool.server import problems
from gpupool.server.deps import UnitOfWork, User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import UserAdd, UserView

router = APIRouter(
    prefix=API_PREFIX, tags=["users"], responses=problems.responses(*problems.COMMON)
)


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
