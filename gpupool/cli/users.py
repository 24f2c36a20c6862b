"""`gpupool user add|list|remove|set-role`, `gpupool token ...`, `gpupool audit list`.

Who may do what is gpupool.scheduler.permissions' table (docs/security.md);
tokens are gpupool.scheduler.tokens'. A new token is printed once and never
again: only its hash is stored.
"""

from __future__ import annotations

import typer

from gpupool.cli.output import JSON_OPTION, echo, platform, print_json, render

app = typer.Typer(no_args_is_help=True)
token_app = typer.Typer(no_args_is_help=True)
audit_app = typer.Typer(no_args_is_help=True)


@app.command()
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The user's name (as given with --as / GPUPOOL_USER)."),
    role: str = typer.Option(..., "--role", help="admin, submitter, agent or auditor."),
    org: str | None = typer.Option(None, "--org", help="The organisation a submitter acts for."),
    site: str | None = typer.Option(None, "--site", help="The site an agent acts for."),
) -> None:
    """Add a user (admins only)."""
    user = platform(ctx).add_user(name, role.strip(), org, site)
    where = f" for {user['org']}" if user["org"] is not None else ""
    where += f" at {user['site']}" if user.get("site") else ""
    echo(f"added {user['role']} {user['name']}{where}")


@app.command()
def remove(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The user to remove."),
) -> None:
    """Remove a user and its API tokens (admins only; audited). Its tokens are refused
    from the next request on; the last admin cannot be removed."""
    view = platform(ctx).remove_user(name)
    echo(f"removed {view['role']} {view['name']} and {view['tokens_removed']} API token(s)")


@app.command("set-role")
def set_role(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The user."),
    role: str = typer.Argument(..., metavar="ROLE", help="admin, submitter, agent or auditor."),
    org: str | None = typer.Option(None, "--org", help="The organisation a submitter acts for."),
    site: str | None = typer.Option(None, "--site", help="The site an agent acts for."),
) -> None:
    """Give a user another role (admins only; audited); the last admin cannot be demoted."""
    user = platform(ctx).set_role(name, role.strip(), org, site)
    where = f" for {user['org']}" if user["org"] is not None else ""
    where += f" at {user['site']}" if user.get("site") else ""
    echo(f"{user['name']} is now {user['role']}{where}")


@app.command("list")
def list_users(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List users and their roles (admins and auditors)."""
    rows = platform(ctx).list_users()
    columns = [("name", "name"), ("role", "role"), ("org", "org"), ("site", "site")]
    render(rows, columns, as_json, title="users")


# --- tokens ------------------------------------------------------------------


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    user: str = typer.Argument(..., metavar="USER", help="The user the token acts as."),
    expires: str = typer.Option("90d", "--expires", help="Lifetime: 90d, 12h, 30m, 2w, or never."),
    scope: list[str] = typer.Option(
        [], "--scope", help="read or write (repeat; default: all the user's role allows)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an API token for USER (admins only); it is printed this once."""
    view = platform(ctx).create_token(user, expires, scope)
    if as_json:
        print_json(view)
        return
    typer.echo(view["token"])
    until = f"expires {view['expires_at']}" if view["expires_at"] else "never expires"
    typer.echo(
        f"token {view['id']} for {view['user']}, {until}; shown once: store it now (GPUPOOL_TOKEN)",
        err=True,
    )


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    user: str | None = typer.Option(None, "--user", help="Only this user's tokens."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List tokens, never their secrets (everyone's for admins and auditors, else your own)."""
    rows = platform(ctx).list_tokens(user)
    columns = [
        ("id", "id"),
        ("user", "user"),
        ("state", "state"),
        ("scopes", "scopes"),
        ("created_at", "created"),
        ("expires_at", "expires"),
        ("last_used_at", "last used"),
    ]
    render(rows, columns, as_json, title="API tokens")


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context, token_id: str = typer.Argument(..., metavar="ID", help="The token's id.")
) -> None:
    """Revoke a token now (admins: any; anyone: their own)."""
    view = platform(ctx).revoke_token(token_id)
    done = "revoked" if view["revoked_now"] else f"was already revoked at {view['revoked_at']}"
    echo(f"token {view['id']} of {view['user']} {done}")


# --- audit log ---------------------------------------------------------------


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    who: str | None = typer.Option(None, "--actor", help="Only this actor's actions."),
    since: str | None = typer.Option(
        None, "--since", help="Only from then on: 7d, 12h, 30m, 2w or a UTC date/time."
    ),
    outcome: str | None = typer.Option(None, "--outcome", help="ok or denied."),
    action: str | None = typer.Option(
        None, "--action", help="Only actions starting so: job, job.cancel, authenticate..."
    ),
    limit: str = typer.Option("200", "--limit", help="At most this many, the newest."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Read the audit log, oldest first (admins and auditors)."""
    from gpupool.scheduler.service import positive_int

    count = positive_int(limit, "--limit")
    rows = platform(ctx).list_audit(who, since, outcome, action, count)
    columns = [
        ("id", "id"),
        ("at", "at"),
        ("actor", "actor"),
        ("action", "action"),
        ("target", "target"),
        ("outcome", "outcome"),
    ]
    render(rows, columns, as_json, title="audit log")
