"""`gpupool job ...`: submit, submit-batch, list, show, cancel, finish, reap.

Numbers are taken as text and validated by the service, so a bad value gets
the same one-line `error: --gpus: ...` as every other bad input (not click's
usage box). Each command is one transaction.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import JSON_OPTION, echo, platform, print_json, render

app = typer.Typer(no_args_is_help=True)

JOB_COLUMNS = [
    ("id", "id"),
    ("name", "name"),
    ("org", "org"),
    ("domain", "domain"),
    ("gpus", "GPUs"),
    ("gpu_types", "GPU types"),
    ("hours", "hours"),
    ("state", "state"),
    ("pool", "pool"),
    ("wait_reason", "waiting because"),
]


def _job_id(value: str) -> int:
    from gpupool.scheduler.service import positive_int

    return positive_int(value, "job id")


@app.command()
def submit(
    ctx: typer.Context,
    org: str = typer.Option(..., "--org", help="Organisation the job runs for."),
    gpus: str = typer.Option(..., "--gpus", help="GPUs the job needs at once (a gang)."),
    hours: str = typer.Option(..., "--hours", help="Estimated runtime on an A100-class GPU."),
    gpu_type: list[str] = typer.Option(
        [], "--gpu-type", help="A GPU type the job can run on (repeat; default: any)."
    ),
    name: str = typer.Option("", "--name", help="A name for the job."),
    priority: str = typer.Option("0", "--priority", help="Per-job priority boost (admins)."),
    key: str | None = typer.Option(
        None, "--key", help="Idempotency key: resubmitting with the same key is a no-op."
    ),
    command: list[str] = typer.Argument(
        None, metavar="[-- COMMAND [ARGS]...]", help="What the site runs (after --)."
    ),
    script: str | None = typer.Option(
        None, "--script", help="Or a script file, run with /bin/sh (its text is stored)."
    ),
    workdir: str | None = typer.Option(None, "--workdir", help="The run's working directory."),
    env: list[str] = typer.Option([], "--env", help="NAME=value for the run (repeat)."),
    image: str | None = typer.Option(None, "--image", help="A container image to run it in."),
    stdout: str | None = typer.Option(None, "--stdout", help="File for its standard output."),
    stderr: str | None = typer.Option(None, "--stderr", help="File for its standard error."),
    job_class: str = typer.Option(
        "", "--class", help="The job's class (`job-class list`): its speed on each GPU type."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Submit one job; prints its id.

    What it runs: `job submit ... -- python train.py --lr 3e-4`, or `--script run.sh`;
    with --workdir, --env K=V, --image, --stdout, --stderr. Without either, the job
    only books GPUs (its site runs it by hand and reports with `job finish`).
    """
    run = dict(workdir=workdir, image=image, stdout=stdout, stderr=stderr)
    payload = _payload(command or [], script, env, run)
    result = platform(ctx).submit_job(
        org, gpus, hours, gpu_type, name, priority, key, payload, job_class=job_class
    )
    if as_json:
        print_json(result)
    else:
        typer.echo(result["id"])


def _payload(command: list[str], script: str | None, env: list[str], run: dict) -> dict | None:
    """The payload the options give (checked by the service); None when none is given."""
    from gpupool.scheduler.payloads import parse_env

    payload = {k: v for k, v in run.items() if v is not None}
    if command:
        payload["argv"] = list(command)
    if script is not None:
        from gpupool.files import SCRIPT, read_text

        payload["script"] = read_text(script, SCRIPT)
    if env:
        payload["env"] = parse_env(env)
    return payload or None


@app.command("submit-batch")
def submit_batch(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="A .csv or .yaml file of jobs (all or none)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Submit every job in a CSV or YAML file in one transaction."""
    from gpupool.scheduler.service import BatchError

    try:
        results = platform(ctx).submit_batch(file)
    except BatchError as exc:
        for error in exc.errors:
            echo(f"error: {error}", err=True)
        echo(f"error: {len(exc.errors)} bad row(s) in {file}; nothing submitted", err=True)
        raise typer.Exit(2) from None
    ids = [result["id"] for result in results]
    if as_json:
        print_json(results)
    else:
        new = sum(result["created"] for result in results)
        typer.echo(f"submitted {new} new job(s) of {len(ids)}: {' '.join(map(str, ids))}")


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state: list[str] = typer.Option([], "--state", help="Only jobs in this state (repeat)."),
    org: str | None = typer.Option(None, "--org", help="Only this organisation's jobs."),
    limit: str | None = typer.Option(
        None, "--limit", help="Jobs per page (default 100, at most 1,000: gpupool/limits.py)."
    ),
    after: str | None = typer.Option(
        None, "--after", metavar="JOB_ID", help="The page after this job (its next_after)."
    ),
    before: str | None = typer.Option(
        None, "--before", metavar="JOB_ID", help="The page before this job (previous_before)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List jobs (oldest first) with the reason each pending job waits, one page at a time.

    A page holds --limit jobs in id order. --json prints {"jobs", "limit", "next_after",
    "previous_before"}: run again with --after NEXT_AFTER for the next page (null: the
    last page) or --before PREVIOUS_BEFORE for the one before. The table says on stderr
    how to get the next page.
    """
    from gpupool import limits
    from gpupool.model import GpupoolError, JobState
    from gpupool.scheduler.service import positive_int

    known = [s.value for s in JobState]
    for value in state:
        if value not in known:
            raise GpupoolError(
                f"unknown state {value!r}; one of {', '.join(known)}", location="--state"
            )
    size = (
        limits.JOB_PAGE_DEFAULT
        if limit is None
        else positive_int(limit, "--limit", limits.JOB_PAGE)
    )
    cursors = [
        None if v is None else positive_int(v, o)
        for v, o in ((after, "--after"), (before, "--before"))
    ]
    page = platform(ctx).list_jobs(state, org, size, *cursors)
    if as_json:
        print_json(page)
        return
    rows = page["jobs"]
    for row in rows:
        if row["state"] == "pending" and row["wait_reason"] is None:
            row["wait_reason"] = "not yet considered by a round"
    render(rows, JOB_COLUMNS, False, title="jobs")
    if page["next_after"] is not None:
        echo(f"more jobs: the next page is --after {page['next_after']}", err=True)


@app.command()
def show(
    ctx: typer.Context, job_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JSON_OPTION
) -> None:
    """Everything about one job, with where it ran."""
    view = platform(ctx).show_job(_job_id(job_id))
    if as_json:
        print_json(view)
        return
    why = _pool_reason(view)
    for key, value in view.items():
        if key not in ("placements", "accounting", "payload"):
            text = "-" if value is None else value
            if key == "pool" and why:
                text = f"{value} — {why}"
            echo(f"{key:>13}: {text}")
    _print_runs(view["placements"], why)
    _show_payload(view.get("payload"))
    _explain_price(view["accounting"])


def _print_runs(placements: list[dict], why: str | None) -> None:
    """Each run: where and when, why there; when and why a run was paused (preempted),
    and the run that resumed it (its label says so)."""
    paused = False
    for index, placement in enumerate(placements):
        reason = placement["reason"]
        if why and index == len(placements) - 1:
            reason = None  # on the pool line already
        label = "resumed on" if paused else "ran on"
        exit_code = placement.get("exit_code")
        echo(
            f"{label:>13}: {placement['pool']} nodes {placement['nodes']} "
            f"from {placement['started_at']} to {placement['ended_at'] or 'now'}"
            + (f" — {reason}" if reason else "")
            + ("" if exit_code is None else f", exit code {exit_code}")
            + (f" ({placement['run_detail']})" if placement.get("run_detail") else "")
        )
        paused = bool(placement.get("end_reason"))
        if paused:
            echo(f"{'paused':>13}: at {placement['ended_at']} — {placement['end_reason']}")


def _show_payload(payload: dict | None) -> None:
    """What the job runs, one field a line; the command quoted as a shell would take it."""
    if not payload:
        return
    import shlex

    if payload.get("argv"):
        echo(f"{'command':>13}: {shlex.join(payload['argv'])}")
    if payload.get("script") is not None:
        lines = payload["script"].splitlines()
        echo(f"{'script':>13}: {len(lines)} line(s), first: {lines[0] if lines else ''}")
    for field in ("workdir", "image", "stdout", "stderr"):
        if payload.get(field):
            echo(f"{field:>13}: {payload[field]}")
    for name, value in sorted((payload.get("env") or {}).items()):
        echo(f"{'env':>13}: {name}={value}")


def _pool_reason(view: dict) -> str | None:
    """Why the policy chose the job's current pool; None when the job holds none
    (never ran, or requeued) or the placement predates stored reasons."""
    acc = view["accounting"]
    if acc is None or acc["pool"] != view["pool"]:
        return None
    return acc["pool_reason"]


def _explain_price(acc: dict | None) -> None:
    """Why this pool, why this price: the figures behind the job's ledger entries."""
    if acc is None:
        return
    echo(
        f"{'price':>13}: {acc['pool']} ({acc['site']}) {acc['gpu_type']} speed {acc['speed']:g}"
        + (f" for job class {acc['job_class']}" if acc.get("job_class") else "")
        + ", "
        f"{acc['price_per_gpu_hour']:.2f} per GPU-hour, estimate "
        f"{acc['estimated_runtime_hours']:g} h on this type"
    )
    typer.echo(
        f"{'charged':>13}: {acc['charged_gpu_hours']:g} GPU-hours, cost {acc['cost']:.2f}, "
        f"subsidy {acc['subsidy']:.2f}, org pays {acc['org_pays']:.2f}"
    )
    for source, amount in acc["subsidy_by_source"].items():
        echo(f"{'subsidy':>13}: {amount:.2f} from {source}")


@app.command()
def cancel(ctx: typer.Context, job_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Cancel a pending or running job (a running one frees its GPUs now)."""
    job = platform(ctx).cancel_job(_job_id(job_id))
    typer.echo(f"cancelled job {job['id']}")


@app.command()
def finish(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID"),
    failed: bool = typer.Option(False, "--failed", help="The job failed (default: completed)."),
    at: str | None = typer.Option(
        None, "--at", help="When it ended, ISO 8601 (default: now); not before it started."
    ),
) -> None:
    """A site reports a running job completed (or failed): frees its GPUs, charges its use."""
    job = platform(ctx).finish_job(_job_id(job_id), failed, at)
    typer.echo(f"job {job['id']} {job['state']}")


@app.command()
def reap(
    ctx: typer.Context,
    grace: str | None = typer.Option(
        None, "--grace", help="Timeout grace past a job's estimate, e.g. 10%+5m (see docs)."
    ),
) -> None:
    """Mark timed_out every running job past its estimate + grace (rounds do this too)."""
    reaped = platform(ctx).reap(grace)["timed_out"]
    typer.echo(
        f"{len(reaped)} job(s) timed out" + (f": {' '.join(map(str, reaped))}" if reaped else "")
    )
