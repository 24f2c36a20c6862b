"""Bearer-token authentication for every API route (not /healthz, /readyz).

``Authorization: Bearer <token>``; the token is checked by
gpupool.scheduler.tokens.authenticate (slow hash, constant-time compare,
expiry and revocation read on every request). The result is a Principal
whose ``name`` is the actor every service call is made as.

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
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine
from starlette.exceptions import HTTPException

from gpupool.server.ratelimit import FailureLimiter
from gpupool.server.settings import Settings

log = logging.getLogger("gpupool.server.auth")
REALM = 'Bearer realm="gpupool"'
UNAUTHENTICATED_ACTOR = "(unauthenticated)"
INVALID = "the bearer token is not valid (unknown, expired or revoked)"


@dataclass(frozen=True)
class Principal:
    """The authenticated user: ``name`` is the actor of every service call."""

    name: str
    role: str


class Authenticator:
    """Checks tokens against the database and limits failed attempts (one per process)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        window, keys = settings.failure_window_seconds, settings.limiter_max_keys
        self.by_address = FailureLimiter(settings.failures_per_address, window, keys)
        self.by_prefix = FailureLimiter(settings.failures_per_prefix, window, keys)

    def authenticate(self, raw_token: str, address: str) -> Principal:
        from gpupool.model import AuthenticationFailed
        from gpupool.scheduler import tokens
        from gpupool.scheduler.database import unit_of_work

        prefix = tokens.token_prefix(raw_token)
        self._refuse_if_limited(address, prefix)
        try:
            with unit_of_work(self.engine) as session:
                user = tokens.authenticate(session, raw_token)
                return Principal(user.name, user.role)
        except AuthenticationFailed as exc:
            self.by_address.fail(address)
            if prefix is not None:
                self.by_prefix.fail(prefix)
            self._audit_failure(prefix, address, exc.message)
            raise HTTPException(
                401, INVALID, headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'}
            ) from None

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

    def _audit_failure(self, prefix: str | None, address: str, reason: str) -> None:
        from gpupool.scheduler.database import unit_of_work
        from gpupool.scheduler.permissions import audit

        target = f"token {prefix}" if prefix is not None else "token (malformed)"
        details = {"token_prefix": prefix, "client": address, "reason": reason}
        log.warning("authentication failed", extra=details)
        try:
            with unit_of_work(self.engine) as session:
                audit(
                    session,
                    UNAUTHENTICATED_ACTOR,
                    "auth.failed",
                    target,
                    after=details,
                    outcome="denied",
                )
        except Exception as exc:  # the 401 must not turn into a 500 if the audit cannot be written
            log.error("cannot audit a failed authentication: %s", str(exc).splitlines()[0])


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


def authenticated(request: Request) -> Principal:
    """FastAPI dependency: the request's Principal, or 401/429."""
    authenticator: Authenticator = request.app.state.authenticator
    principal = authenticator.authenticate(bearer_token(request), client_address(request))
    request.state.user = principal.name  # for the access log line
    return principal
