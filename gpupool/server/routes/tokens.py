"""/api/v1/tokens: `gpupool token create|list|revoke`.

A created token is in the response once (``token``) and nowhere else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from gpupool.server import problems
from gpupool.server.deps import UnitOfWork, User
from gpupool.server.routes import API_PREFIX
from gpupool.server.schemas import Name, Text, _Request, _View

router = APIRouter(
    prefix=API_PREFIX, tags=["tokens"], responses=problems.responses(*problems.COMMON)
)


class TokenCreate(_Request):
    user: Name
    expires: Text = "90d"  # 90d, 12h, 30m, 2w or never, as `token create --expires`
    scopes: list[Text] = []


class TokenView(_View):
    id: str
    user: str
    scopes: list[str]
    state: str
    created_at: str | None
    created_by: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class NewToken(TokenView):
    token: str


class RevokedToken(TokenView):
    revoked_now: bool


@router.post("/tokens", status_code=201, response_model=NewToken)
def create_token(body: TokenCreate, user: User, work: UnitOfWork) -> dict:
    """A new token for a user (admins); ``token`` is shown this once."""
    from gpupool.scheduler import tokens

    expires = tokens.parse_duration(body.expires)
    with work() as session:
        row, raw = tokens.create_token(session, user.name, body.user, expires, body.scopes)
        return {**tokens.token_view(row), "token": raw}


@router.get("/tokens", response_model=list[TokenView])
def list_tokens(
    user: User,
    work: UnitOfWork,
    of: Annotated[str | None, Query(alias="user", max_length=128)] = None,
) -> list[dict]:
    """Every token for admins and auditors (``user`` narrows it); one's own otherwise."""
    from gpupool.scheduler import tokens

    with work() as session:
        return tokens.list_tokens(session, user.name, of)


@router.delete("/tokens/{token_id}", response_model=RevokedToken)
def revoke_token(
    token_id: Annotated[str, Path(max_length=200)], user: User, work: UnitOfWork
) -> dict:
    """Revoke a token (its id, e.g. k3x9q2mz); effective on its next request."""
    from gpupool.scheduler import tokens

    with work() as session:
        return tokens.revoke_token(session, user.name, token_id)
