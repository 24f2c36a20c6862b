"""Replay one scenario twice, through the simulator and through the live scheduler, and compare.

The proof that one round driver (gpupool.scheduler.driver) gives one truth:
the simulator (gpupool.simulations.engine) and the live path on a real
database (service.submit_job, rounds.run_active_round, lifecycle.finish_job,
the reaper) replay the same scenario under the same policy document, and every
job's record and every ledger entry must come out identical.

The live replay keeps a simulated clock and plays the *site*: it submits each
job at its arrival, reports a run finished when its actual work is done
(actual hours / speed after its start; a preempted run keeps the work it did,
as the simulator's site does), never reports a run that outlives its estimate
+ grace (the scheduler's reaper ends it at its deadline), and runs a round at
every instant something happened while jobs wait, as the simulator does with
``skip_idle_rounds=False``. A round that only preempted is followed by another
at the same instant (the simulator's rule). Scenario times are epoch seconds
(periods and vouchers are calendar instants on both sides), whole seconds, so
the database's microseconds lose nothing.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from dataclasses import dataclass, field

from gpupool.model import Domain, GpuType, Job, Org, Pool, TimeoutGrace
from gpupool.policies.params import Preemption
from gpupool.simulations.workload import Scenario, SimJob

HOUR = 3600.0
COMPARED_KINDS = ("award", "charge", "correction", "expiry", "carry_over")
START = dt.datetime(2026, 10, 5, tzinfo=dt.UTC).timestamp()  # a Monday in 2026-Q4
Q4_END = dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one job, in the fields both replays know."""

    job_id: int
    state: str  # finished | timed_out | waiting | running | failed
    first_start: float | None
    pool: str | None  # of its last run
    nodes: tuple[tuple[int, int], ...]  # of its last run
    ended_at: float | None
    preemptions: int


@dataclass(frozen=True)
class Replay:
    jobs: dict[int, JobOutcome]
    ledger: list[tuple]  # sorted (kind, job, org, period, at, pool, cost, subsidy, pays, egh, ...)
    rounds: int = 0


@dataclass
class Difference:
    jobs: dict[int, tuple[JobOutcome, JobOutcome]] = field(default_factory=dict)
    only_simulated: list[tuple] = field(default_factory=list)
    only_live: list[tuple] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.jobs or self.only_simulated or self.only_live)


def compare(simulated: Replay, live: Replay) -> Difference:
    diff = Difference()
    for job_id in sorted(set(simulated.jobs) | set(live.jobs)):
        a, b = simulated.jobs.get(job_id), live.jobs.get(job_id)
        if a != b:
            diff.jobs[job_id] = (a, b)
    left, right = list(simulated.ledger), list(live.ledger)
    for entry in list(left):
        if entry in right:
            right.remove(entry)
            left.remove(entry)
    diff.only_simulated, diff.only_live = left, right
    return diff


# -- the scenario ----------------------------------------------------------------


def synthetic(seed: int, jobs: int = 24, hours: float = 36.0) -> Scenario:
    """Two GPU types, three pools, two domains, three orgs (two with budgets), a
    programme paid in vouchers (one expiring mid-run) and flat subsidy rules; jobs
    arrive over ``hours`` on whole minutes, some overrunning their estimate. The
    policy's flat subsidy rules (POLICY) subsidise the general domain."""
    from gpupool.accounting.declarations import parse_programmes
    from gpupool.accounting.programmes import Voucher

    rng = random.Random(seed)
    gpu_types = {
        "A100": GpuType("A100", "NVIDIA", 80, 1.0),
        "H100": GpuType("H100", "NVIDIA", 80, 2.0),
    }
    pools = (
        Pool("p-a100", "Beijing", "A100", 16, 8, 10.0),
        Pool("p-a100b", "Wuhan", "A100", 8, 4, 8.0),
        Pool("p-h100", "Shanghai", "H100", 8, 8, 20.0),
    )
    domains = {"general": Domain("general", 1.0), "medical": Domain("medical", 3.0)}
    orgs = {
        "clinic": Org("clinic", "medical", budget=150.0),
        "hosp": Org("hosp", "medical", budget=1200.0),
        "lab": Org("lab", "general"),
    }
    (programme,) = parse_programmes(
        [
            {
                "name": "health",
                "period": "quarterly",
                "budget": 2000,
                "domains": ["medical"],
                "rate": 0.5,
                "vouchers": True,
                "exchange_rates": {"H100": 0.6},
                "org_cap": 900,
            }
        ]
    )
    vouchers = (
        Voucher(1, "hosp", "health", 60.0, 60.0, START - HOUR, START + 10 * HOUR),
        Voucher(2, "clinic", "health", 40.0, 40.0, START - HOUR, Q4_END),  # the default expiry
    )
    work = []
    for _ in range(jobs):
        minute = rng.randrange(0, int(hours * 60))
        org = rng.choice(sorted(orgs))
        estimate = rng.choice((0.5, 1.0, 2.0, 3.0, 6.0))
        actual_minutes = max(1, round(estimate * 60 * rng.choice((0.3, 0.7, 1.0, 1.5))))
        gpus = rng.choice((1, 2, 4, 8))
        types = rng.choice(((), (), ("A100",), ("H100",)))
        work.append((START + minute * 60.0, org, gpus, estimate, actual_minutes / 60, types))
    work.sort(key=lambda w: w[0])
    sim_jobs = tuple(
        SimJob(
            Job(i, org, orgs[org].domain, gpus, estimate, at, gpu_types=types),
            actual,
        )
        for i, (at, org, gpus, estimate, actual, types) in enumerate(work, start=1)
    )
    return Scenario(
        name=f"differential-{seed}",
        gpu_types=gpu_types,
        pools=pools,
        domains=domains,
        orgs=orgs,
        jobs=sim_jobs,
        programmes=(programme,),
        vouchers=vouchers,
        seed=seed,
    )


POLICY = """\
kind: priority
domains:
  medical: {weight: 3.0, guarantee: {fraction: 0.25}, borrow_limit: 0.5}
  general: {weight: 1.0, guarantee: {gpus: {A100: 8}}}
preemption: {enabled: true, min_gap: 2.0}
subsidy:
  domain_rates: {general: 0.2}
  period_budget: 300
time_limit_s: 5.0
"""


def policy_document(text: str = POLICY):
    """The policy both replays run: the simulator builds it, the live path stores and
    activates it (rounds then build it from the database, as a daemon's do)."""
    from gpupool.policies.document import parse_policy_text

    return parse_policy_text(text, source="differential policy")


# -- (a) the simulator -----------------------------------------------------------


def replay_simulated(scenario: Scenario, document) -> Replay:
    from gpupool.simulations.engine import EngineOptions, simulate

    options = EngineOptions(skip_idle_rounds=False, timeout_grace=TimeoutGrace())
    pricing = document.params.subsidy
    result = simulate(scenario, document.build(), pricing=pricing, options=options)
    jobs = {}
    for record in result.records:
        jobs[record.job.id] = JobOutcome(
            job_id=record.job.id,
            state=record.state,
            first_start=record.first_start,
            pool=record.pool,
            nodes=record.nodes,
            ended_at=record.finished_at,
            preemptions=record.preemptions,
        )
    ledger = sorted(
        _entry_key(
            e.kind,
            e.job_id,
            e.org,
            e.period,
            e.at,
            e.pool,
            e.cost,
            e.subsidy,
            e.org_pays,
            e.effective_gpu_hours,
            e.programme,
            e.voucher_id,
        )
        for e in result.ledger
        if e.kind in COMPARED_KINDS
    )
    return Replay(jobs, ledger, result.rounds)


def _entry_key(kind, job_id, org, period, at, pool, cost, subsidy, pays, egh, programme, voucher):
    return (
        kind,
        job_id,
        org,
        period,
        round(float(at), 3),
        pool,
        f"{float(cost):.2f}",
        f"{float(subsidy):.2f}",
        f"{float(pays):.2f}",
        round(float(egh), 6),
        programme,
        voucher,
    )


# -- (b) the live path -----------------------------------------------------------


@dataclass
class _SiteRun:
    start: float
    speed: float
    work: float  # reference hours of work left at start
    deadline: float
    restore: float = 0.0  # seconds a resumed run restores first (the simulator's rule)
    checkpoints: Preemption = Preemption()  # what a preemption keeps of its progress

    @property
    def end(self) -> float:
        return self.start + self.restore + self.work / self.speed * HOUR

    def done(self, now: float) -> float:
        """Reference hours of work done by ``now``."""
        progress = max(0.0, now - self.start - self.restore)
        kept = progress - self.checkpoints.unsaved_seconds(progress)
        return min(self.work, kept / HOUR * self.speed)


class LiveReplay:
    """The live scheduler on the database at ``url``, driven by a simulated clock."""

    def __init__(self, url: str, scenario: Scenario, document) -> None:
        from gpupool.scheduler import lifecycle

        self.url = url
        self.scenario = scenario
        self.document = document
        self.grace = lifecycle.Grace()
        self.limit = TimeoutGrace(self.grace.fraction, self.grace.minutes)
        self.work = {s.job.id: s.actual_hours for s in scenario.jobs}
        self.runs: dict[int, _SiteRun] = {}
        self.pending: set[int] = set()
        self.rounds = 0
        self.site = document.params.preemption  # the engine's site rule (_restart_rule)
        self.resumed: set[int] = set()  # jobs preempted before
        self.wakeups: set[float] = set()  # instants the policy asked for a round at

    def run(self) -> Replay:
        from gpupool.scheduler.database import make_engine

        self.engine = make_engine(self.url)  # one engine: its statement cache serves every round
        try:
            return self._run()
        finally:
            self.engine.dispose()

    def _run(self) -> Replay:
        self._build()
        arrivals = sorted(self.scenario.jobs, key=lambda s: (s.job.submitted_at, s.job.id))
        times = sorted({s.job.submitted_at for s in arrivals})
        heapq.heapify(times)
        nxt = 0
        while times:
            now = heapq.heappop(times)
            while times and times[0] == now:
                heapq.heappop(times)
            batch = []
            while nxt < len(arrivals) and arrivals[nxt].job.submitted_at == now:
                batch.append(arrivals[nxt])
                nxt += 1
            self._submit(batch, now)
            reported = self._site_reports(now)
            overdue = any(run.deadline == now for run in self.runs.values())
            asked = now in self.wakeups  # the simulator rounds then, jobs waiting or not
            self.wakeups.discard(now)
            if not (batch or reported or overdue or asked):
                continue  # the end of a run that was preempted since: nothing happens
            if self.pending or asked:
                for event in self._round(now):
                    heapq.heappush(times, event)
            elif any(run.deadline == now for run in self.runs.values()):
                self._reap(now)
        return self._read()

    # the platform, as an admin declares it
    def _build(self) -> None:
        from gpupool.scheduler import accounts, policies_store, service
        from gpupool.scheduler.database import unit_of_work

        s = self.scenario
        with unit_of_work(self.engine) as session:
            for t in s.gpu_types.values():
                service.add_gpu_type(session, "admin", t.name, t.vendor, t.memory_gb, t.speed)
            for p in s.pools:
                service.add_pool(
                    session,
                    "admin",
                    p.name,
                    p.site,
                    p.gpu_type,
                    p.gpus,
                    p.gpus_per_node,
                    p.price_per_gpu_hour,
                )
            for d in s.domains.values():
                service.add_domain(session, "admin", d.name, d.weight)
            for o in s.orgs.values():
                service.add_org(session, "admin", o.name, o.domain, o.budget)
            # after the platform: a policy is checked against the names it has
            policies_store.apply_policy(session, "admin", self.document)
            for programme in s.programmes:
                accounts.add_programme(session, "admin", programme)
            for v in sorted(s.vouchers, key=lambda v: v.id):
                row = accounts.award_voucher(
                    session,
                    "admin",
                    v.org,
                    v.programme,
                    v.amount,
                    now=v.awarded_at,
                    expires_at=v.expires_at,
                )
                assert row.id == v.id, "voucher ids follow the scenario's"

    def _submit(self, batch: list[SimJob], now: float) -> None:
        from gpupool.scheduler import clock, service
        from gpupool.scheduler.database import unit_of_work
        from gpupool.scheduler.service import JobRequest

        if not batch:
            return
        with unit_of_work(self.engine) as session:
            for sim_job in batch:
                job = sim_job.job
                request = JobRequest(job.org, job.gpus, job.hours, list(job.gpu_types))
                job_id, _ = service.submit_job(session, "admin", request, clock.from_epoch(now))
                assert job_id == job.id, "job ids follow the scenario's arrival order"
                self.pending.add(job_id)

    def _site_reports(self, now: float) -> bool:
        """Runs whose work is done now are reported finished by their site (any?)."""
        from gpupool.scheduler import clock, lifecycle
        from gpupool.scheduler.database import unit_of_work

        reported = False
        for job_id, run in sorted(self.runs.items()):
            end = run.end
            if end == now and end <= run.deadline:
                reported = True
                at = clock.from_epoch(now)
                with unit_of_work(self.engine) as session:
                    lifecycle.finish_job(session, "admin", job_id, at=at, now=at)
                del self.runs[job_id]
                self.work[job_id] = 0.0
        return reported

    def _reap(self, now: float) -> None:
        from gpupool.scheduler import clock, lifecycle
        from gpupool.scheduler.database import unit_of_work

        with unit_of_work(self.engine) as session:
            reaped = lifecycle.reap_timeouts(session, clock.from_epoch(now), self.grace)
        for job_id in reaped:
            del self.runs[job_id]

    def _round(self, now: float) -> list[float]:
        """Rounds at ``now`` (another after one that only preempted); returns new event times."""
        from gpupool.scheduler import clock
        from gpupool.scheduler.database import unit_of_work
        from gpupool.scheduler.rounds import run_active_round

        events = []
        while True:
            self.rounds += 1
            with unit_of_work(self.engine) as session:
                result, _active = run_active_round(session, clock.from_epoch(now), grace=self.grace)
            for job_id in result.timed_out:
                self.runs.pop(job_id, None)
            for job_id in result.preempted:
                run = self.runs.pop(job_id)
                self.work[job_id] = run.work - run.done(now)
                self.pending.add(job_id)
                self.resumed.add(job_id)
            speeds = {
                p.name: self.scenario.gpu_types[p.gpu_type].speed for p in self.scenario.pools
            }
            for started in result.started:
                job = next(s.job for s in self.scenario.jobs if s.job.id == started.job_id)
                speed = speeds[started.pool]
                limit = self.limit.run_limit_seconds(job.hours, speed)
                restore = self.site.restart_seconds if job.id in self.resumed else 0.0
                run = _SiteRun(now, speed, self.work[job.id], now + limit, restore, self.site)
                self.runs[job.id] = run
                self.pending.discard(job.id)
                events.append(min(run.end, run.deadline))
            for job_id in result.quarantined:
                self.pending.discard(job_id)
                self.runs.pop(job_id, None)
            wake = result.next_round_at
            if wake is not None and wake > now and wake not in self.wakeups:
                self.wakeups.add(wake)
                events.append(wake)
            if result.preempted and not result.started and self.pending:
                continue
            return events

    def _read(self) -> Replay:
        from sqlalchemy import select

        from gpupool.scheduler import clock
        from gpupool.scheduler.database import unit_of_work
        from gpupool.scheduler.orm import (
            JobRow,
            LedgerEntryRow,
            OrgRow,
            PlacementRow,
            PoolRow,
            ProgrammeRow,
        )

        states = {"completed": "finished", "pending": "waiting"}
        with unit_of_work(self.engine) as session:
            pools = dict(session.execute(select(PoolRow.id, PoolRow.name)).all())
            orgs = dict(session.execute(select(OrgRow.id, OrgRow.name)).all())
            programmes = dict(session.execute(select(ProgrammeRow.id, ProgrammeRow.name)).all())
            runs: dict[int, list] = {}
            for p in session.scalars(select(PlacementRow).order_by(PlacementRow.id)):
                runs.setdefault(p.job_id, []).append(p)
            jobs = {}
            for row in session.scalars(select(JobRow).order_by(JobRow.id)):
                mine = runs.get(row.id, [])
                ended = row.ended_at is not None
                jobs[row.id] = JobOutcome(
                    job_id=row.id,
                    state=states.get(row.state, row.state),
                    first_start=clock.to_epoch(mine[0].started_at) if mine else None,
                    pool=pools[mine[-1].pool_id] if mine else None,
                    nodes=tuple((int(n), int(g)) for n, g in mine[-1].nodes) if mine else (),
                    ended_at=clock.to_epoch(row.ended_at) if ended else None,
                    preemptions=len(mine) - (1 if ended or row.state == "running" else 0),
                )
            ledger = sorted(
                _entry_key(
                    e.kind,
                    e.job_id,
                    orgs[e.org_id],
                    e.period,
                    clock.to_epoch(e.created_at),
                    pools.get(e.pool_id),
                    e.cost,
                    e.subsidy,
                    e.org_pays,
                    e.effective_gpu_hours,
                    programmes.get(e.programme_id),
                    e.voucher_id,
                )
                for e in session.scalars(select(LedgerEntryRow))
                if e.kind in COMPARED_KINDS
            )
        return Replay(jobs, ledger, self.rounds)


def replay_live(url: str, scenario: Scenario, document) -> Replay:
    """``url``: a migrated database holding only the admin ``admin``."""
    return LiveReplay(url, scenario, document).run()
