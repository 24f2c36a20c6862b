"""Accounting periods: calendar months, quarters and years in UTC, and fixed spans.

Instants are seconds since the Unix epoch (gpupool.model). A period is a
half-open interval ``[start, end)``; an instant exactly on a boundary belongs to
the period that starts there. Labels are ``2026`` (year), ``2026-Q4`` (quarter)
and ``2026-11`` (month): sortable text, the same in the ledger, the database and
reports. Usage is split across periods before it is priced, so a job running
over a quarter end is booked partly in each quarter.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

from gpupool import limits
from gpupool.model import GpupoolError

CALENDAR_KINDS = ("month", "quarter", "year")
_MONTHS_PER = {"month": 1, "quarter": 3, "year": 12}
_LABEL = re.compile(r"^(\d{4})(?:-Q([1-4])|-(\d{2}))?$", re.ASCII)


@dataclass(frozen=True, slots=True)
class PeriodSpec:
    """When a programme's budget and caps apply.

    ``kind`` 'fixed': one span ``[start, end)`` (either side None = unbounded);
    'month' | 'quarter' | 'year': the budget recurs every calendar period,
    optionally only within ``[start, end)``.
    """

    kind: str = "fixed"
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if self.kind != "fixed" and self.kind not in CALENDAR_KINDS:
            raise GpupoolError(
                f"unknown period kind {self.kind!r} (fixed, month, quarter or year)",
                location="period",
            )
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise GpupoolError("period ends before it starts", location="period")

    def active(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)

    def key(self, t: float) -> str:
        """Which budget period ``t`` falls in: a calendar label, or 'all' for a fixed span."""
        return "all" if self.kind == "fixed" else period_label(t, self.kind)

    def bounds(self, t: float) -> tuple[float | None, float | None]:
        """The budget period holding ``t``, clipped to the spec's own span."""
        if self.kind == "fixed":
            return self.start, self.end
        start, end = period_bounds(t, self.kind)
        if self.start is not None:
            start = max(start, self.start)
        if self.end is not None:
            end = min(end, self.end)
        return start, end

    def cuts(self, start: float, end: float) -> list[float]:
        """Instants strictly inside ``(start, end)`` where the budget period changes."""
        points = [p for p in (self.start, self.end) if p is not None and start < p < end]
        if self.kind != "fixed":
            points += [s for _, s, _ in split(start, end, self.kind)[1:]]
        return sorted(set(points))


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC)


def _first_month(year: int, month: int, kind: str) -> tuple[int, int]:
    step = _MONTHS_PER[kind]
    return year, (month - 1) // step * step + 1


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def _epoch(year: int, month: int) -> float:
    return dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp()


def _check_kind(kind: str) -> None:
    if kind not in CALENDAR_KINDS:
        raise GpupoolError(
            f"unknown period kind {kind!r} (month, quarter or year)", location="period"
        )


# The calendar period last looked up, per kind: replays and rounds ask about the
# same quarter again and again, and each uncached lookup builds datetimes.
_last: dict[str, tuple[float, float, str]] = {}


def _period(t: float, kind: str) -> tuple[float, float, str]:
    """``(start, end, label)`` of the calendar period of ``kind`` holding ``t``."""
    hit = _last.get(kind)
    if hit is not None and hit[0] <= t < hit[1]:
        return hit
    _check_kind(kind)
    found = _calendar(t, kind)
    # datetime rounds to microseconds: within one of a boundary it can name the
    # neighbouring period, so settle on the one whose bounds really hold t
    if t < found[0]:
        found = _calendar(found[0] - 1.0, kind)
    elif t >= found[1]:
        found = _calendar(found[1], kind)
    _last[kind] = found
    return found


def _calendar(t: float, kind: str) -> tuple[float, float, str]:
    moment = _utc(t)
    year, month = _first_month(moment.year, moment.month, kind)
    next_year, next_month = _add_months(year, month, _MONTHS_PER[kind])
    if kind == "year":
        label = f"{year:04d}"
    elif kind == "quarter":
        label = f"{year:04d}-Q{(month - 1) // 3 + 1}"
    else:
        label = f"{year:04d}-{month:02d}"
    return _epoch(year, month), _epoch(next_year, next_month), label


def period_bounds(t: float, kind: str) -> tuple[float, float]:
    """``[start, end)`` of the calendar period of ``kind`` holding instant ``t``."""
    start, end, _ = _period(t, kind)
    return start, end


def period_label(t: float, kind: str) -> str:
    """Label of the calendar period holding ``t``: '2026', '2026-Q4' or '2026-11'."""
    return _period(t, kind)[2]


def is_label(text: str) -> bool:
    """Whether ``text`` is written like a period label (its year may still be unsupported)."""
    return isinstance(text, str) and _LABEL.match(text) is not None


def label_kind(label: str) -> str:
    match = _LABEL.match(label) if isinstance(label, str) else None
    if not match:
        raise GpupoolError(
            f"bad period label {label!r} (like 2026, 2026-Q4 or 2026-11)", location="period"
        )
    limits.check_year(int(match.group(1)), "period", label)
    if match.group(2):
        return "quarter"
    return "month" if match.group(3) else "year"


def label_bounds(label: str) -> tuple[float, float]:
    """``[start, end)`` of a labelled calendar period."""
    kind = label_kind(label)
    match = _LABEL.match(label)
    year = int(match.group(1))
    if kind == "quarter":
        month = (int(match.group(2)) - 1) * 3 + 1
    elif kind == "month":
        month = int(match.group(3))
        if not 1 <= month <= 12:
            raise GpupoolError(f"bad month in period label {label!r}", location="period")
    else:
        month = 1
    return period_bounds(_epoch(year, month), kind)


def coarsen(label: str, kind: str) -> str:
    """The ``kind`` period holding the labelled one ('2026-11' -> '2026-Q4' for 'quarter')."""
    start, _ = label_bounds(label)
    finer = _MONTHS_PER[label_kind(label)]
    if finer > _MONTHS_PER[kind]:
        raise GpupoolError(
            f"a {label_kind(label)} label cannot be narrowed to a {kind}", location="period"
        )
    return period_label(start, kind)


def split(start: float, end: float, kind: str) -> list[tuple[str, float, float]]:
    """Cut ``[start, end)`` at calendar boundaries: ``(label, piece_start, piece_end)``."""
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise GpupoolError(f"bad interval [{start}, {end})", location="interval")
    pieces = []
    cursor = start
    while True:
        _, boundary, label = _period(cursor, kind)
        piece_end = min(boundary, end)
        pieces.append((label, cursor, piece_end))
        if piece_end >= end:
            return pieces
        cursor = piece_end


def parse_instant(value: object, location: str) -> float:
    """An instant from YAML: epoch seconds, a date, a datetime, or ISO-8601 text (UTC),
    inside the supported window (gpupool.limits: 1970 to before 2200)."""
    if isinstance(value, bool):
        raise GpupoolError(f"expected a date or time, got {value!r}", location=location)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise GpupoolError("time must be finite", location=location)
        return limits.check_instant(value, location)
    if isinstance(value, dt.datetime):
        return limits.check_moment(value, location).timestamp()
    if isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return limits.check_moment(moment, location, value.isoformat()).timestamp()
    if isinstance(value, str):
        try:
            return parse_instant(dt.datetime.fromisoformat(value.strip()), location)
        except ValueError:
            pass
    raise GpupoolError(
        f"expected a date or time like 2026-10-01 or 2026-10-01T08:00, got {value!r}",
        location=location,
    )
