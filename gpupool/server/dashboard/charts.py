"""Charts as inline SVG, drawn on the server: no script, no build step.

Two shapes cover the dashboard: stacked bars (usage per time bucket and
group, free and busy GPUs per pool) and step lines (budget burn-down). Every
text that came from the database (names, labels) goes through
``safe_text.html_text``; numbers are formatted here. Each bar and each data
point carries ``data-*`` attributes with its figures and a ``<title>`` (the
browser's tooltip), so tests and screen readers can read what is drawn.
Colours are SVG presentation attributes, not inline CSS, so the page's
Content-Security-Policy needs no 'unsafe-inline'.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from gpupool.safe_text import html_text

WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 40, 16, 44  # room for the axes' labels
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
OTHERS = "#888888"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _number(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < top:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _y_axis(parts: list[str], ticks: Sequence[float], scale, label: str) -> None:
    for tick in ticks:
        y = scale(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
            f"{_number(tick)}</text>"
        )
    parts.append(
        f'<text x="12" y="{TOP + (HEIGHT - TOP - BOTTOM) / 2:.0f}" font-size="11" '
        f'text-anchor="middle" transform="rotate(-90 12 {TOP + (HEIGHT - TOP - BOTTOM) / 2:.0f})">'
        f"{html_text(label)}</text>"
    )


def _svg(parts: list[str], label: str, kind: str) -> Markup:
    head = (
        f'<svg class="chart {kind}" role="img" aria-label="{html_text(label)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet" '
        'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">'
        f"<title>{html_text(label)}</title>"
    )
    return Markup(head + "".join(parts) + "</svg>")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]  # one per category


def stacked_bars(
    label: str, categories: Sequence[str], series: Sequence[Series], unit: str
) -> Markup:
    """Vertical bars per category, one stacked segment per series."""
    totals = [sum(s.values[i] for s in series) for i in range(len(categories))]
    ticks = nice_ticks(max(totals, default=0.0))
    plot_h = HEIGHT - TOP - BOTTOM

    def scale(value: float) -> float:
        return TOP + plot_h * (1 - value / ticks[-1])

    parts: list[str] = []
    _y_axis(parts, ticks, scale, unit)
    slot = (WIDTH - LEFT - RIGHT) / max(len(categories), 1)
    bar = min(48.0, slot * 0.7)
    label_every = max(1, math.ceil(len(categories) / 12))
    for i, category in enumerate(categories):
        x = LEFT + slot * i + (slot - bar) / 2
        base = 0.0
        for index, s in enumerate(series):
            value = s.values[i]
            if value <= 0:
                continue
            top, bottom = scale(base + value), scale(base)
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{bar:.1f}" '
                f'height="{max(bottom - top, 0.5):.1f}" fill="{colour(index)}" '
                f'data-category="{html_text(category)}" data-series="{html_text(s.name)}" '
                f'data-value="{value:.4f}"><title>{html_text(category)} · {html_text(s.name)}: '
                f"{_number(value)} {html_text(unit)}</title></rect>"
            )
            base += value
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="11" '
                f'text-anchor="middle">{html_text(category)}</text>'
            )
    parts.append(_axis_line())
    return _svg(parts, label, "bars")


def _axis_line() -> str:
    y = HEIGHT - BOTTOM
    return f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="#444"/>'


@dataclass(frozen=True)
class Line:
    name: str
    points: Sequence[tuple[float, float]]  # (epoch seconds, value), in time order
    dashed: bool = False  # a reference line (the even burn), drawn without markers


def step_lines(
    label: str,
    lines: Sequence[Line],
    unit: str,
    start: float,
    end: float,
    now: float | None = None,
) -> Markup:
    """Lines that hold each value until the next point (money left over time)."""
    values = [v for line in lines for _, v in line.points]
    ticks = nice_ticks(max(values, default=0.0))
    end = end if end > start else start + 86400.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(t: float) -> float:
        return LEFT + plot_w * (min(max(t, start), end) - start) / (end - start)

    def y_of(value: float) -> float:
        return TOP + plot_h * (1 - value / ticks[-1])

    parts: list[str] = []
    _y_axis(parts, ticks, y_of, unit)
    _time_axis(parts, start, end, x_of)
    if now is not None and start <= now <= end:
        x = x_of(now)
        parts.append(
            f'<line class="now" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
            'stroke="#999" stroke-dasharray="2 3"/>'
            f'<text x="{x + 3:.1f}" y="{TOP + 10}" font-size="10" fill="#666">now</text>'
        )
    for index, line in enumerate(lines):
        _draw_line(parts, line, colour(index), x_of, y_of, unit, now if not line.dashed else None)
    parts.append(_axis_line())
    return _svg(parts, label, "lines")


def _draw_line(parts, line: Line, stroke: str, x_of, y_of, unit: str, hold_until) -> None:
    if not line.points:
        return
    if line.dashed:
        path = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in line.points)
        parts.append(
            f'<polyline class="reference" points="{path}" fill="none" stroke="{stroke}" '
            f'stroke-dasharray="6 4" data-series="{html_text(line.name)}"/>'
        )
        return
    coords: list[str] = []
    previous = None
    for t, v in line.points:
        if previous is not None:
            coords.append(f"{x_of(t):.1f},{y_of(previous):.1f}")
        coords.append(f"{x_of(t):.1f},{y_of(v):.1f}")
        previous = v
    if hold_until is not None and hold_until > line.points[-1][0]:
        coords.append(f"{x_of(hold_until):.1f},{y_of(previous):.1f}")
    parts.append(
        f'<polyline class="series" points="{" ".join(coords)}" fill="none" stroke="{stroke}" '
        f'stroke-width="2" data-series="{html_text(line.name)}"/>'
    )
    for t, v in line.points:
        when = _moment(t)
        parts.append(
            f'<circle class="point" cx="{x_of(t):.1f}" cy="{y_of(v):.1f}" r="3.5" '
            f'fill="{stroke}" data-series="{html_text(line.name)}" data-t="{when}" '
            f'data-value="{v:.2f}"><title>{html_text(line.name)} {when}: {_number(v)} '
            f"{html_text(unit)}</title></circle>"
        )


def _moment(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


_HOUR = 3600.0
_TICK_STEPS = [h * _HOUR for h in (1, 2, 3, 6, 12)] + [
    d * 24 * _HOUR for d in (1, 2, 5, 7, 14, 30, 61, 91, 182, 365)
]


def time_ticks(start: float, end: float, most: int = 8) -> list[float]:
    """Round instants (whole hours, or UTC midnights) between ``start`` and ``end``."""
    span = max(end - start, _HOUR)
    step = next((s for s in _TICK_STEPS if span / s <= most), _TICK_STEPS[-1])
    first = (start // step + (start % step > 0)) * step  # epoch multiples: UTC-aligned
    ticks = []
    t = first
    while t <= end:
        ticks.append(t)
        t += step
    return ticks


def _time_axis(parts: list[str], start: float, end: float, x_of) -> None:
    fmt = "%Y-%m-%d" if end - start > 2 * 24 * _HOUR else "%m-%d %H:%M"
    for t in time_ticks(start, end):
        x = x_of(t)
        text = dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 4}" '
            f'stroke="#444"/><text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="11" '
            f'text-anchor="middle">{text}</text>'
        )


def legend(names: Sequence[str]) -> Markup:
    """An HTML legend matching the palette order of a chart's series."""
    items = "".join(
        f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" '
        f'fill="{colour(i)}"/></svg> {html_text(name)}</li>'
        for i, name in enumerate(names)
    )
    return Markup(f'<ul class="legend">{items}</ul>')
