"""How far each domain is behind its guaranteed share of effective GPU-hours.

A guarantee such as "medical gets at least 25% of the platform's effective
GPU-hours this quarter" is checked over a window ending ``now``: a calendar
period ('month', 'quarter', 'year': from its start to now) or a sliding span in
seconds. The whole is either what all domains used in the window, or, given
``capacity_per_hour`` (effective GPU-hours the platform offers per hour), what
the platform could have delivered. The deficit feeds Snapshot.guarantee_deficit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gpupool.accounting.books import USAGE_KINDS, LedgerEntry
from gpupool.accounting.periods import CALENDAR_KINDS, period_bounds
from gpupool.model import GpupoolError


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Effective GPU-hours a domain used, spread evenly over ``[start, end)``.

    ``start == end`` records usage at one instant.
    """

    domain: str
    start: float
    end: float
    effective_gpu_hours: float

    def within(self, low: float, high: float) -> float:
        """The part of this usage that falls in ``[low, high]``."""
        if self.end <= self.start:
            return self.effective_gpu_hours if low <= self.start <= high else 0.0
        overlap = min(self.end, high) - max(self.start, low)
        return max(0.0, overlap) / (self.end - self.start) * self.effective_gpu_hours


def records_from_entries(entries: Iterable[LedgerEntry]) -> list[UsageRecord]:
    """Usage entries of a ledger as instant records at their booking time."""
    return [
        UsageRecord(e.domain, e.at, e.at, e.effective_gpu_hours)
        for e in entries
        if e.kind in USAGE_KINDS
    ]


def window_start(window: str | float, now: float) -> float:
    if isinstance(window, str):
        if window not in CALENDAR_KINDS:
            raise GpupoolError(
                f"a guarantee window is month, quarter, year or seconds, not {window!r}",
                location="window",
            )
        return period_bounds(now, window)[0]
    if not (math.isfinite(window) and window > 0):
        raise GpupoolError("a guarantee window must be > 0 seconds", location="window")
    return now - window


def guarantee_deficit(
    usage_records: Iterable[UsageRecord],
    guarantees: Mapping[str, float],
    window: str | float,
    now: float,
    capacity_per_hour: float | None = None,
) -> dict[str, float]:
    """Effective GPU-hours each guaranteed domain is short of its share (0 when on track)."""
    for domain, share in guarantees.items():
        if not 0.0 <= share <= 1.0:
            raise GpupoolError(
                f"a guaranteed share is between 0 and 1, got {share!r}",
                location=f"guarantees.{domain}",
            )
    if sum(guarantees.values()) > 1.0 + 1e-9:
        raise GpupoolError("guaranteed shares add up to more than 1", location="guarantees")
    start = window_start(window, now)
    used: dict[str, float] = defaultdict(float)
    for record in usage_records:
        used[record.domain] += record.within(start, now)
    if capacity_per_hour is None:
        whole = sum(used.values())
    else:
        whole = capacity_per_hour * max(0.0, now - start) / 3600.0
    return {d: max(0.0, share * whole - used[d]) for d, share in sorted(guarantees.items())}
