"""`gpupool schedule [--dry-run] [--json]`: one scheduling round, live.

Runs gpupool.scheduler.rounds.run_round with the active policy version (FIFO
when none was applied) in one transaction, then prints what started where
and why every other pending job waits. --dry-run computes the same round and
writes nothing.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import JSON_OPTION, print_json, render, work


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)


def schedule(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the decision; write nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run one scheduling round with the active policy."""
    from gpupool.scheduler import repository
    from gpupool.scheduler.rounds import active_policy, run_round

    with work(ctx) as session:
        active = active_policy(session)
        result = run_round(
            session,
            active.policy,
            dry_run=dry_run,
            policy_version=active.version,
            pricing=active.pricing,
        )
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
    policy = f"policy v{active.version} ({active.kind})" if active.version else "FIFO (default)"
    if as_json:
        print_json(
            {
                "round": result.round_id,
                "dry_run": dry_run,
                "policy": policy,
                "started": started,
                "waiting": waiting,
                "preempted": result.preempted,
                "completed": result.completed,
            }
        )
        return
    label = "dry run" if dry_run else f"round {result.round_id}"
    typer.echo(
        f"{label} with {policy}: {len(started)} started, {len(waiting)} waiting"
        + (f", {len(result.completed)} completed" if result.completed else "")
        + (f", {len(result.preempted)} preempted" if result.preempted else "")
    )
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
