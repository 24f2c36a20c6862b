"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns has ``type``, ``title``, ``status`` and ``detail``;
``detail`` is the one line the CLI prints after ``error:`` for the same
failure (``--gpus: must be ...``). ``field`` names the input at fault by the
API's name for it: a JSON body field, a query or path parameter
(``gpus``, ``gpu_types``, ``state``, ``job_id``), ``Authorization`` for who
acts, or ``jobs.csv:7 gpus`` in an uploaded file; gpupool.fields is the one
table from the service's (CLI) names to these. ``errors`` lists each problem
of a batch or a policy document. ``request_id`` repeats the X-Request-ID header.

Status codes, from the error's class (gpupool.model; ``STATUS_BY_CLASS`` is the
one table, most specific class first):

=====  =======================================================================
 400   a body that cannot be decoded at all (not UTF-8)
 401   no bearer token, or one that is unknown, expired or revoked
 403   PermissionDenied: the user's role may not do this
 404   NotFound (an object the URL or a query names), an unknown route, and
       another organisation's job (indistinguishable from a missing one)
 409   Conflict: a name that already exists, a submit key used with other
       content, the last admin removed or demoted; IllegalTransition (a job
       state change, a Conflict too); a concurrent write that collided
 413   a request body over the size limit
 422   any other GpupoolError (bad input, including a POST body naming an org,
       GPU type or programme that does not exist), bodies of the wrong shape
 429   too many failed authentications from this address or token prefix
 503   the database is unreachable or its schema is not at this gpupool's head
=====  =======================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpupool.model import Conflict, GpupoolError, NotFound, PermissionDenied
from gpupool.server import logs
from gpupool.server.routes import API_PREFIX

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("gpupool.server")

_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    422: "invalid",
    429: "rate-limited",
    500: "internal",
    503: "unavailable",
}
_DATABASE_LOCATION = "--db"  # gpupool.scheduler.database's errors (unreachable, old schema)


class ProblemItem(BaseModel):
    field: str | None = None
    detail: str
    line: int | None = None


class Problem(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[ProblemItem] | None = None
    request_id: str | None = None


def problem_type(status: int) -> str:
    return f"urn:gpupool:problem:{_SLUGS.get(status, 'error')}"


def problem(
    status: int,
    detail: str,
    field: str | None = None,
    errors: Sequence[dict] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict = {
        "type": problem_type(status),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    if errors is not None:
        body["errors"] = list(errors)
    current = logs.request_id.get()
    if current is not None:
        body["request_id"] = current
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


# The service layer's error classes and their statuses; any other GpupoolError is a 422.
STATUS_BY_CLASS: tuple[tuple[type[GpupoolError], int], ...] = (
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),  # IllegalTransition included
)


def status_of(exc: GpupoolError) -> int:
    if exc.location == _DATABASE_LOCATION:
        return 503
    for kind, status in STATUS_BY_CLASS:
        if isinstance(exc, kind):
            return status
    return 422


def _line(location: str | None) -> int | None:
    """7 for ``jobs.csv:7 gpus``; None without a line."""
    head = (location or "").split(" ")[0]
    _, colon, number = head.rpartition(":")
    return int(number) if colon and number.isdigit() else None


def _item(location: str | None, message: str) -> dict:
    text = f"{location}: {message}" if location else message
    return {"field": location, "detail": text, "line": _line(location)}


def _file_of(location: str | None) -> str | None:
    head = (location or "").split(" ")[0]
    name, colon, _ = head.rpartition(":")
    return name if colon else None


def gpupool_error(exc: GpupoolError, field_of=lambda location: location) -> JSONResponse:
    """The problem for any GpupoolError, batches and policy documents included;
    ``field_of`` names a location's input as the API does."""
    from gpupool.policies.document import PolicyDocumentError
    from gpupool.scheduler.service import BatchError

    status = status_of(exc)
    if status == 503:  # the message names the database server: for the log, not the client
        log.error("database not usable: %s", exc)
        return problem(
            503,
            "the service's database is unreachable or not migrated; try again later",
            headers={"Retry-After": "5"},
        )
    headers = None
    if isinstance(exc, BatchError):
        items = [_item(e.location, e.message) for e in exc.errors]
        where = _file_of(exc.errors[0].location) if exc.errors else None
        source = f" in {where}" if where else ""
        detail = f"{len(items)} bad row(s){source}; nothing submitted"
        return problem(status, detail, items[0]["field"] if items else None, items, headers)
    if isinstance(exc, PolicyDocumentError):
        items = [_item(where, what) for where, what in exc.problems]
        where = _file_of(exc.problems[0][0]) if exc.problems else None
        detail = f"{len(items)} problem(s) in {where or 'the policy document'}"
        return problem(status, detail, items[0]["field"] if items else None, items, headers)
    return problem(status, str(exc), field_of(exc.location), headers=headers)


def api_fields(request: Request):
    """location -> the API's field name on this request's route (gpupool.fields)."""
    from gpupool.fields import api_field

    route = request.scope.get("route")
    path = getattr(route, "path", "").removeprefix(API_PREFIX)
    return lambda location: api_field(location, request.method, path)


async def handle_gpupool_error(request: Request, exc: GpupoolError) -> JSONResponse:
    field_of = api_fields(request)
    if isinstance(exc, NotFound) and request.method == "POST" and not request.path_params:
        # The body names a missing object (an org, a GPU type): the target, a
        # collection, exists; the content is what is wrong.
        return problem(422, str(exc), field_of(exc.location))
    return gpupool_error(exc, field_of)


async def handle_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and detail == "Not Found":
        detail = "no such endpoint"
    return problem(status, detail, headers=getattr(exc, "headers", None))


async def handle_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body or parameter of the wrong shape: each problem named by its field."""
    items = []
    for error in exc.errors():
        field = _field_name(error.get("loc", ()))
        items.append(_item(field, str(error.get("msg", "invalid"))))
    first = items[0] if items else {"field": None, "detail": "invalid request"}
    return problem(422, first["detail"], first["field"], items)


def _field_name(loc: Sequence) -> str:
    """``("body", "jobs", 0, "gpus")`` -> ``jobs[0].gpus``; a query or path parameter
    by its name (``state``, ``job_id``); a header as ``header <name>``."""
    parts = list(loc)
    kind = parts.pop(0) if parts and parts[0] in ("body", "query", "path", "header") else None
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    if kind == "header" or (kind in ("query", "path") and not name):
        return f"{kind} {name}" if name else kind
    return name or "body"


async def handle_database_error(_request: Request, exc: Exception) -> JSONResponse:
    """A SQLAlchemy error escaping a route: the transaction was rolled back."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    if isinstance(exc, IntegrityError):
        return problem(409, "a concurrent change conflicts with this one; nothing was written")
    if isinstance(exc, OperationalError):
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        return problem(
            503, "database unavailable; nothing was written", headers={"Retry-After": "5"}
        )
    log.exception("database error")
    return problem(500, "internal error; nothing was written")


async def handle_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return problem(500, "internal error")


# The responses every API route may give, for the OpenAPI document (the Problem
# schema itself is added to its components by gpupool.server.app).
def _content() -> dict:
    return {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def responses(*statuses: int) -> dict:
    return {
        status: {"description": HTTPStatus(status).phrase, "content": _content()}
        for status in statuses
    }


COMMON = (400, 401, 403, 404, 409, 413, 422, 429, 503)
