"""How far each domain is behind its guaranteed share of effective GPU-hours.

A guarantee such as "medical gets at least 25% of the platform's effective
GPU-hours this quarter" is checked over a window ending ``now``: a calendar
period ('month', 'quarter', 'year': from its start to now) or a sliding span in
seconds. The whole is either what all domains used in the window, or, given
``capacity_per_hour`` (effective GPU-hours the platform offers per hour), what
the platform could have delivered. The deficit feeds Snapshot.guarantee_deficit.

A round's figure (:func:`round_deficits`) is one function for the live round
(gpupool.scheduler.snapshot) and the simulator (gpupool.simulations.engine):
this quarter's usage the books booked, plus what running jobs used since they
were last charged, against the platform's effective capacity. Only where the
booked usage comes from differs: the ledger's sums in the database live, the
books' entries in memory in a simulation (:class:`BookedUsage`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpupool.accounting.books import USAGE_KINDS, LedgerEntry
from gpupool.accounting.periods import CALENDAR_KINDS, period_bounds
from gpupool.model import GpupoolError

WINDOW = "quarter"  # a round's guarantees are checked over the calendar quarter so far


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


def guarantee_shares(params: object, gpu_types: Mapping[str, Any], pools: Iterable) -> dict:
    """Each domain's guaranteed fraction of effective capacity, from PolicyParams.shares."""
    capacity = sum(p.gpus * gpu_types[p.gpu_type].speed for p in pools)
    shares = {}
    for domain, share in (getattr(params, "shares", None) or {}).items():
        if share.fraction is not None:
            shares[domain] = share.fraction
        elif share.gpus and capacity > 0:
            # a type set aside (gpupool.scheduler.quarantine) guarantees nothing meanwhile
            gpus = sum(n * gpu_types[t].speed for t, n in share.gpus.items() if t in gpu_types)
            shares[domain] = gpus / capacity
    return shares


def round_deficits(
    params: object,
    gpu_types: Mapping[str, Any],
    pools: Iterable,
    running: Iterable,
    charged_until: Callable[[int], float | None],
    booked: Callable[[float], Iterable[UsageRecord]],
    now: float,
) -> dict[str, float]:
    """Snapshot.guarantee_deficit for a round at ``now``: the policy's guarantees
    (``params``), the running jobs (model.Running) and how far each was charged,
    and ``booked(window_start)``: the usage the books booked from then to now."""
    pools = tuple(pools)
    shares = guarantee_shares(params, gpu_types, pools)
    if not shares:
        return {}
    start = window_start(WINDOW, now)
    records = list(booked(start))
    pool_type = {p.name: gpu_types[p.gpu_type] for p in pools}
    unbooked: dict[str, float] = defaultdict(float)
    for run in running:  # what running jobs used in the window since they were last charged
        since = max(run.started_at, charged_until(run.job.id) or run.started_at, start)
        if now > since:
            speed = run.job.speed_on(pool_type[run.placement.pool])  # its class's, if any
            hours = (now - since) / 3600.0 * run.job.gpus * speed
            unbooked[run.job.domain] += hours
    # one record per domain (a replay has hundreds of running jobs every round)
    records += [UsageRecord(domain, now, now, hours) for domain, hours in unbooked.items()]
    capacity = sum(p.gpus * gpu_types[p.gpu_type].speed for p in pools)
    return guarantee_deficit(records, shares, WINDOW, now, capacity_per_hour=capacity)


@dataclass
class BookedUsage:
    """Usage a ledger held in memory booked per window and domain, kept up to date as
    entries are appended (a replay's ledger grows to every run it charged: summing it
    whole every round would cost a long replay the square of its length)."""

    seen: int = 0
    sums: dict[tuple[float, str], float] = field(default_factory=dict)

    def since(self, entries: list[LedgerEntry], start: float, now: float) -> list[UsageRecord]:
        for entry in entries[self.seen :]:
            if entry.kind in USAGE_KINDS:
                key = (window_start(WINDOW, entry.at), entry.domain)
                self.sums[key] = self.sums.get(key, 0.0) + entry.effective_gpu_hours
        self.seen = len(entries)
        return [
            UsageRecord(domain, now, now, hours)
            for (window, domain), hours in sorted(self.sums.items())
            if window == start
        ]
