"""Seeded synthetic workloads and runtime-estimate models.

A synthetic workload is one :class:`Stream` per domain: Poisson arrivals at
``rate_per_hour`` over the scenario's horizon, each job from one of the
domain's orgs (uniformly), with a gang size drawn from a discrete
distribution and a runtime from a continuous one. Arrival times are seconds
from the scenario start (t = 0), so the first job usually arrives after 0.

Determinism: stream ``i`` draws from ``numpy.random.default_rng([seed, i])``,
so the same seed gives the same jobs, and adding a stream at the end leaves the
earlier streams' jobs unchanged. Jobs are numbered 1..N by (arrival, stream,
draw order).

Estimates: traces and generators give the real runtime (``actual_hours``);
``Job.hours`` is what the user asked for. :func:`apply_estimate` turns the
real runtime into the estimate: ``Exact`` (the default), ``Factor`` (users
over-ask by a constant factor) or ``Noisy`` (multiplicative log-normal error,
median 1, seeded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from gpupool.limits import MAX_JOB_HOURS
from gpupool.model import Job
from gpupool.simulations.workload import SimJob

MIN_RUNTIME_HOURS = 1 / 60  # one minute: shorter jobs are scheduling noise


# ---------------------------------------------------------------------------
# Runtime distributions (hours on the reference GPU)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fixed:
    hours: float

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return np.full(count, self.hours)


@dataclass(frozen=True, slots=True)
class Exponential:
    mean: float

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.exponential(self.mean, count)


@dataclass(frozen=True, slots=True)
class LogNormal:
    """Heavy-tailed like real traces: half the jobs run less than ``median`` hours."""

    median: float
    sigma: float

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.lognormal(math.log(self.median), self.sigma, count)


@dataclass(frozen=True, slots=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, count)


Runtime = Fixed | Exponential | LogNormal | Uniform


@dataclass(frozen=True)
class Stream:
    """The jobs of one domain: who submits, how often, how big, how long, where."""

    domain: str
    orgs: tuple[str, ...]
    rate_per_hour: float
    gang_sizes: tuple[int, ...]
    gang_weights: tuple[float, ...]  # relative; normalised when sampling
    runtime: Runtime
    gpu_types: tuple[str, ...] = ()
    max_hours: float | None = None


def generate(streams: Sequence[Stream], horizon_hours: float, seed: int) -> tuple[SimJob, ...]:
    """All streams' arrivals in ``[0, horizon_hours)``, numbered 1..N in arrival order."""
    drawn: list[tuple[float, int, int, Job, float]] = []
    for index, stream in enumerate(streams):
        rng = np.random.default_rng([seed, index])
        for order, (at, job, hours) in enumerate(_draw(stream, horizon_hours, rng)):
            drawn.append((at, index, order, job, hours))
    drawn.sort(key=lambda item: item[:3])
    return tuple(
        SimJob(job=replace(job, id=number), actual_hours=hours)
        for number, (_, _, _, job, hours) in enumerate(drawn, start=1)
    )


def _draw(
    stream: Stream, horizon_hours: float, rng: np.random.Generator
) -> list[tuple[float, Job, float]]:
    # A Poisson process on [0, T): a Poisson count of uniformly placed arrivals.
    count = int(rng.poisson(stream.rate_per_hour * horizon_hours))
    arrivals = np.sort(rng.uniform(0.0, horizon_hours * 3600.0, count))
    weights = np.asarray(stream.gang_weights, dtype=float)
    sizes = rng.choice(np.asarray(stream.gang_sizes), size=count, p=weights / weights.sum())
    # No job asks for more than the platform's limit (gpupool.limits): a heavy tail
    # (sigma 10) would otherwise end jobs past the dates the simulator can represent.
    cap = MAX_JOB_HOURS if stream.max_hours is None else min(stream.max_hours, MAX_JOB_HOURS)
    hours = np.clip(stream.runtime.sample(rng, count), MIN_RUNTIME_HOURS, cap)
    org_index = rng.integers(0, len(stream.orgs), count)
    jobs = []
    for at, gpus, runtime, org in zip(arrivals, sizes, hours, org_index, strict=True):
        job = Job(
            id=0,
            org=stream.orgs[org],
            domain=stream.domain,
            gpus=int(gpus),
            hours=float(runtime),
            submitted_at=float(at),
            gpu_types=stream.gpu_types,
            name=f"{stream.domain}-{len(jobs) + 1}",
        )
        jobs.append((float(at), job, float(runtime)))
    return jobs


# ---------------------------------------------------------------------------
# Runtime estimates: Job.hours from the real runtime
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exact:
    def estimates(self, actual: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return actual


@dataclass(frozen=True, slots=True)
class Factor:
    factor: float

    def estimates(self, actual: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return actual * self.factor


@dataclass(frozen=True, slots=True)
class Noisy:
    """estimate = actual x exp(N(0, sigma)): unbiased in the median, never negative."""

    sigma: float

    def estimates(self, actual: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return actual * np.exp(rng.normal(0.0, self.sigma, len(actual)))


Estimate = Exact | Factor | Noisy


def apply_estimate(jobs: Sequence[SimJob], estimate: Estimate, seed: int) -> tuple[SimJob, ...]:
    """Replace each job's ``hours`` by the estimate of its ``actual_hours``.

    Loaders and generators already set ``hours`` = ``actual_hours``, so the
    exact estimate returns the jobs unchanged (and copies nothing).
    """
    if isinstance(estimate, Exact):
        return tuple(jobs)
    rng = np.random.default_rng([seed, 0xE57])  # a stream apart from the generators'
    actual = np.fromiter((sim.actual_hours for sim in jobs), dtype=float, count=len(jobs))
    hours = np.minimum(estimate.estimates(actual, rng), MAX_JOB_HOURS)  # as users may ask
    return tuple(
        replace(sim, job=replace(sim.job, hours=float(value)))
        for sim, value in zip(jobs, hours, strict=True)
    )


# ---------------------------------------------------------------------------
# Offered load: what a scenario asks of its platform, from its parameters
# ---------------------------------------------------------------------------


def mean_runtime(runtime: Runtime, cap: float | None = None) -> float:
    """E[min(runtime, cap)] in hours, in closed form (the one-minute floor is ignored:
    it moves the mean by less than a minute's fraction of the jobs that short)."""
    cap = math.inf if cap is None else cap
    if isinstance(runtime, Fixed):
        return min(runtime.hours, cap)
    if isinstance(runtime, Exponential):
        return runtime.mean * -math.expm1(-cap / runtime.mean)
    if isinstance(runtime, Uniform):
        low, high = runtime.low, runtime.high
        if cap >= high:
            return (low + high) / 2
        if cap <= low:
            return cap
        return ((cap * cap - low * low) / 2 + cap * (high - cap)) / (high - low)
    return _lognormal_capped_mean(runtime, cap)


def _lognormal_capped_mean(runtime: LogNormal, cap: float) -> float:
    mu, sigma = math.log(runtime.median), runtime.sigma
    mean = math.exp(mu + sigma * sigma / 2)
    if math.isinf(cap):
        return mean
    if sigma == 0:
        return min(runtime.median, cap)
    log_cap = math.log(cap)
    below = _normal_cdf((log_cap - mu - sigma * sigma) / sigma)
    above = 1 - _normal_cdf((log_cap - mu) / sigma)
    return mean * below + cap * above


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def offered_gpu_hours_per_hour(stream: Stream) -> float:
    """Expected reference GPU-hours of work the stream brings per hour of arrivals."""
    weights = np.asarray(stream.gang_weights, dtype=float)
    mean_gang = float(np.dot(stream.gang_sizes, weights / weights.sum()))
    return stream.rate_per_hour * mean_gang * mean_runtime(stream.runtime, stream.max_hours)
