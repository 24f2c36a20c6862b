"""A sweep's report for a funder: one self-contained HTML file (PNGs embedded).

Each configuration (parameter values x scenario x policy) is summarised by the
means over its seeds of the three trade-offs a funder weighs: the priority
domain's p95 queueing delay (lower is better), the subsidy spent (lower), the
platform's utilisation (higher). The configurations no other one beats on all
three at once form the Pareto front: the report lists them first, marks them in
the plots, and lists every configuration after. Names and values come from
users' files, so all text goes through gpupool.safe_text, as in
gpupool.simulations.report.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from gpupool.safe_text import html_text
from gpupool.simulations.report import format_cell
from gpupool.simulations.sweep import TRADE_OFFS, Sweep, pareto_front

AXIS_NAMES = (
    "{domain} p95 wait (h)",
    "subsidy spent",
    "utilisation",
)
DEFINITIONS = (
    "A configuration is one set of parameter values on one scenario under one policy; "
    "its figures are means over the seeds, ± the 95% confidence half-width (Student t).",
    "p95 wait: the 95th percentile of the priority domain's queueing delays "
    "(first start - submission), in hours.",
    "subsidy spent: everything the platform paid (flat rates, programmes, vouchers) over the run.",
    "utilisation: busy GPU-hours / all GPU-hours over the run.",
    "Pareto front: the configurations that no other configuration matches or beats on all "
    "three (lower wait, lower subsidy, higher utilisation) while beating on at least one.",
)


def configurations(sweep: Sweep, rows: Sequence[dict]) -> list[dict]:
    """One entry per configuration: labels, parameter values, each trade-off's (mean, CI)."""
    from gpupool.simulations.compare import mean_ci

    grouped: dict[int, list[dict]] = {}
    for row in rows:
        grouped.setdefault(int(row["config"]), []).append(row)
    entries = []
    for config, runs in sorted(grouped.items()):
        first = runs[0]
        entry = {
            "config": config,
            "scenario": first["scenario"],
            "policy": first["policy"],
            "values": {p.path: first[p.path] for p in sweep.parameters},
            "seeds": [run["seed"] for run in runs],
        }
        for column, _, _ in TRADE_OFFS:
            values = [float(run[column]) for run in runs if run[column] is not None]
            entry[column] = mean_ci(values) if len(values) == len(runs) else (None, None)
        entries.append(entry)
    return entries


def front_of(entries: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """(entries with all three trade-offs, the Pareto-optimal ones among them)."""
    complete = [e for e in entries if all(e[c][0] is not None for c, _, _ in TRADE_OFFS)]
    points = [[e[c][0] for c, _, _ in TRADE_OFFS] for e in complete]
    front = pareto_front(points, [sense for _, _, sense in TRADE_OFFS])
    return complete, [complete[i] for i in front]


def write_report(sweep: Sweep, rows: Sequence[dict], out: Path) -> Path:
    from gpupool.simulations.plots import plot_trade_offs

    entries = configurations(sweep, rows)
    complete, front = front_of(entries)
    names = [name.format(domain=sweep.priority_domain) for name in AXIS_NAMES]
    png = plot_trade_offs(
        [tuple(e[c][0] for c, _, _ in TRADE_OFFS) for e in complete],
        [complete.index(e) for e in front],
        [f"#{e['config']}" for e in complete],
        names,
        out / "trade_offs.png",
    )
    path = out / "report.html"
    path.write_text(_html(sweep, entries, front, names, png, len(rows)), encoding="utf-8")
    return path


def _html(sweep, entries, front, names, png: Path, runs: int) -> str:
    esc = html_text
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Sweep {esc(sweep.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}img{max-width:100%}"
        "tr.front{background:#fde8e8}</style>",
        f"</head><body><h1>Sweep {esc(sweep.name)}</h1><ul>",
    ]
    parts += [f"<li>{esc(item)}</li>" for item in _header(sweep, entries, runs)]
    parts.append("</ul><h2>Pareto front</h2>")
    parts.append(_table(sweep, front, names, set()))
    parts.append(
        f"<h2>Trade-offs</h2><img alt='trade-offs' "
        f"src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode('ascii')}'>"
    )
    parts.append("<h2>Every configuration</h2>")
    parts.append(_table(sweep, entries, names, {e["config"] for e in front}))
    parts.append("<h2>Definitions</h2><ul>")
    parts += [f"<li>{esc(text)}</li>" for text in DEFINITIONS]
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"


def _header(sweep: Sweep, entries, runs: int) -> list[str]:
    search = (
        "grid"
        if sweep.search == "grid"
        else f"random, {sweep.samples} samples, seed {sweep.search_seed}"
    )
    return [
        f"scenarios: {', '.join(label for label, _ in sweep.scenarios)}",
        f"policies: {', '.join(label for label, _ in sweep.policies)}",
        f"seeds: {', '.join(map(str, sweep.seeds))}",
        f"parameters: {', '.join(p.path for p in sweep.parameters) or 'none'} ({search})",
        f"priority domain: {sweep.priority_domain}",
        f"{len(entries)} configurations, {runs} runs",
    ]


def _table(sweep: Sweep, entries, names, marked: set[int]) -> str:
    esc = html_text
    if not entries:
        return "<p>none: no configuration has all three figures</p>"
    heads = ["#", "scenario", "policy", *(p.path for p in sweep.parameters), *names]
    parts = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr>"]
    for entry in entries:
        cells = [f"#{entry['config']}", entry["scenario"], entry["policy"]]
        cells += [_value(entry["values"][p.path]) for p in sweep.parameters]
        cells += [format_cell(entry[column]) for column, _, _ in TRADE_OFFS]
        marker = " class='front'" if entry["config"] in marked else ""
        parts.append(f"<tr{marker}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def _value(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
