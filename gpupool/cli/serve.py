"""`gpupool serve`: the HTTP API (gpupool.server) on uvicorn.

The server is the only process that needs the database URL (--db or
GPUPOOL_DATABASE_URL); users reach it with tokens. A fresh database gets the
schema before the workers start; one at an older revision is reported in the
log and by /readyz until `gpupool db upgrade` runs.
"""

from __future__ import annotations

import ipaddress
import re

import typer

from gpupool.cli.output import local_database
from gpupool.limits import COMMENT, Limit, check_text, read
from gpupool.model import GpupoolError

PORT = Limit("TCP port", 0, 65_535, "a TCP port number", integer=True)
SERVER_WORKERS = Limit("worker processes", 1, 64, "a worker per core, at most", integer=True)
MAX_BODY = Limit(
    "request body bytes", 1024, 2**30, "bodies are JSON, never gigabytes", integer=True
)
LOG_LEVELS = ("debug", "info", "warning", "error")
# a DNS name: dot-separated labels of letters, digits and inner hyphens, the last not all digits
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*", re.ASCII)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: str = typer.Option("8080", "--port", help="TCP port (0: any free port)."),
    workers: str = typer.Option("1", "--workers", help="Worker processes (1 to 64)."),
    max_body: str = typer.Option(
        str(1024 * 1024), "--max-body", help="Largest request body accepted, in bytes."
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

    # every option is checked before anything binds or touches the database
    host, port, workers, max_body = _listen_options(host, port, workers, max_body)
    log_level = _log_level(log_level)
    check_text(forwarded_allow_ips, "--forwarded-allow-ips", COMMENT)
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


def _listen_options(host: str, port: str, workers: str, max_body: str) -> tuple:
    """The checked values, or a one-line error: nothing invalid reaches uvicorn's bind."""
    return (
        _host(host),
        int(read(port, PORT, "--port")),
        int(read(workers, SERVER_WORKERS, "--workers")),
        int(read(max_body, MAX_BODY, "--max-body")),
    )


def _host(text: str) -> str:
    """An IP address or a host name; anything else could resolve unexpectedly or not at all."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(text) and not text.rsplit(".", 1)[-1].isdigit():
        return text
    shown = text if len(text) <= 80 else text[:80] + "..."
    raise GpupoolError(f"must be an IP address or a host name, got {shown!r}", location="--host")


def _log_level(text: str) -> str:
    if text.strip().lower() in LOG_LEVELS:
        return text.strip().lower()
    shown = text if len(text) <= 80 else text[:80] + "..."
    raise GpupoolError(
        f"must be one of {', '.join(LOG_LEVELS)}, got {shown!r}", location="--log-level"
    )


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
