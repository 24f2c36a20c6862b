"""Entry point: `gpupool`. Sub-command groups live in sibling modules.

Errors: any GpupoolError escaping a command is printed as one line on stderr
(``error: <location>: <message>``) with exit code 2, never as a traceback. The
message often quotes user input, so it is printed visibly escaped
(gpupool.safe_text.terminal): no raw escape sequence or line break reaches stderr.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from gpupool.model import GpupoolError
from gpupool.safe_text import terminal


class _FriendlyErrors(TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GpupoolError as exc:
            for line in _error_lines(exc):
                typer.echo(f"error: {terminal(line)}", err=True)
            raise typer.Exit(2) from None
        except (OSError, UnicodeError) as exc:
            typer.echo(f"error: {terminal(_io_problem(exc))}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            typer.echo(f"error: database: {terminal(_database_problem(exc))}", err=True)
            raise typer.Exit(2) from None


def _error_lines(exc: GpupoolError) -> list[str]:
    """One line per problem (a policy document lists all of its own), each escaped on
    its own, so a line break inside user text never starts a line."""
    problems = getattr(exc, "problems", None)
    if problems:
        return [f"{where}: {what}" for where, what in problems]
    return [str(exc)]


def _io_problem(exc: OSError | UnicodeError) -> str:
    """An unreadable input, a directory given as a file, a file that is not UTF-8."""
    if isinstance(exc, UnicodeError):
        return f"input is not UTF-8 text ({exc.__class__.__name__})"
    where = exc.filename if exc.filename is not None else "input"
    return f"{where}: {exc.strerror or exc}"


def _is_database_error(exc: Exception) -> bool:
    """A SQLAlchemy error escaping a command (checked by module: sqlalchemy stays unimported
    until a command needs it)."""
    return type(exc).__module__.startswith("sqlalchemy.")


def _database_problem(exc: Exception) -> str:
    """One line from a driver error (the transaction was rolled back: nothing written)."""
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{first} (nothing was written)"


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
        None,
        "--as",
        envvar="GPUPOOL_USER",
        help="Act as this registered user, with its role (default: the platform owner, "
        "an admin: whoever holds the database URL).",
    ),
) -> None:
    ctx.obj = {"db": db, "user": user}


def _register() -> None:
    # Each module defines `app` (a Typer group) or `register(app)` for top-level commands.
    from gpupool.cli import (
        admin,
        daemon,
        db_cmd,
        jobs,
        login,
        policy,
        report,
        schedule,
        serve,
        simulate,
        users,
        vouchers,
    )

    app.add_typer(jobs.app, name="job", help="Submit, list, show and cancel jobs.")
    app.add_typer(db_cmd.app, name="db", help="Database schema: upgrade, current revision.")
    app.add_typer(policy.app, name="policy", help="Policy documents: validate, apply, history.")
    app.add_typer(users.app, name="user", help="Users and roles: add, list (admins).")
    app.add_typer(users.token_app, name="token", help="API tokens: create, list, revoke.")
    app.add_typer(users.audit_app, name="audit", help="The audit log: list (admins, auditors).")
    app.add_typer(daemon.app, name="scheduler", help="The scheduling daemon: run.")
    app.add_typer(simulate.app, name="simulate", help="Replay scenarios: run, compare schemes.")
    app.add_typer(vouchers.programme_app, name="programme", help="Subsidy programmes: add, list.")
    app.add_typer(report.app, name="report", help="Accounting reports: usage, subsidies.")
    app.add_typer(vouchers.voucher_app, name="voucher", help="Compute vouchers: award, list.")
    admin.register(app)
    login.register(app)
    schedule.register(app)
    serve.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
