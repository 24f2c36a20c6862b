"""Accounting reports, like Slurm's sreport/sacct: `gpupool report usage|subsidies`.

Both ask the platform (gpupool.cli.platform: the database, or a server) for the
rows gpupool.scheduler.queries sums from the append-only ledger with
``Books.totals`` (so the figures are exactly the ledger's):
GPU-hours (effective GPU-hours / the job's speed on the type), effective GPU-hours, cost,
subsidy, what orgs paid, and jobs. ``--csv`` writes the table, ``--png`` a
chart (matplotlib Agg, imported only then): usage by domain per period, or
each programme's budget burn-down (drawn where the ledger is, by
gpupool.scheduler.queries.burn_down_chart, locally or by the server, and written
here; admins and auditors only). Names in tables and charts are shown through
gpupool.safe_text; ``--json`` and ``--csv`` hold them exactly as stored.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import typer

from gpupool.cli.output import JSON_OPTION, check_output_path, platform, print_json, render
from gpupool.safe_text import plot_text

app = typer.Typer(no_args_is_help=True)

_COLUMNS = [
    ("gpu_hours", "GPU-h"),
    ("effective_gpu_hours", "effective GPU-h"),
    ("cost", "cost"),
    ("subsidy", "subsidy"),
    ("org_pays", "org paid"),
    ("jobs", "jobs"),
]
_FIELD = {"gpu-type": "gpu_type"}  # --by's name -> the rows' key


# what --png may be: the chart's format follows the suffix (matplotlib's savefig)
_IMAGE_SUFFIXES = (".png", ".svg", ".pdf")


def _check_outputs(csv_path: str | None, png_path: str | None) -> None:
    """Refuse an output path that could not be written, before anything is read or written."""
    if csv_path is not None:
        check_output_path(csv_path, "--csv")
    if png_path is not None:
        check_output_path(png_path, "--png", _IMAGE_SUFFIXES)


def _write_csv(rows: list[dict], path: str) -> None:
    if not rows:
        Path(path).write_text("")
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@app.command()
def usage(
    ctx: typer.Context,
    period: str | None = typer.Option(None, "--period", help="2026-Q4 (quarters in the ledger)."),
    by: str = typer.Option("domain", "--by", help="domain, org, gpu-type, site or pool."),
    as_json: bool = JSON_OPTION,
    csv_path: str | None = typer.Option(None, "--csv", help="Also write the table as CSV."),
    png_path: str | None = typer.Option(None, "--png", help="Also chart usage per period."),
) -> None:
    """GPU usage and money per period, grouped by domain, org, GPU type, site or pool."""
    _check_outputs(csv_path, png_path)  # before anything is read or written
    rows = platform(ctx).usage_report(period, by)
    field = _FIELD.get(by, by)
    if _write_out(rows, csv_path, png_path, partial(_usage_chart, rows, field), as_json):
        return
    render(rows, [("period", "period"), (field, by), *_COLUMNS], False, title="usage")


@app.command()
def subsidies(
    ctx: typer.Context,
    programme: str | None = typer.Option(None, "--programme", help="Only this programme."),
    as_json: bool = JSON_OPTION,
    csv_path: str | None = typer.Option(None, "--csv", help="Also write the table as CSV."),
    png_path: str | None = typer.Option(None, "--png", help="Also chart budget burn-down."),
) -> None:
    """Subsidy paid per programme, period and org, against each programme's budget."""
    _check_outputs(csv_path, png_path)  # before anything is read or written
    image = None
    if png_path:  # drawn by the platform, refused before anything is written
        image = platform(ctx).burn_down_chart(programme, Path(png_path).suffix.lower()[1:])
    rows = platform(ctx).subsidy_report(programme)
    chart = partial(_write_image, image)
    if _write_out(rows, csv_path, png_path, chart, as_json):
        return
    render(
        rows,
        [
            ("programme", "programme"),
            ("period", "period"),
            ("org", "org"),
            ("budget", "budget"),
            ("subsidy", "subsidy"),
            ("cost", "cost"),
            ("org_pays", "org paid"),
            ("effective_gpu_hours", "subsidised eff. GPU-h"),
            ("voucher_hours", "voucher h used"),
        ],
        False,
        title="subsidies",
    )


def _write_out(rows, csv_path, png_path, chart, as_json: bool) -> bool:
    """The CSV and chart files asked for, and JSON on stdout; True if JSON went out."""
    if csv_path:
        _write_csv(rows, csv_path)
    if png_path:
        chart(png_path)
    if as_json:
        print_json(rows)
    return as_json


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _usage_chart(rows: list[dict], field: str, path: str) -> None:
    plt = _pyplot()
    periods = sorted({r["period"] for r in rows})
    groups = sorted({r[field] for r in rows})
    figure, axes = plt.subplots(figsize=(8, 4.5))
    bottom = [0.0] * len(periods)
    for group in groups:
        heights = [
            sum(r["effective_gpu_hours"] for r in rows if r["period"] == p and r[field] == group)
            for p in periods
        ]
        axes.bar(periods, heights, bottom=bottom, label=plot_text(group))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set_ylabel("effective GPU-hours")
    axes.set_title(f"usage by {field} per period")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _write_image(image: bytes, path: str) -> None:
    Path(path).write_bytes(image)
