"""`gpupool login URL [--token T]` and `gpupool logout`: the CLI as a server's client.

The login is saved to ~/.config/gpupool/credentials (or $XDG_CONFIG_HOME/gpupool),
created readable by its owner only (0600); GPUPOOL_URL and GPUPOOL_TOKEN
override it, and ``--db`` (or GPUPOOL_DATABASE_URL) ignores it and works on the
database itself (gpupool.cli.platform).
"""

from __future__ import annotations

import typer

from gpupool.cli.output import echo


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)


def login(
    url: str = typer.Argument(..., help="The server, e.g. https://gpupool.example.org"),
    token: str | None = typer.Option(
        None, "--token", help="Your API token (default: asked for, not echoed)."
    ),
) -> None:
    """Check a token against a `gpupool serve` and save both for later commands."""
    from gpupool.cli.platform import save_credentials
    from gpupool.cli.remote import HttpPlatform, check_url
    from gpupool.model import GpupoolError

    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise GpupoolError(f"expected an http:// or https:// URL, got {url!r}", location="URL")
    check_url(url, "URL")
    if token is None:
        token = typer.prompt("token", hide_input=True)
    token = token.strip()
    if not token:
        raise GpupoolError("must not be empty", location="--token")
    HttpPlatform(url, token, "URL").list_tokens(None)  # any role may list its own: proves the token
    path = save_credentials(url, token)
    echo(f"logged in to {url}; token saved in {path}")


def logout() -> None:
    """Forget the saved login (the token itself stays valid until revoked)."""
    from gpupool.cli.platform import credentials_path, forget_credentials

    if forget_credentials():
        echo(f"logged out: removed {credentials_path()}")
    else:
        echo("not logged in")
