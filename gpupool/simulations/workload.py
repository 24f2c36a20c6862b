"""What a simulation replays: a platform and a stream of job arrivals.

Scenario files (synthetic or real traces) parse into a Scenario; the engine
replays it under a Policy. Plain data, no SimPy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gpupool.model import Domain, GpuType, Job, Org, Pool


@dataclass(frozen=True, slots=True)
class SimJob:
    """A job arrival: ``job.submitted_at`` is the arrival instant (seconds since
    the Unix epoch: the scenario's ``start`` plus the time into the replay),
    ``job.hours`` the user's estimate on the reference GPU, ``actual_hours``
    how long it really runs there (traces give this)."""

    job: Job
    actual_hours: float


@dataclass(frozen=True)
class Scenario:
    name: str
    gpu_types: Mapping[str, GpuType]
    pools: tuple[Pool, ...]
    domains: Mapping[str, Domain]
    orgs: Mapping[str, Org]
    jobs: tuple[SimJob, ...]  # sorted by (arrival, id)
    dropped: Mapping[str, int] = field(default_factory=dict)  # reason -> jobs dropped while loading
    # Subsidy programmes / vouchers declared by the scenario (gpupool.accounting objects).
    programmes: tuple[object, ...] = ()
    vouchers: tuple[object, ...] = ()
    seed: int = 0
    # reason -> jobs kept but changed while loading (fractional GPU rounded up, censored runtime)
    adjusted: Mapping[str, int] = field(default_factory=dict)
    # The replay's first instant, seconds since the epoch (a scenario's ``start:``): the
    # calendar budget periods, quarters and voucher expiry fall on. 0 = 1970-01-01.
    start: float = 0.0
