"""`gpupool schema KIND`: the JSON Schema of a file format, for editors.

KIND is policy, scenario, programmes, batch or sweep (gpupool.schemas.KINDS). The
schema is printed as JSON on stdout; save it and point a YAML language server
at it (docs/policy-documents.md, "Editor support"). pydantic is imported only
when the command runs.
"""

from __future__ import annotations

import json

import typer

from gpupool.model import GpupoolError

KINDS = ("policy", "scenario", "programmes", "batch", "sweep")  # gpupool.schemas.KINDS, kept light


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)


def schema(
    kind: str = typer.Argument(..., help=f"One of: {', '.join(KINDS)}.", show_default=False),
) -> None:
    """Print the JSON Schema of a file format (policy, scenario, programmes, batch, sweep)."""
    if kind not in KINDS:
        raise GpupoolError(
            f"unknown file format {kind!r}; one of: {', '.join(KINDS)}", location="KIND"
        )
    from gpupool.schemas import json_schema

    typer.echo(json.dumps(json_schema(kind), indent=2, sort_keys=True))
