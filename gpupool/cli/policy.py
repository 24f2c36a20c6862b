"""`gpupool policy ...`: policy documents on the command line.

``validate`` checks a document without touching the database. ``apply``
loads a file with :func:`load_document_or_exit` (every problem on its own
line, exit 2, before the database is opened) and hands the PolicyDocument to
gpupool.scheduler.policies_store, which versions, activates and audits it in
one transaction; ``show``, ``history``, ``diff`` and ``rollback`` read or
extend that history (never rewrite it). ``whatif`` replays the jobs recorded
in the database under a proposed document and the active policy
(gpupool.simulations.from_db) and writes nothing. The document module, the
scheduler and the simulator are imported inside the commands so that
`gpupool job submit` does not pay for them.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from gpupool.cli.output import (
    JSON_OPTION,
    echo,
    platform,
    print_json,
    render,
)
from gpupool.model import GpupoolError

app = typer.Typer(no_args_is_help=True, help="Policy documents: check, apply, history.")


def load_document_or_exit(path: Path):
    """The parsed PolicyDocument, or every problem on stderr (one per line) and exit 2."""
    from gpupool.policies.document import load_policy_file

    with document_problems_or_exit():
        return load_policy_file(path)


@contextmanager
def document_problems_or_exit():
    """A policy document's problems (found here or by the server) one per line, exit 2."""
    from gpupool.policies.document import PolicyDocumentError

    try:
        yield
    except PolicyDocumentError as exc:
        for where, what in exc.problems:
            echo(f"{where}: {what}", err=True)
        raise typer.Exit(2) from None


def _document_text(path: Path) -> str:
    """The file's text, read as load_policy_file reads it (checked by it just before)."""
    from gpupool.files import POLICY, read_text

    return read_text(path, POLICY)


@app.command()
def validate(
    file: Path = typer.Argument(..., help="Policy document (YAML) to check."),
) -> None:
    """Check a policy document; report every error as `file:line field: message`."""
    document = load_document_or_exit(file)
    domains = len(document.to_dict()["domains"])
    echo(f"ok: {document.kind} policy, {domains} domains")


VERSION_ARG = typer.Argument(..., help="A policy version: 3 or v3.", show_default=False)


@app.command()
def apply(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Policy document (YAML) to store and activate."),
    comment: str = typer.Option("", "--comment", help="Why this change (kept in history)."),
) -> None:
    """Validate FILE, store it as a new version and make it the active policy (admins)."""
    load_document_or_exit(file)  # every problem, before the platform is asked at all
    with document_problems_or_exit():
        view = platform(ctx).apply_policy(_document_text(file), str(file), comment)
    replaced = f"v{view['replaces']}" if view["replaces"] is not None else "the FIFO default"
    typer.echo(f"applied policy v{view['version']} ({view['kind']}); it replaces {replaced}")


@app.command()
def show(
    ctx: typer.Context,
    version: str | None = typer.Argument(None, help="Version to show (default: the active one)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a stored policy version: who applied it, when, why, and its text."""
    view = platform(ctx).show_policy(version)
    document = view["document"]
    if as_json:
        print_json(view)
        return
    state = " (active)" if view["active"] else ""
    echo(f"version:    {view['version']}{state}")
    for key in ("kind", "applied_by", "applied_at", "comment"):
        echo(f"{key + ':':<11} {view[key] or '-'}")
    echo("")
    echo(document.rstrip("\n"), keep_newlines=True)


@app.command()
def history(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List every policy version, oldest first; the active one is marked."""
    rows = platform(ctx).policy_history()
    if not rows and not as_json:
        typer.echo("no policy has been applied; rounds use the FIFO default")
        return
    render(
        rows,
        [
            ("version", "version"),
            ("kind", "kind"),
            ("active", "active"),
            ("applied_by", "applied by"),
            ("applied_at", "applied at"),
            ("comment", "comment"),
        ],
        as_json,
    )


@app.command()
def diff(
    ctx: typer.Context,
    v1: str = typer.Argument(..., help="The older version (3 or v3)."),
    v2: str = typer.Argument(..., help="The newer version."),
    as_json: bool = JSON_OPTION,
) -> None:
    """What changed between two versions: a summary, then a unified diff."""
    result = platform(ctx).diff_policies(v1, v2)
    if as_json:
        print_json(result)
        return
    if not result["diff"]:
        typer.echo(f"v{result['old']} and v{result['new']} are the same policy")
        return
    for line in result["changes"] or ("no change in kind, domains or subsidies",):
        echo(f"* {line}")
    echo("")
    echo(result["diff"].rstrip("\n"), keep_newlines=True)


@app.command()
def rollback(
    ctx: typer.Context,
    version: str = VERSION_ARG,
    comment: str = typer.Option("", "--comment", help="Why (kept in history)."),
) -> None:
    """Make VERSION's document active again, as a new version (history is kept)."""
    view = platform(ctx).rollback_policy(version, comment)
    replaced = f"v{view['replaces']}" if view["replaces"] is not None else "the FIFO default"
    raw = version.strip()  # valid: the platform parsed it
    number = int(raw[1:] if raw[:1] in ("v", "V") else raw)
    typer.echo(
        f"applied policy v{view['version']} ({view['kind']}), a copy of v{number}; "
        f"it replaces {replaced}"
    )


@app.command()
def whatif(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="The proposed policy document (YAML)."),
    since: str = typer.Option("30d", "--since", help="Window start: 30d, 12h, 2w or a date."),
    until: str | None = typer.Option(
        None, "--until", help="Window end, an ISO date/time in UTC (default: now)."
    ),
    as_json: bool = JSON_OPTION,
    out: Path | None = typer.Option(None, "--out", help="Also write JSON and per-job CSVs here."),
) -> None:
    """Replay the recorded jobs under FILE and under the active policy; compare per domain.

    Nothing is written to the database.
    """
    load_document_or_exit(file)  # every problem, before the platform is asked at all
    if out is not None and out.exists() and not out.is_dir():
        raise GpupoolError("exists and is not a directory", location=f"--out {out}")
    with document_problems_or_exit():  # names the platform lacks
        comparison = platform(ctx).whatif(
            _document_text(file), file.name, since, until, out is not None
        )
    files = comparison.pop("files", None)
    if out is not None:
        write_whatif(out, files or {})
    if as_json:
        print_json(comparison)
        return
    dropped = sum(comparison["dropped"].values())
    echo(
        f"{comparison['jobs']} jobs submitted {comparison['since']} .. {comparison['until']} "
        f"replayed on today's {comparison['pools']} pools"
        + (f" ({dropped} cancelled before starting, left out)" if dropped else "")
    )
    echo(f"current: {comparison['current']}    proposed: {comparison['proposed']}")
    _render_whatif(comparison)


_WHATIF_COLUMNS = (
    ("finished", "finished", 0),
    ("waiting", "waiting", 0),
    ("mean_wait_hours", "mean wait h", 2),
    ("p95_wait_hours", "p95 wait h", 2),
    ("gpu_hours", "GPU-hours", 1),
    ("subsidy", "subsidy", 2),
)


def _render_whatif(comparison: dict) -> None:
    """Three rows per domain (current, proposed, change): narrow enough for a terminal."""
    from rich.console import Console
    from rich.table import Table

    from gpupool.safe_text import rich_text

    table = Table(title_justify="left")
    for header in ("domain", "policy", *(h for _, h, _ in _WHATIF_COLUMNS)):
        table.add_column(header, justify="left" if header in ("domain", "policy") else "right")
    for domain, sides in comparison["domains"].items():
        for side in ("current", "proposed", "delta"):
            cells = [
                _number(sides[side][key], digits, side == "delta")
                for key, _, digits in _WHATIF_COLUMNS
            ]
            label = "change" if side == "delta" else side
            table.add_row(
                rich_text(domain if side == "current" else ""),
                label,
                *cells,
                end_section=side == "delta",
            )
    Console(width=120).print(table)


def _number(value: float | None, digits: int, signed: bool) -> str:
    if value is None:
        return "-"
    if signed and round(value, digits) == 0:
        return "0"
    return f"{value:{'+' if signed else ''},.{digits}f}"


def write_whatif(out: Path, files: dict[str, str]) -> None:
    """Write the files the platform made (whatif.json and the per-job CSVs) into ``out``,
    byte for byte; a name that is not a plain file name is refused, not followed."""
    for name in files:
        if not name or Path(name).name != name or name.startswith("."):
            raise GpupoolError(
                f"the platform sent an unusable file name {name!r}", location="--out"
            )
    out.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(files.items()):
        (out / name).write_bytes(text.encode("utf-8"))
