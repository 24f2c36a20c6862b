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

from gpupool.cli.output import JSON_OPTION, actor, db_url, echo, print_json, render, work


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
    from gpupool.scheduler import repository
    from gpupool.scheduler.daemon import locked_session, policy_label, run_locked_round
    from gpupool.scheduler.lifecycle import parse_grace
    from gpupool.scheduler.rounds import run_active_round

    grace_rule = parse_grace(grace)
    configure_logging()
    session_scope = work(ctx) if dry_run else locked_session(db_url(ctx), wait=True)
    with session_scope as session:
        if dry_run:
            result, active = run_active_round(session, dry_run=True, grace=grace_rule)
            label = policy_label(active)
        else:
            report = run_locked_round(session, actor(ctx), grace_rule)
            result, label = report.result, report.policy
        jobs = {j.id: j for j in repository.list_jobs(session)}
        started = [
            {
                "job": s.job_id,
                "org": jobs[s.job_id].org.name,
                "gpus": jobs[s.job_id].gpus,
                "pool": s.pool,
                "nodes": [list(n) for n in s.nodes],
                "cost": round(s.charge.cost, 2),
                "subsidy": round(s.charge.subsidy, 2),
                "org_pays": round(s.charge.org_pays, 2),
                "why": s.reason,
            }
            for s in result.started
        ]
        waiting = [
            {
                "job": job_id,
                "org": jobs[job_id].org.name,
                "gpus": jobs[job_id].gpus,
                "reason": str(reason),
            }
            for job_id, reason in sorted(result.waiting.items())
        ]
    policy = label
    if as_json:
        print_json(
            {
                "round": result.round_id,
                "dry_run": dry_run,
                "policy": policy,
                "started": started,
                "waiting": waiting,
                "preempted": result.preempted,
                "timed_out": result.timed_out,
                "skipped": {str(k): v for k, v in sorted(result.skipped.items())},
                "quarantined": {str(k): v for k, v in sorted(result.quarantined.items())},
                "set_aside": dict(sorted(result.set_aside.items())),
                "solve_seconds": round(result.solve_seconds, 4),
            }
        )
        return
    label = "dry run" if dry_run else f"round {result.round_id}"
    echo(
        f"{label} with {policy}: {len(started)} started, {len(waiting)} waiting"
        + (f", {len(result.timed_out)} timed out" if result.timed_out else "")
        + (f", {len(result.preempted)} preempted" if result.preempted else "")
        + (f", {len(result.quarantined)} quarantined" if result.quarantined else "")
    )
    for job_id, reason in sorted(result.quarantined.items()):
        echo(f"job {job_id} {'would be ' if dry_run else ''}failed: {reason}")
    for target, reason in sorted(result.set_aside.items()):
        echo(f"{target} set aside: {reason}")
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
