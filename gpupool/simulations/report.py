"""The comparison report an admin can read: Markdown with PNGs beside it, and one
self-contained HTML file (PNGs embedded as base64) to send around.

Both are rendered from the same pieces: a header naming the scenario, the
schemes and the seeds, the per-domain confidence table, the plots, and the
metric definitions (so a reader never has to guess what "slowdown" means).

Scenario, scheme, domain, GPU type and programme names come from users' files,
so every piece of text goes through gpupool.safe_text (``markdown_text``,
``html_text``): it shows as written, never as markup, a link or a script.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from gpupool.safe_text import html_text, markdown_text
from gpupool.simulations.compare import CiRow

DEFINITIONS = (
    "Values are means over seeds, ± the 95% confidence half-width (Student t); "
    "every seed replays the same workload under every scheme.",
    "wait: first start - submission; JCT: finish - submission; "
    "slowdown: JCT / hours actually run on GPUs.",
    "effective GPU-h: GPUs x reference hours of work done (faster GPUs do more per hour).",
    "idle while jobs wait: share of GPU capacity x time that sat free while jobs were queued; "
    "per domain, idle GPU-h while it waits: GPU-hours free on pools where one of its "
    "waiting jobs would have fitted.",
    "Jain (1/slowdown): Jain's index over domains of 1 / mean slowdown "
    "(1 = every domain served equally well); Jain (weighted share): over "
    "domains' share of effective GPU-hours divided by their share of the weights.",
    "jobs timed out: runs stopped at their estimate on their GPU type + the timeout grace "
    "(10% + 5 min), the live reaper's rule; they are charged up to that instant.",
    "paid beyond org budgets: what orgs paid over their budget, summed over orgs and "
    "accounting periods (runs are charged when they end, not in the order they were quoted).",
    "GPU type rows: GPU-hours run on that type (not effective), their share of all "
    "GPU-hours, and the type's utilisation; vouchers favouring one accelerator show here.",
    "subsidised effective GPU-h: effective GPU-hours of usage a subsidy paid part of; "
    "share of subsidised GPU-h: a domain's part of all of them.",
    "programme rows: subsidy it paid (whole run), its budget per programme period and what "
    "the period holding the end still had; the burn-down plot steps when charges are booked "
    "(at the end of each run), and a recurring budget starts afresh each period.",
)


def format_cell(cell: tuple[float | None, float | None]) -> str:
    mean, half = cell
    if mean is None:
        return "–"
    text = _number(mean)
    return text if half is None else f"{text} ± {_number(half)}"


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _header(scenario: str, labels: Sequence[str], seeds: Sequence[int]) -> list[str]:
    return [
        f"scenario: {scenario}",
        f"schemes: {', '.join(labels)}",
        f"seeds: {', '.join(map(str, seeds))}",
    ]


def write_markdown(
    path: Path,
    *,
    title: str,
    scenario: str,
    labels: Sequence[str],
    seeds: Sequence[int],
    rows: Sequence[CiRow],
    plots: Sequence[tuple[str, Path]],
) -> Path:
    md = markdown_text
    lines = [f"# {md(title)}", ""]
    lines += [f"- {md(item)}" for item in _header(scenario, labels, seeds)]
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            lines += ["", f"## {md(group)}", ""]
            lines += ["| metric | " + " | ".join(md(label) for label in labels) + " |"]
            lines += ["|---|" + "---|" * len(labels)]
        cells = " | ".join(format_cell(row.cells[label]) for label in labels)
        lines.append(f"| {row.metric} | {cells} |")  # our own labels and numbers
    lines += ["", "## Plots", ""]
    lines += [f"### {caption}\n\n![{caption}]({png.name})\n" for caption, png in plots]
    lines += ["## Definitions", ""] + [f"- {text}" for text in DEFINITIONS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_html(
    path: Path,
    *,
    title: str,
    scenario: str,
    labels: Sequence[str],
    seeds: Sequence[int],
    rows: Sequence[CiRow],
    plots: Sequence[tuple[str, Path]],
) -> Path:
    esc = html_text
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>",
        f"</head><body><h1>{esc(title)}</h1><ul>",
    ]
    parts += [f"<li>{esc(item)}</li>" for item in _header(scenario, labels, seeds)]
    parts.append("</ul>")
    group = None
    for row in rows:
        if row.group != group:
            if group is not None:
                parts.append("</table>")
            group = row.group
            parts.append(f"<h2>{esc(group)}</h2><table><tr><th>metric</th>")
            parts += [f"<th>{esc(label)}</th>" for label in labels]
            parts.append("</tr>")
        cells = "".join(f"<td>{esc(format_cell(row.cells[label]))}</td>" for label in labels)
        parts.append(f"<tr><td>{esc(row.metric)}</td>{cells}</tr>")
    if group is not None:
        parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for caption, png in plots:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(
            f"<h3>{esc(caption)}</h3><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
        )
    parts.append("<h2>Definitions</h2><ul>")
    parts += [f"<li>{esc(text)}</li>" for text in DEFINITIONS]
    parts.append("</ul></body></html>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
