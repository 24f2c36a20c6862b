"""`gpupool export kueue|slurm`: the platform and its policy for a site's workload manager.

``kueue --site SITE``: ResourceFlavors, a Cohort, a ClusterQueue per domain and a
LocalQueue per organisation, checked against Kueue's CRD schemas (``kubectl apply
-f``). ``slurm [--site SITE]``: ``sacctmgr`` commands (accounts per domain and
organisation, a QOS per limited domain). Written to stdout, or ``--out FILE``
(replaced whole, only once the export succeeded). Admins and auditors; an agent
for its own site. Details: gpupool.exports, docs/sites.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer

from gpupool.cli.output import JSON_OPTION, check_output_path, platform, print_json
from gpupool.model import GpupoolError

app = typer.Typer(no_args_is_help=True)

OUT_OPTION = typer.Option(None, "--out", help="Write to this file instead of stdout.")


@app.command()
def kueue(
    ctx: typer.Context,
    site: str = typer.Option(..., "--site", help="The Kubernetes site's name."),
    resource: list[str] = typer.Option(
        [], "--resource", help="TYPE=NAME: the device-plugin resource of a GPU type."
    ),
    out: str | None = OUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Kueue objects (v1beta2) for a site: flavors, cohort, cluster and local queues."""
    _check_out(out)
    from gpupool.exports.options import pairs

    view = platform(ctx).export("kueue", site, pairs(resource, "--resource"), {})
    _emit(view, out, as_json)


@app.command()
def slurm(
    ctx: typer.Context,
    site: str | None = typer.Option(None, "--site", help="One site (default: the platform)."),
    mapping: str | None = typer.Option(
        None, "--mapping", help="The site's Slurm mapping file (its gres names)."
    ),
    out: str | None = OUT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """sacctmgr commands: accounts per domain and organisation, QOS with GrpTRES limits."""
    _check_out(out)
    gres = {}
    if mapping is not None:
        from gpupool.agents.slurm_mapping import load_mapping

        gres = load_mapping(mapping).gres
    view = platform(ctx).export("slurm", site, {}, gres)
    _emit(view, out, as_json)


def _check_out(out: str | None) -> None:
    if out is not None:
        check_output_path(out, "--out")


def _emit(view: dict, out: str | None, as_json: bool) -> None:
    if out is not None:
        _write_whole(Path(out), view["text"])
    if as_json:
        print_json(view)
    elif out is None:
        typer.echo(view["text"], nl=False)


def _write_whole(path: Path, text: str) -> None:
    """Replace ``path`` only with the complete export (a temporary file, then a rename)."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    except OSError as exc:
        raise GpupoolError(f"cannot write there: {exc.strerror}", location="--out") from exc
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)
