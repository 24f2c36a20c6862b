"""`gpupool db upgrade|current`: the schema revision of the database."""

from __future__ import annotations

import typer

from gpupool.cli.output import local_database

app = typer.Typer(no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Apply the packaged migrations up to the newest one (safe to repeat)."""
    from gpupool.scheduler.database import current_revision, make_engine
    from gpupool.scheduler.migrate import upgrade as run_upgrade

    engine = make_engine(local_database(ctx, "db upgrade"))
    try:
        before = current_revision(engine)
        run_upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"database already at revision {after}")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to revision {after}")


@app.command()
def current(ctx: typer.Context) -> None:
    """Show the database's schema revision."""
    from gpupool.scheduler.database import current_revision, make_engine
    from gpupool.scheduler.migrations import HEAD

    engine = make_engine(local_database(ctx, "db current"))
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    if revision is None:
        typer.echo(f"none (not initialised; newest is {HEAD})")
    else:
        note = "newest" if revision == HEAD else f"newest is {HEAD}: run `gpupool db upgrade`"
        typer.echo(f"{revision} ({note})")
