"""`gpupool scheduler run`: the scheduling daemon (gpupool.scheduler.daemon).

Logs one line per round to stderr; SIGTERM or Ctrl-C finish the round in
progress and exit 0. Two daemons on one database are safe: by default the one
that finds the round lock held skips that round (``--wait`` waits instead).
"""

from __future__ import annotations

import typer

from gpupool.cli.output import actor, local_database

app = typer.Typer(no_args_is_help=True)

GRACE_HELP = (
    "How long past its estimate a job may run before it is marked timed_out: "
    "percent of the estimate plus minutes, e.g. 10%+5m (default: $GPUPOOL_TIMEOUT_GRACE "
    "or 10%+5m)."
)


def configure_logging() -> None:
    """Scheduler log lines go to whatever sys.stderr is when they are written."""
    import logging
    import sys

    from gpupool.safe_text import terminal

    class _CurrentStderr(logging.StreamHandler):
        def emit(self, record):
            self.stream = sys.stderr
            super().emit(record)

    class _VisibleText(logging.Formatter):
        """Log lines quote stored names and error messages: one visible line each."""

        def formatMessage(self, record):
            return terminal(super().formatMessage(record))

    logger = logging.getLogger("gpupool.scheduler")
    if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(_VisibleText("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@app.command()
def run(
    ctx: typer.Context,
    interval: str = typer.Option("10", "--interval", help="Seconds between rounds."),
    max_rounds: str | None = typer.Option(
        None, "--max-rounds", help="Stop after this many rounds (run or skipped)."
    ),
    grace: str | None = typer.Option(None, "--grace", help=GRACE_HELP),
    wait: bool = typer.Option(
        False, "--wait", help="Wait for another scheduler's round instead of skipping."
    ),
) -> None:
    """Run scheduling rounds continuously until SIGTERM / Ctrl-C."""
    from gpupool import limits
    from gpupool.scheduler.daemon import run_daemon
    from gpupool.scheduler.lifecycle import parse_grace
    from gpupool.scheduler.service import non_negative_float, positive_int

    seconds = non_negative_float(interval, "--interval", limits.INTERVAL_SECONDS)
    rounds = None if max_rounds is None else positive_int(max_rounds, "--max-rounds", limits.ROUNDS)
    configure_logging()
    summary = run_daemon(
        local_database(ctx, "scheduler run"),
        actor(ctx),
        seconds,
        rounds,
        parse_grace(grace),
        wait=wait,
    )
    if summary.failed and not summary.rounds:
        raise typer.Exit(1)
