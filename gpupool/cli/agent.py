"""`gpupool agent run`: a site's agent (gpupool.agents.agent), talking to `gpupool serve`.

It reads the server and token as every command does against a server
(GPUPOOL_URL + GPUPOOL_TOKEN, or the saved login) and refuses to run on the
database itself: an agent at a compute centre never holds the database URL.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import JSON_OPTION
from gpupool.limits import INTERVAL_SECONDS, Limit, check_text, read
from gpupool.model import GpupoolError

app = typer.Typer(no_args_is_help=True)
EXECUTORS = ("local", "slurm")
KILL_GRACE = Limit(
    "seconds between SIGTERM and SIGKILL", 0, 3_600, "a run that ignores SIGTERM for an "
    "hour holds its GPUs past its time"
)  # fmt: skip


@app.command()
def run(
    ctx: typer.Context,
    site: str = typer.Option(..., "--site", help="The site this agent runs (its token's)."),
    executor: str = typer.Option(
        "local", "--executor", help="How runs are started: local (child processes) or slurm."
    ),
    mapping: str | None = typer.Option(
        None, "--mapping", help="slurm: the mapping file (pool -> partition, GPU type -> GRES)."
    ),
    state_dir: str = typer.Option(
        "gpupool-agent", "--state-dir", help="Where the executor keeps each run's state."
    ),
    poll: str = typer.Option("5", "--poll", help="Seconds between steps."),
    kill_grace: str = typer.Option(
        "10", "--kill-grace", help="Seconds between SIGTERM and SIGKILL when a run is stopped."
    ),
    once: bool = typer.Option(False, "--once", help="One step, then exit (for tests, cron)."),
) -> None:
    """Pull the starts placed on SITE's pools, run them, report their ends, heartbeat."""
    import logging

    from gpupool.agents.agent import Agent
    from gpupool.agents.client import AgentApi
    from gpupool.cli.platform import server_credentials

    site = check_text(site, "--site")
    if executor not in EXECUTORS:
        raise GpupoolError(
            f"must be one of {', '.join(EXECUTORS)}, got {executor!r}", location="--executor"
        )
    if (executor == "slurm") != (mapping is not None):
        wanted = "the slurm executor needs --mapping" if mapping is None else "is for slurm only"
        raise GpupoolError(wanted, location="--mapping")
    poll_seconds = float(read(poll, INTERVAL_SECONDS, "--poll"))
    grace = float(read(kill_grace, KILL_GRACE, "--kill-grace"))
    if (ctx.obj or {}).get("db"):
        raise GpupoolError("an agent talks to a server, not the database", location="--db")
    server = server_credentials()
    if server is None:
        raise GpupoolError(
            "an agent needs a server: set GPUPOOL_URL and GPUPOOL_TOKEN (an agent's token)",
            location="GPUPOOL_URL",
        )
    from gpupool.cli.remote import check_url

    check_url(server[0], "GPUPOOL_URL")  # a bad URL is refused now, not retried forever
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    runner = _executor(executor, state_dir, grace, mapping)  # a bad mapping: before any call
    agent = Agent(AgentApi(*server), runner, site)
    try:
        agent.run(poll_seconds, once=once)
    except KeyboardInterrupt:
        pass
    finally:
        agent.api.close()


@app.command()
def starts(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """The starts placed on this agent's site: what `agent run` launches (agents only)."""
    from gpupool.cli.output import platform, print_json, render

    view = platform(ctx).agent_starts()
    if as_json:
        print_json(view)
        return
    rows = [
        {**start, "command": _command(start["payload"]), "nodes": str(start["nodes"])}
        for start in view["starts"]
    ]
    columns = [("job_id", "job"), ("run_id", "run"), ("pool", "pool"), ("nodes", "GPUs"),
               ("time_limit_s", "time limit (s)"), ("command", "command")]  # fmt: skip
    render(rows, columns, False, title=f"starts at {view['site']}")


def _command(payload: dict) -> str:
    import shlex

    return shlex.join(payload["argv"]) if payload.get("argv") else "(script)"


site_app = typer.Typer(no_args_is_help=True)


@site_app.command("list")
def list_sites(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Sites whose agent has called in: last heard from, reachable or lost (docs/sites.md)."""
    from gpupool.cli.output import platform, print_json, render

    rows = platform(ctx).list_sites()
    if as_json:
        print_json(rows)
        return
    columns = [("name", "site"), ("agent", "agent"), ("last_seen_at", "last heard from"),
               ("reachable", "reachable")]  # fmt: skip
    render(rows, columns, False, title="sites")


def _executor(kind: str, state_dir: str, kill_grace: float, mapping: str | None):
    if kind == "slurm":
        from gpupool.agents.slurm import SlurmExecutor
        from gpupool.agents.slurm_mapping import load_mapping

        return SlurmExecutor(load_mapping(mapping), state_dir)
    from gpupool.agents.local import LocalExecutor

    return LocalExecutor(state_dir, kill_grace_s=kill_grace)
