"""`gpupool user add|list`: who may do what (gpupool.scheduler.permissions).

While no user exists everyone acts as an admin; the first `user add` also
records the acting user as an admin, so nobody locks themselves out.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import JSON_OPTION, actor, echo, render, work

app = typer.Typer(no_args_is_help=True)


@app.command()
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The user's name (as given with --as / GPUPOOL_USER)."),
    role: str = typer.Option(..., "--role", help="admin or submitter."),
    org: str | None = typer.Option(None, "--org", help="The organisation a submitter acts for."),
) -> None:
    """Add a user (admins only)."""
    from gpupool.scheduler.permissions import add_user

    with work(ctx) as session:
        row = add_user(session, actor(ctx), name, role.strip(), org)
        where = f" for {row.org.name}" if row.org is not None else ""
    echo(f"added {row.role} {row.name}{where}")


@app.command("list")
def list_users(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List users and their roles (admins only)."""
    from gpupool.scheduler.permissions import list_users as users

    with work(ctx) as session:
        rows = users(session, actor(ctx))
    render(rows, [("name", "name"), ("role", "role"), ("org", "org")], as_json, title="users")
