"""The seeded synthetic generator and the runtime-estimate models."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import pytest

from gpupool.simulations.synthetic import (
    MIN_RUNTIME_HOURS,
    Exact,
    Exponential,
    Factor,
    Fixed,
    LogNormal,
    Noisy,
    Stream,
    Uniform,
    apply_estimate,
    generate,
)


def _stream(domain="med", **changes) -> Stream:
    options = {
        "domain": domain,
        "orgs": ("a", "b"),
        "rate_per_hour": 10.0,
        "gang_sizes": (1, 2, 8),
        "gang_weights": (6.0, 3.0, 1.0),
        "runtime": LogNormal(2.0, 1.0),
        "gpu_types": ("A100",),
    } | changes
    return Stream(**options)


def test_same_seed_same_jobs_other_seed_other_jobs():
    streams = [_stream(), _stream("edu", orgs=("c",))]
    assert generate(streams, 48, seed=1) == generate(streams, 48, seed=1)
    assert generate(streams, 48, seed=1) != generate(streams, 48, seed=2)


def test_ids_arrivals_and_fields_are_consistent():
    jobs = generate([_stream(), _stream("edu", orgs=("c",), gpu_types=())], 24, seed=5)
    assert [sim.job.id for sim in jobs] == list(range(1, len(jobs) + 1))
    times = [sim.job.submitted_at for sim in jobs]
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 24 * 3600
    for sim in jobs:
        job = sim.job
        assert job.hours == sim.actual_hours >= MIN_RUNTIME_HOURS
        if job.domain == "med":
            assert job.org in {"a", "b"} and job.gpus in {1, 2, 8}
            assert job.gpu_types == ("A100",)
        else:
            assert (job.domain, job.org, job.gpu_types) == ("edu", "c", ())


def test_adding_a_stream_leaves_earlier_streams_unchanged():
    alone = generate([_stream()], 24, seed=3)
    both = generate([_stream(), _stream("edu", orgs=("c",))], 24, seed=3)
    med = [sim for sim in both if sim.job.domain == "med"]
    key = [(s.job.name, s.job.submitted_at, s.job.gpus, s.actual_hours) for s in alone]
    assert [(s.job.name, s.job.submitted_at, s.job.gpus, s.actual_hours) for s in med] == key


def test_rates_and_gang_mix_match_the_stream_within_five_sigma():
    jobs = generate([_stream()], 1000, seed=11)  # expect 10,000 arrivals, sd 100
    assert abs(len(jobs) - 10_000) < 500
    sizes = Counter(sim.job.gpus for sim in jobs)
    for size, share in ((1, 0.6), (2, 0.3), (8, 0.1)):
        sd = math.sqrt(share * (1 - share) / len(jobs))
        assert abs(sizes[size] / len(jobs) - share) < 5 * sd
    assert set(sizes) == {1, 2, 8}


def test_runtime_distributions():
    def hours(runtime, **changes):
        stream = _stream(runtime=runtime, rate_per_hour=20.0, **changes)
        return [sim.actual_hours for sim in generate([stream], 200, seed=2)]

    assert set(hours(Fixed(1.25))) == {1.25}
    assert set(hours(Fixed(0.001))) == {MIN_RUNTIME_HOURS}  # clamped up to a minute
    assert max(hours(LogNormal(2.0, 2.0), max_hours=5.0)) == 5.0
    lognormal = hours(LogNormal(2.0, 1.0))
    assert statistics.median(lognormal) == pytest.approx(2.0, rel=0.1)
    assert statistics.mean(hours(Exponential(3.0))) == pytest.approx(3.0, rel=0.1)
    uniform = hours(Uniform(1.0, 3.0))
    assert min(uniform) >= 1.0 and max(uniform) < 3.0
    assert statistics.mean(uniform) == pytest.approx(2.0, rel=0.05)


def test_estimates():
    jobs = generate([_stream()], 100, seed=4)
    assert apply_estimate(jobs, Exact(), seed=4) == jobs
    doubled = apply_estimate(jobs, Factor(2.0), seed=4)
    assert [s.job.hours for s in doubled] == [2.0 * s.actual_hours for s in jobs]
    assert [s.actual_hours for s in doubled] == [s.actual_hours for s in jobs]
    assert apply_estimate(jobs, Noisy(0.0), seed=4) == jobs
    noisy = apply_estimate(jobs, Noisy(0.5), seed=4)
    assert noisy == apply_estimate(jobs, Noisy(0.5), seed=4)
    assert noisy != apply_estimate(jobs, Noisy(0.5), seed=5)
    ratios = [math.log(s.job.hours / s.actual_hours) for s in noisy]
    # log-ratios ~ N(0, 0.5): mean within 5 standard errors, spread close to sigma
    assert abs(statistics.mean(ratios)) < 5 * 0.5 / math.sqrt(len(ratios))
    assert statistics.stdev(ratios) == pytest.approx(0.5, rel=0.1)
    assert [s.job.id for s in noisy] == [s.job.id for s in jobs]
