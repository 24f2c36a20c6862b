"""Bearer-token authentication for every API route (not /healthz, /readyz).

``Authorization: Bearer <token>``; the token is checked by
gpupool.scheduler.tokens.identify (slow hash, constant-time compare,
expiry and revocation read on every request). The result is a Principal
whose ``name`` is the actor every service call is made as. A token with the
``read`` scope only may call GET routes and the POSTs that write nothing
(marked ``reads_only``: policy validate and whatif); anything else is a 403.

Failures:
- no ``Authorization: Bearer`` header: 401 ``WWW-Authenticate: Bearer``. Not
  counted nor audited: there was nothing to guess with.
- a token that does not authenticate: 401 with ``error="invalid_token"``, one
  failure counted against the client address and the token's prefix (its
  public id), and an ``auth.failed`` audit row (outcome ``denied``) naming the
  prefix, the address and the reason. The secret is never logged or stored.
  The response does not say why (unknown, expired or revoked): the audit does.
- an address or prefix with too many recent failures: 429 with Retry-After,
  before the token is even checked (neither counted again nor audited, so a
  flood cannot fill the audit log faster than the limit lets it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from gpupool.server.batching import Batcher
from gpupool.server.ratelimit import FailureLimiter
from gpupool.server.settings import Settings

log = logging.getLogger("gpupool.server.auth")
REALM = 'Bearer realm="gpupool"'
UNAUTHENTICATED_ACTOR = "anonymous"  # as gpupool.scheduler.tokens audits it


@dataclass(frozen=True)
class Principal:
    """The authenticated user: ``name`` is the actor of every service call."""

    name: str
    role: str
    scopes: tuple[str, ...] = ()


class Authenticator:
    """Checks tokens against the database and limits failed attempts (one per process)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        window, keys = settings.failure_window_seconds, settings.limiter_max_keys
        self.by_address = FailureLimiter(settings.failures_per_address, window, keys)
        self.by_prefix = FailureLimiter(settings.failures_per_prefix, window, keys)
        # The token check reads one row (and writes last_used_at about once a minute):
        # in autocommit mode it costs one round trip, not BEGIN + SELECT + COMMIT.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        # the tokens of requests arriving together are checked together (one SELECT)
        self.checks = Batcher(self.authenticate_many, "gpupool-token-checks")

    def authenticate(self, raw_token: str, address: str) -> Principal:
        outcome = self.authenticate_many([(raw_token, address)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def authenticate_many(self, requests: Sequence[tuple[str, str]]) -> list:
        """(raw token, client address) of requests that arrived together -> each one's
        Principal or the HTTPException (401, 429) to answer it with; one SELECT for
        all the tokens (gpupool.scheduler.tokens.identify_many)."""
        from gpupool.scheduler import tokens
        from gpupool.scheduler.database import ensure_schema

        outcomes: list = [None] * len(requests)
        checking = []
        for index, (raw_token, address) in enumerate(requests):
            prefix = tokens.token_prefix(raw_token)
            try:
                self._refuse_if_limited(address, prefix)
                checking.append((index, raw_token, address, prefix))
            except HTTPException as exc:
                outcomes[index] = exc
        if checking:
            ensure_schema(self.engine)  # a database behind the migrations is a 503, not a 401
            with self._reader.begin() as connection:
                bearers = tokens.identify_many(connection, [raw for _, raw, _, _ in checking])
            for (index, _, address, prefix), bearer in zip(checking, bearers, strict=True):
                outcomes[index] = self._principal(bearer, prefix, address)
        return outcomes

    def _principal(self, bearer, prefix: str | None, address: str):
        from gpupool.model import AuthenticationFailed
        from gpupool.scheduler.permissions import record_denial

        if not isinstance(bearer, AuthenticationFailed):
            return Principal(bearer.user, bearer.role, bearer.scopes)
        self._count_failure(bearer, prefix, address)
        record_denial(self.engine, bearer.audit_entry)  # outcome 'denied', own transaction
        return HTTPException(
            401, str(bearer), headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'}
        )

    def _count_failure(self, exc, prefix: str | None, address: str) -> None:
        """Count the failure and make its audit entry name the prefix and the address."""
        self.by_address.fail(address)
        if prefix is not None:
            self.by_prefix.fail(prefix)
        reason = getattr(exc, "reason", "") or exc.message
        details = {"token_prefix": prefix, "client": address, "reason": reason}
        log.warning("authentication failed", extra=details)
        exc.audit_entry = {
            "actor": UNAUTHENTICATED_ACTOR,
            "action": "auth.failed",
            "target": f"token {prefix}" if prefix is not None else "token (malformed)",
            "after": details,
        }

    def _refuse_if_limited(self, address: str, prefix: str | None) -> None:
        wait = self.by_address.retry_after(address)
        if prefix is not None:
            wait = max(wait, self.by_prefix.retry_after(prefix))
        if wait > 0:
            log.warning(
                "authentication refused: too many failures",
                extra={"client": address, "token_prefix": prefix},
            )
            raise HTTPException(
                429,
                "too many failed authentications from this address or with this token; "
                f"retry in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            401,
            "authentication required: send `Authorization: Bearer <token>` "
            "(an admin creates tokens with `gpupool token create USER`)",
            headers={"WWW-Authenticate": REALM},
        )
    return token


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authenticated(request: Request) -> Principal:
    """FastAPI dependency: the request's Principal, or 401/429 (403 for a read-only
    token's write). Checked in the authenticator's batch thread, not a thread-pool hop."""
    from starlette.concurrency import run_in_threadpool

    from gpupool.scheduler.tokens import scope_allows

    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.checks.submit((bearer_token(request), client_address(request)))
    request.state.user = principal.name  # for the access log line
    if not scope_allows(principal.scopes, write=_writes(request)):
        await run_in_threadpool(
            refuse,
            authenticator.engine,
            principal.name,
            f"{request.method} {request.url.path}",
            f"this token of {principal.name} may only read",
        )
    return principal


def refuse(engine: Engine, actor: str, action: str, message: str, target: str = "") -> None:
    """Raise a 403 for ``actor``, with its audit row (outcome denied) written first."""
    from gpupool.scheduler.permissions import Denied, record_denial

    refusal = Denied(message, actor, action, target)
    record_denial(engine, refusal.audit_entry)
    raise refusal


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def reads_only(endpoint):
    """Marks a POST route that writes nothing (a read-only token may call it)."""
    endpoint.reads_only = True
    return endpoint


def _writes(request: Request) -> bool:
    if request.method in SAFE_METHODS:
        return False
    route = request.scope.get("route")
    return not getattr(getattr(route, "endpoint", None), "reads_only", False)
