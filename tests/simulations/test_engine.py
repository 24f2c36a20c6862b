"""The simulation engine: exact event logs on hand-made workloads, invariants on random ones.

Times in the hand-worked cases are in hours from the scenario start.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from gpupool.accounting import SubsidyRules
from gpupool.model import (
    Allocation,
    Domain,
    GpupoolError,
    GpuType,
    Job,
    Org,
    Placement,
    Pool,
    Snapshot,
    TimeoutGrace,
    WaitReason,
)
from gpupool.policies.fifo import FifoPolicy
from gpupool.policies.params import PolicyParams, Preemption
from gpupool.simulations.engine import (
    FINISHED,
    HOUR,
    NEVER_FITS,
    NOT_ARRIVED,
    RUNNING,
    TIMED_OUT,
    WAITING,
    EngineOptions,
    simulate,
)
from gpupool.simulations.workload import Scenario, SimJob

A100 = GpuType("a100", "nvidia", 80, speed=1.0)
H100 = GpuType("h100", "nvidia", 80, speed=2.0)


def job(
    job_id: int,
    gpus: int,
    hours: float,
    at: float,
    domain: str = "edu",
    actual: float | None = None,
    types: tuple[str, ...] = (),
) -> SimJob:
    org = "uni" if domain == "edu" else "hospital"
    return SimJob(
        Job(job_id, org, domain, gpus, hours, at * HOUR, gpu_types=types),
        hours if actual is None else actual,
    )


def scenario(*jobs: SimJob, pools=None, orgs=None) -> Scenario:
    """Two pools of 4 GPUs on one node each: ``pa`` (A100, 1.0/GPU-h), ``ph`` (H100, 2.0)."""
    return Scenario(
        name="tiny",
        gpu_types={"a100": A100, "h100": H100},
        pools=pools or (Pool("pa", "s1", "a100", 4, 4, 1.0), Pool("ph", "s2", "h100", 4, 4, 2.0)),
        domains={"edu": Domain("edu", 1.0), "med": Domain("med", 3.0)},
        orgs=orgs or {"uni": Org("uni", "edu"), "hospital": Org("hospital", "med")},
        jobs=tuple(sorted(jobs, key=lambda s: (s.job.submitted_at, s.job.id))),
    )


def log(result) -> dict[int, tuple]:
    """job id -> (state, pool, start hour, finish hour)."""
    return {
        r.job.id: (
            r.state,
            r.pool,
            None if r.first_start is None else round(r.first_start / HOUR, 9),
            None if r.finished_at is None else round(r.finished_at / HOUR, 9),
        )
        for r in result.records
    }


FIVE_JOBS = (
    job(1, 4, 2.0, 0.0),
    job(2, 4, 2.0, 0.0),
    job(3, 2, 1.0, 1.0, domain="med"),
    job(4, 4, 1.0, 1.0),
    job(5, 1, 1.0, 2.0, domain="med"),
)


def test_fifo_exact_log_two_pools_five_jobs():
    # t=0: 1 takes pa (first by name, 2 h at speed 1: ends 2.0); 2 takes ph (2 h / 2: ends 1.0).
    # t=1: 2 ends, 3 and 4 arrive; 3 fits ph (1 h / 2 -> ends 1.5); 4 (4 GPUs) blocks.
    # t=1.5: 3 ends; 4 takes ph (ends 2.0).
    # t=2: 1 and 4 end, 5 arrives: one coalesced round puts 5 on pa (ends 3.0).
    result = simulate(scenario(*FIVE_JOBS), FifoPolicy())
    assert log(result) == {
        1: (FINISHED, "pa", 0.0, 2.0),
        2: (FINISHED, "ph", 0.0, 1.0),
        3: (FINISHED, "ph", 1.0, 1.5),
        4: (FINISHED, "ph", 1.5, 2.0),
        5: (FINISHED, "pa", 2.0, 3.0),
    }
    # GPU-seconds: pa 4 x 2 h + 1 x 1 h = 9 GPU-h; ph 4 x 1 + 2 x 0.5 + 4 x 0.5 = 7 GPU-h.
    assert result.busy_gpu_seconds == {"a100": 9 * HOUR, "h100": 7 * HOUR}
    assert result.end_time == 3 * HOUR
    # Rounds at 0, 1, 1.5 and 2: events at one instant share a round.
    assert result.rounds == 4
    # Job 4 waits from 1 to 1.5 h while 2 H100s sit free: 1 GPU-hour idle while a job waits.
    assert result.idle_while_waiting_gpu_seconds == 1 * HOUR


# Contested: at 1 h the H100 pool frees up and an education 4-GPU gang (waiting
# since 0.5 h) competes with a medical 2-GPU gang (just arrived); medical weighs 3.
CONTESTED = (
    job(1, 4, 2.0, 0.0),
    job(2, 4, 2.0, 0.0),
    job(3, 4, 1.0, 0.5),
    job(4, 2, 1.0, 1.0, domain="med"),
    job(5, 1, 1.0, 2.0, domain="med"),
)
MED_FIRST = PolicyParams(domain_weights={"med": 3.0})


def test_fifo_exact_log_contested():
    # 1 -> pa 0-2, 2 -> ph 0-1. At 1 h job 3 arrived first: ph 1-1.5; 4 waits, then ph 1.5-2.
    # At 2 h job 5 takes pa, the first pool by name: 2-3.
    result = simulate(scenario(*CONTESTED), FifoPolicy(MED_FIRST))
    assert log(result) == {
        1: (FINISHED, "pa", 0.0, 2.0),
        2: (FINISHED, "ph", 0.0, 1.0),
        3: (FINISHED, "ph", 1.0, 1.5),
        4: (FINISHED, "ph", 1.5, 2.0),
        5: (FINISHED, "pa", 2.0, 3.0),
    }


def test_multifactor_exact_log_contested():
    multifactor = pytest.importorskip("gpupool.policies.multifactor")
    # The domain factor (weight 3 vs 1) outweighs job 3's half hour of age and its size:
    # 4 -> ph 1-1.5 (2 GPUs at speed 2); 3 (4 GPUs) cannot backfill into the 2 left, so it
    # starts at 1.5 -> 2.0. Job 5 then takes pa, first by name.
    result = simulate(scenario(*CONTESTED), multifactor.MultifactorPolicy(params=MED_FIRST))
    assert log(result) == {
        1: (FINISHED, "pa", 0.0, 2.0),
        2: (FINISHED, "ph", 0.0, 1.0),
        3: (FINISHED, "ph", 1.5, 2.0),
        4: (FINISHED, "ph", 1.0, 1.5),
        5: (FINISHED, "pa", 2.0, 3.0),
    }


def test_priority_exact_log_contested():
    priority = pytest.importorskip("gpupool.policies.priority")
    # Jobs start in priority order; the LP only chooses where. At 0 h jobs 1 and 2 tie and
    # job 1 (lower id) is placed first, on the fast pool the LP plans for its class (ph).
    # At 1 h only ph has room: med job 4 (weight 3) goes before edu job 3 (weight 1):
    # 4 -> ph 1-1.5, and 3 (4 GPUs) fits only once 4 ends: ph 1.5-2. At 2 h job 5 is worth
    # more on ph (speed 2): 2-2.5.
    result = simulate(scenario(*CONTESTED), priority.PriorityPolicy(params=MED_FIRST))
    assert log(result) == {
        1: (FINISHED, "ph", 0.0, 1.0),
        2: (FINISHED, "pa", 0.0, 2.0),
        3: (FINISHED, "ph", 1.5, 2.0),
        4: (FINISHED, "ph", 1.0, 1.5),
        5: (FINISHED, "ph", 2.0, 2.5),
    }


def test_fifo_charges_are_booked_from_the_allocation():
    rules = SubsidyRules(domain_rates={"med": 0.5})
    result = simulate(scenario(*FIVE_JOBS), FifoPolicy(PolicyParams(subsidy=rules)), pricing=rules)
    costs = {r.job.id: (r.cost, r.subsidy, r.org_pays) for r in result.records}
    # job 3: 2 GPUs x 0.5 h on H100 x 2.0 = 2.0, half subsidised; job 5: 1 x 1 h x 1.0.
    assert costs[3] == (2.0, 1.0, 1.0)
    assert costs[5] == (1.0, 0.5, 0.5)
    assert costs[1] == (8.0, 0.0, 8.0)
    # charged on actual use: the last subsidised run (job 3 or 5) is booked when it ends
    assert result.subsidy_series[-1][1] == 1.5
    ends = {r.job.id: r.finished_at for r in result.records}
    assert result.subsidy_series[-1][0] == max(ends[3], ends[5])


def test_runtime_uses_actual_hours_and_expected_end_uses_the_estimate():
    seen: list[Snapshot] = []

    @dataclass(frozen=True)
    class Spy:
        inner: FifoPolicy = field(default_factory=FifoPolicy)

        def allocate(self, snapshot):
            seen.append(snapshot)
            return self.inner.allocate(snapshot)

    # estimate 4 h, really 1 h, on H100 (speed 2): expected end 2 h, actual end 0.5 h.
    # Job 2 arrives at 0.1 h and cannot fit: no round. Job 3 fits pa at 0.2 h: a round.
    work = scenario(
        job(1, 4, 4.0, 0.0, actual=1.0, types=("h100",)),
        job(2, 4, 1.0, 0.1, types=("h100",)),
        job(3, 1, 1.0, 0.2, types=("a100",)),
    )
    result = simulate(work, Spy())
    assert log(result)[1] == (FINISHED, "ph", 0.0, 0.5)
    assert log(result)[2] == (FINISHED, "ph", 0.5, 1.0)
    assert [s.now / HOUR for s in seen] == [0.0, 0.2, 0.5]
    (running,) = seen[1].running
    assert (running.job.id, running.started_at, running.expected_end) == (1, 0.0, 2 * HOUR)
    assert [j.id for j in seen[1].pending] == [2, 3]
    # 0.1-0.2 h: job 2 may use only the busy H100s, so the idle A100s do not count;
    # 0.2-0.5 h: strict FIFO keeps job 3 behind job 2, so 4 A100s idle while job 3 waits.
    assert log(result)[3] == (FINISHED, "pa", 0.5, 1.5)
    assert result.idle_while_waiting_gpu_seconds == pytest.approx(4 * 0.3 * HOUR)


def test_usage_is_decayed_effective_gpu_hours():
    seen: list[Snapshot] = []

    class Recorder:
        def allocate(self, snapshot):
            seen.append(snapshot)
            return FifoPolicy().allocate(snapshot)

    # 2 GPUs of speed 1 busy from 0 to 1 h, half-life 1 h: u(1) = 2 (1 - 1/2) / ln 2,
    # then it halves by t = 2 h, when the second job arrives.
    work = scenario(job(1, 2, 1.0, 0.0, types=("a100",)), job(2, 1, 1.0, 2.0))
    simulate(work, Recorder(), options=EngineOptions(usage_half_life_hours=1.0))
    assert seen[-1].now == 2 * HOUR
    assert seen[-1].usage["edu"] == pytest.approx(0.5 / math.log(2))
    assert seen[-1].usage["med"] == 0.0


@dataclass(frozen=True)
class PreemptOnce:
    """Stops job ``victim`` at the first round where ``urgent`` waits, and starts ``urgent``."""

    victim: int
    urgent: int
    may_preempt: bool = True

    def allocate(self, snapshot: Snapshot) -> Allocation:
        running = {r.job.id: r for r in snapshot.running}
        pending = {j.id for j in snapshot.pending}
        if self.urgent in pending and self.victim in running:
            nodes = running[self.victim].placement.nodes
            pool = running[self.victim].placement.pool
            place = Placement(self.urgent, pool, nodes)
            waiting = {j: WaitReason.PRIORITY for j in pending if j != self.urgent}
            waiting[self.victim] = WaitReason.PRIORITY
            return Allocation(placements=(place,), preempt=(self.victim,), waiting=waiting)
        return FifoPolicy().allocate(snapshot)


def test_preempted_job_keeps_its_progress_and_is_refunded():
    pools = (Pool("pa", "s1", "a100", 4, 4, 1.0),)
    # 1 runs 0..1 h of its 3 h, is preempted by 2 (1 h), resumes at 2 h, ends at 4 h.
    work = scenario(job(1, 4, 3.0, 0.0), job(2, 4, 1.0, 1.0, domain="med"), pools=pools)
    result = simulate(work, PreemptOnce(victim=1, urgent=2))
    assert log(result) == {1: (FINISHED, "pa", 0.0, 4.0), 2: (FINISHED, "pa", 1.0, 2.0)}
    first = result.records[0]
    assert first.preemptions == 1
    assert first.run_seconds == 3 * HOUR
    assert first.effective_gpu_hours == pytest.approx(12.0)
    # charged 12 at the start, 2/3 refunded at preemption, 8 charged for the remaining 2 h
    assert first.cost == pytest.approx(12.0)
    assert result.busy_gpu_seconds["a100"] == 16 * HOUR


def test_never_fitting_and_not_arrived_jobs_are_counted():
    work = scenario(
        job(1, 8, 1.0, 0.0),  # no pool has 8 GPUs on a node or in total
        job(2, 4, 1.0, 0.0, types=("h100",)),
        job(3, 1, 1.0, 5.0),
    )
    result = simulate(work, FifoPolicy(), options=EngineOptions(until_hours=0.25))
    states = {r.job.id: r.state for r in result.records}
    assert states == {1: NEVER_FITS, 2: RUNNING, 3: NOT_ARRIVED}
    assert result.dropped == {NEVER_FITS: 1}
    assert result.end_time == 0.25 * HOUR


def test_a_policy_placing_on_a_full_node_is_an_error():
    class Greedy:
        def allocate(self, snapshot):
            return Allocation(
                placements=tuple(Placement(j.id, "pa", ((0, j.gpus),)) for j in snapshot.pending)
            )

    with pytest.raises(GpupoolError, match="overfills node 0 of pa with job 2"):
        simulate(scenario(job(1, 4, 1.0, 0.0), job(2, 4, 1.0, 0.0)), Greedy())


def test_min_round_interval_delays_rounds():
    work = scenario(job(1, 4, 1.0, 0.0, types=("a100",)), job(2, 4, 1.0, 0.5, types=("a100",)))
    # rounds at 0 h, then no earlier than 2 h after it: job 2 starts at 2 h, not 1 h
    result = simulate(work, FifoPolicy(), options=EngineOptions(min_round_interval_s=2 * HOUR))
    assert log(result)[2] == (FINISHED, "pa", 2.0, 3.0)


# ---------------------------------------------------------------------------
# Invariants on seeded random workloads
# ---------------------------------------------------------------------------


BUDGET = 250.0


def random_scenario(seed: int, count: int = 120) -> Scenario:
    rng = random.Random(seed)
    pools = (
        Pool("pa", "s1", "a100", 16, 8, 1.0),
        Pool("ph", "s2", "h100", 12, 4, 2.5),
        Pool("pz", "s3", "a100", 3, 1, 0.8),
    )
    jobs = []
    at = 0.0
    for job_id in range(1, count + 1):
        at += rng.expovariate(4.0)
        gpus = rng.choice((1, 1, 1, 2, 4, 8, 12, 16, 24))
        actual = rng.uniform(0.05, 3.0)
        types = rng.choice(((), (), ("a100",), ("h100",)))
        domain = rng.choice(("edu", "med"))
        jobs.append(job(job_id, gpus, actual * rng.uniform(0.5, 2), at, domain, actual, types))
    orgs = {"uni": Org("uni", "edu", budget=BUDGET), "hospital": Org("hospital", "med")}
    return scenario(*jobs, pools=pools, orgs=orgs)


def policies():
    found = [FifoPolicy()]
    for module, name in (("multifactor", "MultifactorPolicy"), ("priority", "PriorityPolicy")):
        try:
            cls = getattr(__import__(f"gpupool.policies.{module}", fromlist=[name]), name)
        except ImportError:
            continue
        found.append(cls(params=PolicyParams(time_limit_s=1.0)))
    if len(found) == 3:  # priority with preemption: med outranks edu by 2
        preempting = PolicyParams(domain_weights={"med": 3.0}, preemption=Preemption(True, 2.0))
        found.append(cls(params=preempting))
    return found


NO_GRACE = EngineOptions(timeout_grace=TimeoutGrace(0.0, 0.0))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_conservation_and_capacity_on_random_workloads(seed):
    work = random_scenario(seed)
    capacity = {"a100": 19, "h100": 12}
    for policy in policies():
        # no timeout grace: every run stops by its estimate, which is what admitted it
        result = simulate(
            work, policy, pricing=SubsidyRules(domain_rates={"med": 0.3}), options=NO_GRACE
        )
        states = [r.state for r in result.records]
        assert len(states) == len(work.jobs)
        assert states.count(NEVER_FITS) == result.dropped.get(NEVER_FITS, 0)
        assert set(states) <= {FINISHED, TIMED_OUT, WAITING, NEVER_FITS}  # the run drains
        for gpu_type, busy in result.busy_gpu_seconds.items():
            assert busy <= capacity[gpu_type] * result.end_time + 1e-6
        for _time, busy in result.utilisation_series:
            assert all(0 <= b <= capacity[t] for b, t in zip(busy, ("a100", "h100"), strict=True))
        finished = [r for r in result.records if r.state == FINISHED]
        for r in finished:
            assert r.first_start >= r.job.submitted_at
            assert r.effective_gpu_hours == pytest.approx(r.job.gpus * r.actual_hours)
        for r in result.records:
            if r.state == TIMED_OUT:  # did its estimate's worth of work, no more
                assert r.actual_hours > r.job.hours
                assert r.effective_gpu_hours == pytest.approx(r.job.gpus * r.job.hours)
        # the org with a budget never pays more than it: usage is charged as it
        # ran, and with no grace no run outlives the estimate it was admitted on
        uni = [r for r in result.records if r.job.org == "uni"]
        assert sum(r.org_pays for r in uni) <= BUDGET + 1e-9


def test_timeout_grace_bounds_what_an_org_pays_past_its_budget():
    """With the default grace (10% + 5 min) a run may outlive its admitted estimate,
    so the org's budget can be passed by at most the grace its runs used."""
    work = random_scenario(1)
    grace = TimeoutGrace()
    result = simulate(work, FifoPolicy(), pricing=SubsidyRules(domain_rates={"med": 0.3}))
    timed_out = [r for r in result.records if r.state == TIMED_OUT]
    assert timed_out  # the workload has estimates well below the actual runtime
    speeds = {"a100": 1.0, "h100": 2.0}
    for r in timed_out:
        assert r.preemptions == 0  # fifo never preempts: one run, stopped at its limit
        limit = grace.run_limit_seconds(r.job.hours, speeds[r.gpu_type])
        assert r.run_seconds == pytest.approx(limit)
        assert r.finished_at == pytest.approx(r.first_start + limit)
    uni = [r for r in result.records if r.job.org == "uni"]
    over = 0.0
    for r in uni:
        estimate = r.job.hours / speeds.get(r.gpu_type, 1.0) * HOUR
        over += r.cost * max(0.0, 1 - estimate / r.run_seconds) if r.run_seconds else 0.0
    assert sum(r.org_pays for r in uni) <= BUDGET + over + 1e-6


def test_same_seed_same_results():
    first = simulate(random_scenario(7), FifoPolicy())
    second = simulate(random_scenario(7), FifoPolicy())
    assert log(first) == log(second)
    assert first.busy_gpu_seconds == second.busy_gpu_seconds
    assert first.utilisation_series == second.utilisation_series


@pytest.mark.parametrize("seed", [4, 5])
def test_skipping_idle_rounds_changes_nothing(seed):
    work = random_scenario(seed)
    for policy in policies():
        fast = simulate(work, policy)
        exact = simulate(work, policy, options=EngineOptions(skip_idle_rounds=False))
        assert log(fast) == log(exact)
        assert fast.rounds <= exact.rounds
