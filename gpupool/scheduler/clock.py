"""Time and money conversions between the model (epoch floats) and storage.

The model speaks epoch seconds; the database stores aware UTC datetimes
(orm.UtcDateTime). Accounting periods are calendar quarters in UTC, written
like ``2026-Q4``; money is rounded to cents before it is stored.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from decimal import ROUND_HALF_UP, Decimal

from gpupool.model import GpupoolError


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def now_epoch() -> float:
    return time.time()


def from_epoch(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def to_epoch(moment: dt.datetime) -> float:
    return moment.timestamp()


def iso(moment: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with a Z suffix, second precision (what --json prints)."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_of(moment: dt.datetime | float) -> str:
    """The accounting period (calendar quarter, UTC) an instant falls in."""
    if not isinstance(moment, dt.datetime):
        moment = from_epoch(moment)
    moment = moment.astimezone(dt.UTC)
    return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"


def period_start(period: str) -> dt.datetime:
    year, quarter = period.split("-Q")
    return dt.datetime(int(year), 3 * (int(quarter) - 1) + 1, 1, tzinfo=dt.UTC)


def cents(amount: float) -> float:
    """Round half up to cents on the decimal figure the user wrote (2.675 -> 2.68),
    not on its binary approximation, as PostgreSQL's NUMERIC(14, 2) would."""
    exact = Decimal(repr(float(amount))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return float(exact)


def parse_duration(text: str, location: str = "--expires") -> dt.timedelta | None:
    """``90d``, ``12h``, ``30m``, ``2w`` or ``never`` (None)."""
    value = (text or "").strip().lower()
    if value == "never":
        return None
    match = re.fullmatch(r"(\d{1,6})([mhdw])", value)
    if match is None:
        raise GpupoolError(
            f"must be a duration like 90d, 12h, 30m or 2w, or never; got {text!r}",
            location=location,
        )
    number, unit = int(match.group(1)), match.group(2)
    if number == 0:
        raise GpupoolError("must be a positive duration", location=location)
    unit_name = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]
    return dt.timedelta(**{unit_name: number})
