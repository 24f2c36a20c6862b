"""Entry point: `gpupool`. Sub-command groups live in sibling modules.

Errors: any GpupoolError escaping a command is printed as one line on stderr
(``error: <location>: <message>``) with exit code 2, never as a traceback.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from gpupool.model import GpupoolError


class _FriendlyErrors(TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GpupoolError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_FriendlyErrors,
    no_args_is_help=True,
    help="gpupool: shared GPU allocation for public compute platforms.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(
    ctx: typer.Context,
    db: str | None = typer.Option(
        None,
        "--db",
        envvar="GPUPOOL_DATABASE_URL",
        help="Database URL (default: sqlite file gpupool.db in the current directory).",
    ),
    user: str | None = typer.Option(
        None, "--as", envvar="GPUPOOL_USER", help="Act as this user (default: the OS user)."
    ),
) -> None:
    ctx.obj = {"db": db, "user": user}


def _register() -> None:
    # Each module defines `app` (a Typer group) or `register(app)` for top-level commands.
    from gpupool.cli import admin, db_cmd, jobs, policy, schedule, simulate, vouchers

    app.add_typer(jobs.app, name="job", help="Submit, list, show and cancel jobs.")
    app.add_typer(db_cmd.app, name="db", help="Database schema: upgrade, current revision.")
    app.add_typer(policy.app, name="policy", help="Policy documents: validate, apply, history.")
    app.add_typer(simulate.app, name="simulate", help="Replay scenarios: run, compare schemes.")
    app.add_typer(vouchers.programme_app, name="programme", help="Subsidy programmes: add, list.")
    app.add_typer(vouchers.voucher_app, name="voucher", help="Compute vouchers: award, list.")
    admin.register(app)
    schedule.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
