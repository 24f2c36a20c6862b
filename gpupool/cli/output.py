"""Shared CLI plumbing: the acting user, the unit of work, tables and JSON.

Every listing renders the same list of dicts (built by the service's
``*_view`` functions) either as a rich table or, with ``--json``, as a JSON
list whose keys are the model's field names. rich and the scheduler package
are imported only when a command runs, so `gpupool --help` stays fast.

Stored and user-supplied text is shown through gpupool.safe_text: table cells
and titles as rich ``Text`` (markup never parsed, control characters escaped),
plain lines through :func:`echo`. JSON is printed exact: ``json.dumps``
already escapes control characters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager

import typer

from gpupool.safe_text import rich_text, terminal

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


OWNER = "@owner"  # gpupool.scheduler.permissions.OWNER (not imported: keeps --help fast)


def actor(ctx: typer.Context) -> str:
    """The acting user: --as NAME / GPUPOOL_USER (a registered user, whose role
    applies), else the platform owner: whoever holds the database URL is its
    admin. The OS user name grants nothing."""
    user = ((ctx.obj or {}).get("user") or "").strip()
    return user or OWNER


def db_url(ctx: typer.Context) -> str | None:
    return (ctx.obj or {}).get("db")


def platform(ctx: typer.Context):
    """The local database or a server, whichever this command talks to
    (gpupool.cli.platform.connect); made once per command."""
    from gpupool.cli.platform import connect

    obj = ctx.find_root().obj if ctx.obj is None else ctx.obj
    if "platform" not in obj:
        obj["platform"] = connect(obj)
    return obj["platform"]


def local_database(ctx: typer.Context, command: str) -> str | None:
    """The database URL for a command that runs only where the database is (init,
    db upgrade, serve, scheduler run): with a server configured it refuses."""
    return platform(ctx).database_url(command)


@contextmanager
def work(ctx: typer.Context):
    """One transaction for the whole command (see gpupool.scheduler.database)."""
    from gpupool.scheduler.database import unit_of_work

    with unit_of_work(db_url(ctx)) as session:
        yield session


def echo(text: object = "", *, err: bool = False, keep_newlines: bool = False) -> None:
    """``typer.echo`` for a line that holds user-supplied text: shown visibly escaped
    (``keep_newlines`` for multi-line text such as a policy document)."""
    typer.echo(terminal(text, keep_newlines=keep_newlines), err=err)


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:,.0f}"
    if isinstance(value, list | tuple) and value and isinstance(value[0], list | tuple):
        return " ".join(f"{node}:{gpus}" for node, gpus in value)  # placement nodes
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "any"
    return str(value)


def render(
    rows: Sequence[dict],
    columns: Iterable[tuple[str, str]],
    as_json: bool,
    title: str | None = None,
) -> None:
    """A rich table of ``columns`` (key, header), or every key as JSON."""
    if as_json:
        print_json(list(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=None if title is None else rich_text(title), title_justify="left")
    columns = list(columns)
    for _, header in columns:
        table.add_column(rich_text(header))
    for row in rows:
        table.add_row(*(rich_text(_cell(row.get(key))) for key, _ in columns))
    Console(width=max(100, _terminal_width())).print(table)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 120


def check_output_path(path: str, option: str, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse an output file that could not be written (or, with ``suffixes``, is not of
    that format), before anything is read or written: one rule for every ``--out``-like
    option."""
    import unicodedata
    from pathlib import Path

    from gpupool.model import GpupoolError

    target = Path(path)
    problem = None
    if not path.strip():
        problem = "must name a file"
    elif any(unicodedata.category(char) in ("Cc", "Cf") for char in path):
        problem = "must not hold control or format characters"
    elif suffixes and target.suffix.lower() not in suffixes:
        problem = f"must end in {', '.join(suffixes)} (the chart's format), got {path!r}"
    elif target.is_dir():
        problem = f"{path!r} is a directory"
    elif not target.parent.is_dir():
        problem = f"no directory {str(target.parent)!r} to write {target.name!r} in"
    if problem:
        raise GpupoolError(problem, location=option)
