"""Entry point: `gpupool`. Sub-command groups live in sibling modules.

Errors: any GpupoolError escaping a command is printed as one line on stderr
(``error: <location>: <message>``) with exit code 2, never as a traceback. The
message often quotes user input, so it is printed visibly escaped
(gpupool.safe_text.terminal): no raw escape sequence or line break reaches stderr.
See gpupool.cli.errors.

Start-up: importing this module imports no Typer; ``app`` (the Typer app) is
built on first use. :func:`main` first offers the command line to
gpupool.cli.fast, which runs a plain `job submit` without Typer (whose
per-parameter validators cost more than the submission), and otherwise runs
the app.
"""

import sys

OPTIONS_HELP = {
    "db": "Database URL (default: sqlite file gpupool.db in the current directory). "
    "Given, it is used even when a server is configured.",
    "as": "Act as this registered user, with its role (default: the platform owner, "
    "an admin: whoever holds the database URL). Not with a server: the token says who.",
}


def _build_app():
    import typer
    from typer.core import TyperGroup

    from gpupool.cli.errors import error_lines

    class _FriendlyErrors(TyperGroup):
        def invoke(self, ctx):
            try:
                return super().invoke(ctx)
            except Exception as exc:
                lines = error_lines(exc)
                if lines is None:
                    raise
                for line in lines:
                    typer.echo(line, err=True)
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
            None, "--db", envvar="GPUPOOL_DATABASE_URL", help=OPTIONS_HELP["db"]
        ),
        user: str | None = typer.Option(
            None, "--as", envvar="GPUPOOL_USER", help=OPTIONS_HELP["as"]
        ),
    ) -> None:
        ctx.obj = {"db": db, "user": user}

    _register(app)
    return app


def _register(app) -> None:
    # Each module defines `app` (a Typer group) or `register(app)` for top-level commands.
    from gpupool.cli import (
        admin,
        agent,
        daemon,
        db_cmd,
        export,
        jobs,
        login,
        policy,
        report,
        schedule,
        schema,
        serve,
        simulate,
        users,
        vouchers,
    )

    app.add_typer(jobs.app, name="job", help="Submit, list, show and cancel jobs.")
    app.add_typer(db_cmd.app, name="db", help="Database schema: upgrade, current revision.")
    app.add_typer(policy.app, name="policy", help="Policy documents: validate, apply, history.")
    app.add_typer(users.app, name="user", help="Users and roles: add, list, remove, set-role.")
    app.add_typer(users.token_app, name="token", help="API tokens: create, list, revoke.")
    app.add_typer(users.audit_app, name="audit", help="The audit log: list (admins, auditors).")
    app.add_typer(daemon.app, name="scheduler", help="The scheduling daemon: run.")
    app.add_typer(simulate.app, name="simulate", help="Replay scenarios: run, compare schemes.")
    app.add_typer(vouchers.programme_app, name="programme", help="Subsidy programmes: add, list.")
    app.add_typer(report.app, name="report", help="Accounting reports: usage, subsidies.")
    app.add_typer(vouchers.voucher_app, name="voucher", help="Compute vouchers: award, list.")
    app.add_typer(export.app, name="export", help="For sites' workload managers: kueue, slurm.")
    app.add_typer(agent.app, name="agent", help="A site's agent: run the jobs placed there.")
    app.add_typer(agent.site_app, name="site", help="Sites and their agents: list.")
    admin.register(app)
    login.register(app)
    schedule.register(app)
    schema.register(app)
    serve.register(app)


_app = None


def __getattr__(name: str):
    """``gpupool.cli.main.app``: the Typer app, built once on first use."""
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = _build_app()
    return _app


def main() -> None:
    from gpupool.cli import fast

    code = fast.run(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    __getattr__("app")()


if __name__ == "__main__":
    main()
