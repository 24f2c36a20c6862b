"""One pure ASGI middleware around every request: id, size limit, log line, latency.

- X-Request-ID: a well-formed id sent by the client (or a proxy) is kept, any
  other gets a fresh one; it is echoed on the response, set in the log context
  and put in problem bodies.
- Body size: a Content-Length over the limit is answered 413 before a byte of
  the body is read; a body without one (chunked) is counted as it arrives and
  refused with 413 as soon as it passes the limit.
- One JSON access log line per request (method, path, route, status, ms,
  client, user) and one observation of the latency histogram, labelled with
  the route template (``/api/v1/jobs/{job_id}``) so labels stay few.
- An exception no handler turned into a response becomes a logged 500 problem
  (with the request id), never a traceback on the wire.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpupool.server import logs
from gpupool.server.problems import problem

log = logging.getLogger("gpupool.server.access")
_GOOD_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestContext:
    def __init__(self, app: ASGIApp, max_body_bytes: int, observe=None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.observe = observe  # (method, route, status, seconds) -> None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        rid = _request_id(scope)
        token = logs.request_id.set(rid)
        status = {"code": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if _declared_length(scope) > self.max_body_bytes:
                await self._too_large(scope, receive, send_with_id)
            else:
                await self.app(scope, self._counting(receive), send_with_id)
        except Exception:
            log.exception("unhandled error")
            if not status["started"]:
                await problem(500, "internal error")(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - began
            route = _route(scope)
            if self.observe is not None:
                self.observe(scope["method"], route, status["code"], seconds)
            _access_line(scope, route, status["code"], seconds)
            logs.request_id.reset(token)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, _too_large_text(limit))
            return message

        return counted

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, _too_large_text(self.max_body_bytes))
        response.headers["connection"] = "close"  # the unread body is not drained
        await response(scope, receive, send)


def _too_large_text(limit: int) -> str:
    return f"request body over the limit of {limit} bytes; nothing was read"


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _GOOD_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _access_line(scope: Scope, route: str, status: int, seconds: float) -> None:
    client = scope.get("client")
    state = scope.get("state") or {}
    log.info(
        "%s %s %s",
        scope["method"],
        scope["path"],
        status,
        extra={
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "client": client[0] if client else None,
            "user": state.get("user"),
        },
    )
