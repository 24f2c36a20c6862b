"""The app factory: one engine, one authenticator and one metrics registry per process.

``create_app(settings)`` builds the FastAPI app; ``create_app_from_env`` is the
factory uvicorn imports in each worker (`gpupool serve` passes the settings
through GPUPOOL_SERVER_SETTINGS). Everything under ``/api/v1`` needs a bearer
token; ``/healthz`` and ``/readyz`` do not; ``/metrics`` needs an admin's or an
auditor's token (it shows every domain's queue and every programme's spend).
The web dashboard's pages are under ``/ui`` (gpupool.server.dashboard).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpupool.model import GpupoolError
from gpupool.server import problems
from gpupool.server.auth import Authenticator
from gpupool.server.metrics import Metrics
from gpupool.server.middleware import RequestContext
from gpupool.server.settings import Settings
from gpupool.server.submissions import GroupCommit

SETTINGS_ENV = "GPUPOOL_SERVER_SETTINGS"
log = logging.getLogger("gpupool.server")


def create_app(settings: Settings) -> FastAPI:
    from gpupool import __version__
    from gpupool.scheduler.database import make_engine

    engine = make_engine(settings.database_url, pool_size=settings.threads)
    app = FastAPI(
        title="gpupool",
        version=__version__,
        description="Shared GPU allocation for public compute platforms (docs/service.md).",
        openapi_url="/openapi.json",
        docs_url=None,  # the interactive pages load scripts from a CDN; the spec is enough
        redoc_url=None,
        lifespan=_lifespan,
        **_no_native_telemetry(),
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.authenticator = Authenticator(engine, settings)
    app.state.metrics = Metrics(engine)
    app.state.submissions = GroupCommit(engine)
    _handle_errors(app)
    _add_routes(app)
    app.openapi = lambda: _openapi(app)
    app.add_middleware(
        RequestContext,
        max_body_bytes=settings.max_body_bytes,
        observe=app.state.metrics.observe,
    )
    return app


def _no_native_telemetry() -> dict:
    """FastAPI 0.165+ asks OpenTelemetry on every request whether anyone listens
    (about a tenth of a submission's CPU here); gpupool's metrics are Prometheus'
    (/metrics), so it is switched off where the option exists."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app_from_env() -> FastAPI:
    """uvicorn's factory in each worker process."""
    raw = os.environ.get(SETTINGS_ENV)
    fields = json.loads(raw) if raw else {}
    if "metrics_roles" in fields:
        fields["metrics_roles"] = tuple(fields["metrics_roles"])
    return create_app(Settings(**fields))


def settings_env(settings: Settings) -> str:
    return json.dumps(asdict(settings))


@asynccontextmanager
async def _lifespan(app: FastAPI):
    import anyio.to_thread

    from gpupool.scheduler.database import ensure_schema

    # as many handler threads as pooled connections: none waits for a connection
    anyio.to_thread.current_default_thread_limiter().total_tokens = app.state.settings.threads
    try:
        ensure_schema(app.state.engine)  # a fresh database gets the schema; an old one is refused
    except GpupoolError as exc:
        log.error("database not ready: %s", exc)  # /readyz says so until it is fixed
    yield
    app.state.submissions.close()  # what was queued is written (and answered) first
    app.state.authenticator.checks.close()
    app.state.engine.dispose()


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, plus the Problem schema and the bearer scheme on every
    route that needs a token (all but the health probes)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    problem = problems.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    spec["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "gpupool token create"}
    }
    for path, operations in spec["paths"].items():
        if path not in ("/healthz", "/readyz"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
    app.openapi_schema = spec
    return spec


def _handle_errors(app: FastAPI) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    app.add_exception_handler(GpupoolError, problems.handle_gpupool_error)
    app.add_exception_handler(StarletteHTTPException, problems.handle_http_error)
    app.add_exception_handler(RequestValidationError, problems.handle_validation_error)
    app.add_exception_handler(SQLAlchemyError, problems.handle_database_error)


def _add_routes(app: FastAPI) -> None:
    from gpupool.server.dashboard import web as dashboard
    from gpupool.server.routes import (
        accounting,
        agents,
        audit,
        exports,
        health,
        jobs,
        platform,
        policy,
        schedule,
        tokens,
        users,
    )

    app.include_router(health.router)
    routers = (jobs, platform, users, tokens, policy, schedule, accounting, audit, exports, agents)
    for module in routers:
        app.include_router(module.router)
    app.include_router(dashboard.router)  # /ui: HTML pages, not in the OpenAPI document
