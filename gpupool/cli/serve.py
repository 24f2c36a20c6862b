"""`gpupool serve`: the HTTP API (gpupool.server) on uvicorn.

The server is the only process that needs the database URL (--db or
GPUPOOL_DATABASE_URL); users reach it with tokens. A fresh database gets the
schema before the workers start; one at an older revision is reported in the
log and by /readyz until `gpupool db upgrade` runs.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import local_database


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="TCP port (0: any free port)."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes."),
    max_body: int = typer.Option(
        1024 * 1024, "--max-body", min=1024, help="Largest request body accepted, in bytes."
    ),
    forwarded_allow_ips: str = typer.Option(
        "127.0.0.1",
        "--forwarded-allow-ips",
        help="Proxies whose X-Forwarded-For names the client (comma-separated, or *).",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, routes under /api/v1)."""
    import os
    import tempfile

    import uvicorn

    from gpupool.server.app import SETTINGS_ENV, settings_env
    from gpupool.server.logs import log_config
    from gpupool.server.settings import Settings

    settings = Settings(database_url=local_database(ctx, "serve"), max_body_bytes=max_body)
    _prepare_schema(settings.database_url)
    os.environ[SETTINGS_ENV] = settings_env(settings)
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.TemporaryDirectory(prefix="gpupool-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.name
    try:
        uvicorn.run(
            "gpupool.server.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=log_config(log_level.upper()),
            access_log=False,
            proxy_headers=True,
            forwarded_allow_ips=forwarded_allow_ips,
            server_header=False,
        )
    finally:
        if metrics_dir is not None:
            metrics_dir.cleanup()


def _prepare_schema(url: str | None) -> None:
    """Upgrade a fresh database once, before several workers could race to."""
    import logging

    from gpupool.model import GpupoolError
    from gpupool.scheduler.database import ensure_schema, make_engine

    engine = make_engine(url)
    try:
        ensure_schema(engine)
    except GpupoolError as exc:
        logging.getLogger("gpupool.server").error("database not ready: %s", exc)
        typer.echo(f"warning: {exc} (serving anyway; /readyz reports it)", err=True)
    finally:
        engine.dispose()
