"""`gpupool schedule [--dry-run] [--json]`: one scheduling round, live.

Runs gpupool.scheduler.rounds.run_active_round with the active policy version (FIFO
when none was applied) in one transaction, holding the same round lock as
`gpupool scheduler run` (it waits for a daemon's round in progress, saying so
on stderr), then prints what started where, what timed out, and why every
other pending job waits, and names the jobs and rows the round set aside for
bad stored data (gpupool.scheduler.quarantine). --dry-run computes the same
round and writes nothing.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import JSON_OPTION, echo, platform, print_json, render


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)


def schedule(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the decision; write nothing."),
    grace: str | None = typer.Option(
        None, "--grace", help="Timeout grace past a job's estimate, e.g. 10%+5m (see docs)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run one scheduling round with the active policy (waits for a running daemon's round)."""
    from gpupool.cli.daemon import configure_logging

    configure_logging()
    view = platform(ctx).schedule(dry_run, grace)
    started, waiting, policy = view["started"], view["waiting"], view["policy"]
    if as_json:
        print_json(view)
        return
    quarantined, set_aside = view.get("quarantined", {}), view.get("set_aside", {})
    timed_out, preempted = view["timed_out"], view["preempted"]
    label = "dry run" if dry_run else f"round {view['round']}"
    echo(
        f"{label} with {policy}: {len(started)} started, {len(waiting)} waiting"
        + (f", {len(timed_out)} timed out" if timed_out else "")
        + (f", {len(preempted)} preempted" if preempted else "")
        + (f", {len(quarantined)} quarantined" if quarantined else "")
    )
    for job_id, reason in sorted(quarantined.items(), key=lambda item: int(item[0])):
        echo(f"job {job_id} {'would be ' if dry_run else ''}failed: {reason}")
    for target, reason in sorted(set_aside.items()):
        echo(f"{target} set aside: {reason}")
    for job_id, what in sorted(view.get("lost", {}).items(), key=lambda item: int(item[0])):
        echo(f"job {job_id} {what}: its site's agent is lost (docs/sites.md)")
    if started:
        render(
            started,
            [
                ("job", "job"),
                ("org", "org"),
                ("gpus", "GPUs"),
                ("pool", "pool"),
                ("nodes", "nodes"),
                ("cost", "cost"),
                ("org_pays", "org pays"),
                ("why", "why this pool"),
            ],
            False,
            title="started",
        )
    if waiting:
        render(
            waiting,
            [("job", "job"), ("org", "org"), ("gpus", "GPUs"), ("reason", "waiting because")],
            False,
            title="waiting",
        )
