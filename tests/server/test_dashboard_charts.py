"""The dashboard's SVG charts and time buckets, without a server."""

from __future__ import annotations

import datetime as dt
import re

from gpupool.server.dashboard import charts
from gpupool.server.dashboard.data import _buckets

DAY = 86400.0
HOSTILE = '<img src=x onerror="alert(1)">&'


def _epoch(*args) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


def test_ticks_are_round_and_reach_the_top():
    assert charts.nice_ticks(72) == [0, 20, 40, 60, 80]
    assert charts.nice_ticks(1000) == [0, 200, 400, 600, 800, 1000]
    assert charts.nice_ticks(0) == [0.0, 1.0]  # an empty chart still has an axis
    for top in (0.3, 7, 99.5, 12_345):
        ticks = charts.nice_ticks(top)
        assert ticks[0] == 0 and ticks[-1] >= top and len(ticks) <= 7


def test_time_ticks_fall_on_whole_hours_or_utc_midnights():
    start = _epoch(2026, 11, 23, 13, 41)
    month = charts.time_ticks(start, start + 30 * DAY)
    assert 3 <= len(month) <= 8
    assert all(t % DAY == 0 and start <= t <= start + 30 * DAY for t in month)
    hours = charts.time_ticks(start, start + 5 * 3600)
    assert [dt.datetime.fromtimestamp(t, dt.UTC).hour for t in hours] == [14, 15, 16, 17, 18]


def test_bars_stack_per_category_and_escape_every_name():
    svg = str(
        charts.stacked_bars(
            HOSTILE,
            ["d1", HOSTILE],
            [charts.Series("a", [1, 2]), charts.Series(HOSTILE, [3, 0])],
            "h",
        )
    )
    assert "<img" not in svg and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in svg
    bars = re.findall(r'data-category="([^"]*)" data-series="([^"]*)" data-value="([\d.]+)"', svg)
    assert [(c[:2], s[:2], float(v)) for c, s, v in bars] == [
        ("d1", "a", 1.0),
        ("d1", "&l", 3.0),
        ("&l", "a", 2.0),  # a zero segment is not drawn
    ]


def test_step_lines_mark_each_point_and_hold_the_last_value_until_now():
    start, now = _epoch(2026, 11, 1), _epoch(2026, 11, 10)
    points = [(start, 100.0), (start + DAY, 60.0), (start + 2 * DAY, 25.0)]
    svg = charts.step_lines(
        "burn", [charts.Line("left", points)], "money", start, start + 30 * DAY, now
    )
    values = [float(v) for v in re.findall(r'class="point"[^>]*data-value="([\d.]+)"', svg)]
    assert values == [100.0, 60.0, 25.0]
    (line,) = re.findall(r'class="series" points="([^"]+)"', svg)
    coords = [tuple(map(float, p.split(","))) for p in line.split()]
    assert coords[-1][1] == coords[-2][1] and coords[-1][0] > coords[-2][0]  # held flat to now
    assert 'class="now"' in svg


def test_usage_buckets_are_days_weeks_or_months_by_span():
    first = _epoch(2026, 1, 5, 10)
    unit, labels, index = _buckets(first, first + 3 * DAY)
    assert unit == "day" and labels == ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08"]
    assert index(first + 2 * DAY + 3600) == 2
    unit, labels, index = _buckets(first, first + 100 * DAY)
    assert unit == "week" and labels[0] == "2026-01-05"  # a Monday
    assert index(first + 7 * DAY) == 1
    unit, labels, index = _buckets(first, first + 800 * DAY)
    assert unit == "month" and labels[0] == "2026-01" and labels[-1] == "2028-03"
    assert index(_epoch(2027, 2, 1)) == 13
