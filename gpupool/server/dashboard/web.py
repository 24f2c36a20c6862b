"""The web dashboard under /ui: server-rendered pages in the API's own process.

Log-in: the user pastes an API token; the server checks it exactly as it
checks a bearer token (``Authenticator.authenticate``: slow hash, expiry,
revocation, failure limits and ``auth.failed`` audit rows) and keeps it in a
cookie that scripts cannot read (HttpOnly), that no other site's page can
make the browser send (SameSite=Strict), limited to /ui, and Secure when the
request came over HTTPS. Every page checks the cookie's token again, so a
revoked or expired token logs the browser out on its next page. The API
itself never reads this cookie (it wants ``Authorization: Bearer``), so a
page elsewhere cannot drive the API with it.

Forms (log in, log out) carry a CSRF token that must equal the value of a
second HttpOnly, SameSite=Strict cookie (double submit), compared in
constant time. The pages change nothing on the platform.

Each page reads its data through gpupool.server.dashboard.data as the
logged-in user, in one unit of work, so a refusal is a 403 page and an
audit row, and another organisation's job is a 404 page like a missing one.
Every response carries a Content-Security-Policy that allows no script at all
and no inline style, ``frame-ancestors 'none'``, ``nosniff`` and
``Cache-Control: no-store``. Templates are Jinja2 with autoescaping on;
charts are inline SVG built by gpupool.server.dashboard.charts.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import secrets
from collections.abc import Callable
from importlib import resources
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from gpupool.model import GpupoolError
from gpupool.server.auth import Principal, client_address

PREFIX = "/ui"
SESSION_COOKIE = "gpupool_session"
CSRF_COOKIE = "gpupool_csrf"
MAX_TOKEN_CHARS = 200
NAV = (
    ("/ui/pools", "Pools"),
    ("/ui/queue", "Queue"),
    ("/ui/usage", "Usage"),
    ("/ui/programmes", "Programmes"),
    ("/ui/policy", "Policy"),
)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_LARGEST_JOB_ID = 2_147_483_647

router = APIRouter(prefix=PREFIX, include_in_schema=False)


# --- rendering ---------------------------------------------------------------


@functools.cache
def _templates():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    environment = Environment(
        loader=PackageLoader("gpupool.server.dashboard", "templates"),
        autoescape=True,  # every {{ value }} is HTML-escaped unless it is Markup
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["money"] = lambda value: "-" if value is None else f"{value:,.2f}"
    environment.filters["hours"] = lambda value: "-" if value is None else f"{value:,.2f}"
    environment.filters["dash"] = lambda value: "-" if value in (None, "") else value
    return environment


def _secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def _render(
    request: Request,
    template: str,
    status: int = 200,
    user: Principal | None = None,
    **context,
) -> Response:
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    page = (
        _templates()
        .get_template(template)
        .render(
            user=user,
            nav=NAV,
            active=request.url.path,
            csrf=csrf,
            generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
            **context,
        )
    )
    response = _secured(HTMLResponse(page, status_code=status))
    if request.cookies.get(CSRF_COOKIE) != csrf:
        _set_cookie(request, response, CSRF_COOKIE, csrf)
    return response


def _error(request: Request, status: int, message: str, user: Principal | None = None):
    return _render(request, "error.html", status, user, title=_TITLES.get(status), message=message)


_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    422: "Not valid",
    429: "Too many attempts",
    503: "Unavailable",
}


# --- cookies, the session and CSRF -------------------------------------------


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _forget_session(response: Response) -> Response:
    response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


def _to_login(request: Request, reason: str | None = None) -> Response:
    query = {"next": request.url.path + (f"?{request.url.query}" if request.url.query else "")}
    if reason:
        query["reason"] = reason
    return _secured(RedirectResponse(f"{PREFIX}/login?{urlencode(query)}", status_code=303))


def _safe_next(target: str | None) -> str:
    """Only a dashboard path: never another site (``//evil``) after log-in."""
    if (
        not target
        or len(target) > 300
        or not target.startswith(f"{PREFIX}/")
        or "//" in target
        or "\\" in target
        or any(ord(c) < 32 or ord(c) == 127 for c in target)
        or target.startswith(f"{PREFIX}/login")
    ):
        return f"{PREFIX}/"
    return target


def _logged_in(request: Request) -> Principal | Response:
    """The cookie's user, or a response: to the log-in page, or 429."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return _to_login(request)
    authenticator = request.app.state.authenticator
    try:
        principal = authenticator.authenticate(token[:MAX_TOKEN_CHARS], client_address(request))
    except HTTPException as exc:
        if exc.status_code == 429:
            response = _error(request, 429, exc.detail)
            response.headers["Retry-After"] = exc.headers["Retry-After"]
            return response
        return _forget_session(_to_login(request, "expired"))
    request.state.user = principal.name  # for the access log line
    return principal


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        fields = parse_qs(body, keep_blank_values=True, max_num_fields=10)
    except ValueError:  # more fields than any of our forms has: nothing of ours
        return {}
    return {name: values[0] for name, values in fields.items()}


def _csrf_ok(request: Request, form: dict[str, str]) -> bool:
    expected = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get("csrf", "")
    return bool(expected) and hmac.compare_digest(expected.encode(), sent.encode())


# --- pages -------------------------------------------------------------------


def _page(request: Request, template: str, title: str, build: Callable[..., dict]) -> Response:
    """Log-in check, then ``build(session, user)`` in one unit of work, then the page."""
    from gpupool.scheduler.database import unit_of_work
    from gpupool.server.problems import status_of

    user = _logged_in(request)
    if isinstance(user, Response):
        return user
    try:
        with unit_of_work(request.app.state.engine) as session:
            context = build(session, user)
    except GpupoolError as exc:
        status = status_of(exc)
        if status == 503:  # the message names the database: for the log, not the page
            raise
        return _error(request, status, str(exc), user)
    return _render(request, template, 200, user, title=title, **context)


@router.get("")
@router.get("/")
def home() -> Response:
    return _secured(RedirectResponse(f"{PREFIX}/pools", status_code=303))


@router.get("/login")
def login_form(request: Request, next: str | None = None, reason: str | None = None):
    message = "Your session ended: log in again." if reason == "expired" else None
    return _render(request, "login.html", title="Log in", next=_safe_next(next), message=message)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    target = _safe_next(form.get("next"))
    if not _csrf_ok(request, form):
        return _render(
            request,
            "login.html",
            403,
            title="Log in",
            next=target,
            message="The form had expired; please try again.",
        )
    token = form.get("token", "").strip()[:MAX_TOKEN_CHARS]
    if not token:
        return _render(
            request, "login.html", 401, title="Log in", next=target, message="Paste a token."
        )
    authenticator = request.app.state.authenticator
    try:
        principal = await run_in_threadpool(
            authenticator.authenticate, token, client_address(request)
        )
    except HTTPException as exc:
        message = exc.detail if exc.status_code == 429 else "That token is not valid."
        return _render(
            request, "login.html", exc.status_code, title="Log in", next=target, message=message
        )
    request.state.user = principal.name
    response = _secured(RedirectResponse(target, status_code=303))
    _set_cookie(request, response, SESSION_COOKIE, token)
    _set_cookie(request, response, CSRF_COOKIE, secrets.token_urlsafe(32))  # a fresh one
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    if not _csrf_ok(request, form):
        return _error(request, 403, "The form had expired; reload the page and log out again.")
    response = _secured(RedirectResponse(f"{PREFIX}/login", status_code=303))
    return _forget_session(response)


@router.get("/pools")
def pools_page(request: Request) -> Response:
    from gpupool.server.dashboard import data

    return _page(request, "pools.html", "Pools", lambda s, u: data.overview(s, u.name))


@router.get("/queue")
def queue_page(request: Request) -> Response:
    from gpupool.server.dashboard import data

    def build(session, user: Principal) -> dict:
        return data.queue(session, user.name, *_paging(request))

    return _page(request, "queue.html", "Queue", build)


def _paging(request: Request) -> tuple[int | None, int | None, int | None]:
    """?after= / ?before= / ?limit= of a paged page (a bad one: a 422 page naming it)."""
    from gpupool import limits
    from gpupool.scheduler.service import positive_int

    values = []
    for name in ("after", "before", "limit"):
        text = request.query_params.get(name)
        bound = limits.JOB_PAGE if name == "limit" else limits.ID
        values.append(None if text is None else positive_int(text[:40], name, bound))
    return values[0], values[1], values[2]


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str) -> Response:
    from gpupool.server.dashboard import data
    from gpupool.server.deps import other_orgs_hidden

    number = int(job_id) if job_id.isdigit() and len(job_id) <= 10 else 0
    if not 0 < number <= _LARGEST_JOB_ID:
        user = _logged_in(request)
        if isinstance(user, Response):
            return user
        return _error(request, 404, f"job id: no job with id {job_id}", user)

    def build(session, user: Principal) -> dict:
        with other_orgs_hidden(session, user, number):
            return data.job(session, user.name, number)

    return _page(request, "job.html", f"Job {number}", build)


@router.get("/usage")
def usage_page(request: Request, by: str = "domain") -> Response:
    from gpupool.server.dashboard import data

    by = by[:16]
    return _page(request, "usage.html", "Usage", lambda s, u: data.usage(s, u.name, by))


@router.get("/programmes")
def programmes_page(request: Request) -> Response:
    from gpupool.scheduler import clock
    from gpupool.server.dashboard import data

    now = clock.now_epoch()
    return _page(
        request, "programmes.html", "Programmes", lambda s, u: data.programmes(s, u.name, now)
    )


@router.get("/policy")
def policy_page(request: Request) -> Response:
    from gpupool.server.dashboard import data

    build = lambda s, u: data.policy_history(s, u.name)  # noqa: E731
    return _page(request, "policy.html", "Policy history", build)


@router.get("/static/dashboard.css")
def stylesheet() -> Response:
    text = resources.files("gpupool.server.dashboard").joinpath("static/dashboard.css").read_text()
    response = Response(text, media_type="text/css")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@router.get("/{rest:path}")
def unknown_page(request: Request, rest: str) -> Response:
    return _error(request, 404, "There is no such page.")
