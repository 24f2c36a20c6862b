"""`gpupool policy ...`: policy documents on the command line.

``validate`` checks a document without touching the database. The commands
that store documents (apply, show, history, diff, rollback) belong here too:
they load a file with :func:`load_document_or_exit`, which prints every
problem on its own line and exits 2, then hand the PolicyDocument to
gpupool.scheduler. The document module is imported inside the commands so
that `gpupool job submit` does not pay for it.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Policy documents: check, apply, history.")


def load_document_or_exit(path: Path):
    """The parsed PolicyDocument, or every problem on stderr (one per line) and exit 2."""
    from gpupool.policies.document import PolicyDocumentError, load_policy_file

    try:
        return load_policy_file(path)
    except PolicyDocumentError as exc:
        for where, what in exc.problems:
            typer.echo(f"{where}: {what}", err=True)
        raise typer.Exit(2) from None


@app.command()
def validate(
    file: Path = typer.Argument(..., help="Policy document (YAML) to check."),
) -> None:
    """Check a policy document; report every error as `file:line field: message`."""
    document = load_document_or_exit(file)
    domains = len(document.to_dict()["domains"])
    typer.echo(f"ok: {document.kind} policy, {domains} domains")
