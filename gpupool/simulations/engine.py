"""The discrete-event simulation engine: replay a Scenario under any Policy.

Design
------
The engine is event driven on a SimPy ``Environment`` with plain event
callbacks (no generator processes: callbacks are about twice as fast). Three
kinds of events exist:

- an *arrival* at each distinct arrival instant (one chained timeout, so only
  one arrival event is queued at a time, however long the trace);
- a *completion* per started job (a stale completion of a preempted job is
  recognised by its run token and ignored, since SimPy timeouts cannot be
  cancelled);
- a *round*: one call to ``policy.allocate(snapshot)``.

Rounds are requested by arrivals and completions, never by a clock tick. All
events of one instant are coalesced into one round: a round requested at time
``t`` is a zero-delay timeout created at ``t``, so every arrival or completion
scheduled earlier for ``t`` is processed before it (SimPy orders equal times by
creation). ``min_round_interval_s`` additionally spaces rounds apart.

A round is requested only when it could change something: some waiting job
fits the free GPUs of a pool it allows right now (checked per job *shape*,
gang size x allowed GPU types, so it costs O(shapes x pools), not
O(pending)). With a preempting policy every arrival and completion requests
a round. Skipping is exact for any policy that only starts jobs that fit: a
round in which nothing fits can place nothing. ``skip_idle_rounds=False``
turns the shortcut off (the tests check both modes agree).

The snapshot handed to the policy is built the way the live scheduler builds
it: free GPUs per node of each pool, the pending jobs, the running jobs with
their expected end (estimate / GPU speed), each domain's decayed usage in
effective GPU-hours, org accounts and the platform subsidy left, all from
a gpupool.accounting :class:`Books` (the scenario's programmes and vouchers
plus the policy's flat subsidy rules), which is also the pricing the policy
quotes from: the same object, and the same calls, as the live scheduler.
The pending and running collections are kept incrementally (dicts in
arrival order), so a round costs O(pending + running + nodes) to assemble,
never O(all jobs of the trace).

A job runs ``actual_hours / speed`` on the GPU type it was placed on (its
class's speed there: Job.speed_on); its ``expected_end`` uses the user's
estimate ``hours / speed``. Preemption and
requeue follow the live rule (gpupool.scheduler.rounds._preempt): a preempted
job is requeued as submitted, with its *full* estimate, and each run is
reaped at its own start + estimate + grace (model.TimeoutGrace). The platform
cannot know whether a job checkpoints; shrinking the estimate would have the
reaper kill a restarted job that had to begin again, while a full estimate
only makes the expected end of one that resumes pessimistic. The simulated
*site* checkpoints as the policy's ``preemption`` section describes it
(gpupool.policies.params.Preemption): a preempted job keeps the work up to its
last checkpoint (every ``checkpoint_minutes`` of progress; 0: all of it), so
its remaining actual work shrinks by that and its next run ends sooner than
its estimate says; a restarted run first spends ``restart_minutes`` restoring
on its GPUs. The work after the last checkpoint and the restarts are the
job's ``lost_gpu_hours`` (GPUs x wall hours), charged like any use.
Nothing needs refunding, because usage is charged on actual use: when a run
ends (completion or preemption) ``Books.charge`` books its interval, and before
a round in which a voucher is due, running jobs are metered up to now and the
voucher expires (gpupool.scheduler.accounts.close_books does the same live).
Scenario times are seconds from 0 (the epoch), so scenario programmes use
recurring or unbounded periods and vouchers instants in scenario seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from gpupool.accounting import Books, LedgerEntry, SubsidyRules
from gpupool.accounting.guarantees import BookedUsage, round_deficits
from gpupool.model import (
    Allocation,
    Charge,
    GpupoolError,
    Job,
    Placement,
    PoolState,
    RunningJob,
    Snapshot,
    TimeoutGrace,
    fit_gang,
    served_gpu_hours,
)
from gpupool.policies.base import Policy
from gpupool.policies.params import Preemption
from gpupool.scheduler import driver
from gpupool.simulations.idle import IdleWhileWaiting
from gpupool.simulations.workload import Scenario

HOUR = 3600.0
NEVER_FITS = "never_fits"
FLAT_RATES = "flat rates"  # the policy's flat subsidy, in ledger entries with no programme

# Job states in a simulation result (a job's life in the replay, not JobState).
NOT_ARRIVED = "not_arrived"
WAITING = "waiting"
RUNNING = "running"
FINISHED = "finished"
TIMED_OUT = "timed_out"  # stopped at its estimate + grace, as the live reaper does
FAILED = "failed"  # the policy failed on it: set aside, as a live round quarantines it

ProgressFn = Callable[[float, int, int], None]  # (simulated hours, jobs finished, jobs total)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    until_hours: float | None = None  # stop the clock here; later jobs count as not arrived
    max_jobs: int | None = None  # replay only the first N jobs of the scenario
    min_round_interval_s: float = 0.0
    usage_half_life_hours: float = 168.0  # fair-share memory, like Slurm's default 7 days
    skip_idle_rounds: bool = True
    progress_every: int = 4096  # events between progress callbacks
    # the live reaper's rule (model.TimeoutGrace); None lets jobs overrun without limit
    timeout_grace: TimeoutGrace | None = TimeoutGrace()
    # keep the running jobs' reservation between rounds (same results; off only to prove that)
    reservation_cache: bool = True


@dataclass(slots=True)
class JobRecord:
    """What happened to one job of the workload (mutable while the replay runs)."""

    job: Job
    actual_hours: float
    state: str = NOT_ARRIVED
    first_start: float | None = None
    finished_at: float | None = None
    pool: str | None = None
    gpu_type: str | None = None
    nodes: tuple[tuple[int, int], ...] = ()  # of its last run: (node, GPUs)
    run_seconds: float = 0.0  # wall time on GPUs, all segments
    effective_gpu_hours: float = 0.0  # gpus x reference hours of work done and kept
    preemptions: int = 0
    lost_gpu_hours: float = 0.0  # gpus x wall hours of discarded work and of restarts
    cost: float = 0.0
    subsidy: float = 0.0
    org_pays: float = 0.0
    subsidised_effective_gpu_hours: float = 0.0  # usage a subsidy paid part of


@dataclass
class SimulationResult:
    scenario: str
    policy: str
    records: list[JobRecord]
    dropped: dict[str, int]  # the scenario's load-time drops plus never-fitting jobs
    end_time: float  # the last instant (seconds since the epoch, like every time here)
    capacity: dict[str, int]  # GPUs per GPU type
    speeds: dict[str, float]
    busy_gpu_seconds: dict[str, float]  # per GPU type
    idle_while_waiting_gpu_seconds: float
    # step series: (time, busy GPUs per GPU type in ``capacity`` order); (time, cumulative subsidy)
    utilisation_series: list[tuple[float, tuple[int, ...]]]
    subsidy_series: list[tuple[float, float]]
    subsidy_budget: float | None
    domain_weights: dict[str, float]
    rounds: int = 0
    events: int = 0
    ledger: tuple[LedgerEntry, ...] = ()  # every entry Books wrote, in order
    programme_budgets: dict[str, float | None] = field(default_factory=dict)
    # programme name -> its PeriodSpec (budgets restart every programme period);
    # the flat rates (FLAT_RATES) restart every accounting period instead
    programme_periods: dict[str, object] = field(default_factory=dict)
    accounting_period: str = "quarter"
    org_budgets: dict[str, float] = field(default_factory=dict)  # per accounting period
    # domain -> GPU-seconds free on pools where one of its waiting jobs fitted (simulations.idle)
    idle_while_waiting_by_domain: dict[str, float] = field(default_factory=dict)
    start_time: float = 0.0  # the scenario's start: reports count hours from here
    # (time, "start" | "preempt" | "finished" | "timed_out", job id, pool), in order
    timeline: list[tuple[float, str, int, str]] = field(default_factory=list)


class UsageMeter:
    """Each domain's exponentially decayed usage in effective GPU-hours.

    Between events a domain accrues at a constant rate r (effective GPUs busy),
    so u(t + d) = u(t) e^(-ld) + r (1 - e^(-ld)) / l is exact, with l = ln 2 / half-life.
    """

    def __init__(self, domains, half_life_hours: float) -> None:
        self._decay = math.log(2) / half_life_hours
        self._usage = dict.fromkeys(domains, 0.0)
        self._rate = dict.fromkeys(domains, 0.0)
        self._at = 0.0

    def advance(self, now: float) -> None:
        hours = (now - self._at) / HOUR
        if hours <= 0:
            return
        keep = math.exp(-self._decay * hours)
        gain = (1.0 - keep) / self._decay
        for domain, usage in self._usage.items():
            self._usage[domain] = usage * keep + self._rate[domain] * gain
        self._at = now

    def change_rate(self, now: float, domain: str, delta: float) -> None:
        self.advance(now)
        self._rate[domain] = self._rate.get(domain, 0.0) + delta
        self._usage.setdefault(domain, 0.0)

    def snapshot(self, now: float) -> dict[str, float]:
        self.advance(now)
        return dict(self._usage)


@dataclass(slots=True)
class _Run:
    record: JobRecord
    running: RunningJob
    charge: Charge
    speed: float
    token: int
    remaining_actual: float  # reference hours of real work left at start
    expected_seconds: float
    restore_seconds: float = 0.0  # a restart's restore, before progress resumes


@dataclass(slots=True)
class _Reservation:
    """The books' committed twin as of ``version``, with the runs (tokens) it reserves."""

    twin: Books
    version: int
    tokens: list[int] = field(default_factory=list)
    ends: dict[int, float] = field(default_factory=dict)  # token -> the run's expected end
    at: float = -math.inf  # the round it was last brought up to date for
    valid_until: float = math.inf  # earliest expected end among them: later, one is overdue


@dataclass
class _Integrals:
    at: float = 0.0
    busy: dict[str, float] = field(default_factory=dict)
    idle_while_waiting: float = 0.0


class Simulation:
    """One replay of ``scenario`` under ``policy``; call :meth:`run` once."""

    def __init__(
        self,
        scenario: Scenario,
        policy: Policy,
        *,
        pricing: SubsidyRules | None = None,
        options: EngineOptions | None = None,
        progress: ProgressFn | None = None,
        policy_name: str | None = None,
    ) -> None:
        import simpy  # heavy-ish: only when a simulation actually runs

        self.scenario = scenario
        self.policy = policy
        self.policy_name = policy_name or type(policy).__name__
        self.options = options or EngineOptions()
        self.rules = pricing or SubsidyRules()
        self.progress = progress
        self.start = scenario.start  # the clock reads calendar instants (seconds since the epoch)
        self.env = simpy.Environment(initial_time=self.start)
        self._pools = {pool.name: pool for pool in scenario.pools}
        self._free = {pool.name: list(pool.node_sizes()) for pool in scenario.pools}
        self._empty = {pool.name: tuple(pool.node_sizes()) for pool in scenario.pools}
        self._types = sorted({pool.gpu_type for pool in scenario.pools})
        self._capacity = {t: 0 for t in self._types}
        for pool in scenario.pools:
            self._capacity[pool.gpu_type] += pool.gpus
        self._busy = dict.fromkeys(self._types, 0)
        jobs = scenario.jobs[: self.options.max_jobs] if self.options.max_jobs else scenario.jobs
        self._arrivals = sorted(jobs, key=lambda s: (s.job.submitted_at, s.job.id))
        self._records = {s.job.id: JobRecord(job=s.job, actual_hours=s.actual_hours) for s in jobs}
        if len(self._records) != len(jobs):
            raise GpupoolError("job ids must be unique", location=f"{scenario.name} jobs")
        self._pending: dict[int, Job] = {}
        self._shapes: dict[tuple[int, tuple[str, ...]], int] = {}  # pending jobs by shape
        self._shape_pools: dict[tuple[int, tuple[str, ...]], list] = {}
        self._waiting_pools: list[str] | None = []  # pools some waiting job may use
        self._idle = IdleWhileWaiting(scenario.pools)  # per domain, for metrics
        self._running: dict[int, _Run] = {}
        self._remaining: dict[int, float] = {s.job.id: s.actual_hours for s in jobs}
        self.books = _books(scenario, self.rules)
        self._booked = BookedUsage()  # this quarter's usage, for guarantee deficits
        self.usage = UsageMeter(scenario.domains, self.options.usage_half_life_hours)
        self.usage.advance(self.start)
        self._integrals = _Integrals(at=self.start, busy=dict.fromkeys(self._types, 0.0))
        self._util_series: list[tuple[float, tuple[int, ...]]] = [
            (self.start, (0,) * len(self._types))
        ]
        self._subsidy_series: list[tuple[float, float]] = [(self.start, 0.0)]
        self._subsidy_total = 0.0
        self._dropped = dict(scenario.dropped)
        self._round_requested = False
        self._last_round = -math.inf
        self._next_arrival = 0
        self._tokens = 0
        self._rounds = 0
        self._events = 0
        self._finished = 0
        self._preemptive = _may_preempt(policy)
        self._site = _restart_rule(policy)  # what a preemption costs the site's jobs
        self._served: dict[int, float] = {}  # Snapshot.served: earlier runs of waiting jobs
        self._wakeups: set[float] = set()  # instants a policy asked for a round at
        self._asked = False  # the next round is one the policy asked for
        self._timeline: list[tuple[float, str, int, str]] = []
        self._reserved: _Reservation | None = None
        self._priced: dict = {}  # job id -> its reservation's pricing, reused on rebuilds

    # -- driving the clock ------------------------------------------------

    def run(self) -> SimulationResult:
        if self._arrivals:
            first = max(0.0, self._arrivals[0].job.submitted_at - self.start)
            self.env.timeout(first).callbacks.append(self._on_arrival)
        until = self.options.until_hours
        if until is None:
            self.env.run()
        else:
            self.env.run(until=self.start + until * HOUR)
        end = self.env.now
        self._advance(end)
        self.usage.advance(end)
        self._report_progress()
        return self._result(end)

    def _tick(self) -> None:
        self._events += 1
        if self.progress and self._events % self.options.progress_every == 0:
            self._report_progress()

    def _report_progress(self) -> None:
        if self.progress:
            self.progress((self.env.now - self.start) / HOUR, self._finished, len(self._records))

    def _request_round(self) -> None:
        if self._round_requested:
            return
        self._round_requested = True
        delay = max(0.0, self._last_round + self.options.min_round_interval_s - self.env.now)
        self.env.timeout(delay).callbacks.append(self._on_round)

    # -- when a round can change something -------------------------------

    def _enqueue(self, job: Job) -> None:
        self._pending[job.id] = job
        self._idle.add(job)
        shape = _shape(job)
        if shape not in self._shapes:
            self._shapes[shape] = 0
            self._waiting_pools = None
        self._shapes[shape] += 1

    def _round_useful(self) -> bool:
        """Whether some waiting job fits the free GPUs now (or the policy may preempt).

        Pending jobs are counted by shape (gang size, allowed GPU types), so
        this costs O(shapes x pools), not O(pending).
        """
        if not self._pending:
            return False
        if self._preemptive or not self.options.skip_idle_rounds:
            return True
        return any(self._fits_now(shape) for shape in self._shapes)

    def _pools_wanted(self) -> list[str]:
        if self._waiting_pools is None:
            wanted = {p.name for shape in self._shapes for p in self._allowed(shape)}
            self._waiting_pools = sorted(wanted)
        return self._waiting_pools

    def _allowed(self, shape: tuple[int, tuple[str, ...]]) -> list:
        pools = self._shape_pools.get(shape)
        if pools is None:
            types = shape[1]
            pools = [p for p in self._pools.values() if not types or p.gpu_type in types]
            self._shape_pools[shape] = pools
        return pools

    def _fits_now(self, shape: tuple[int, tuple[str, ...]]) -> bool:
        gpus = shape[0]
        return any(
            fit_gang(self._free[p.name], gpus, p.gpus_per_node) for p in self._allowed(shape)
        )

    # -- events ------------------------------------------------------------

    def _on_arrival(self, _event) -> None:
        self._tick()
        now = self.env.now
        self._advance(now)
        wants_round = False
        arrivals = self._arrivals
        while self._next_arrival < len(arrivals):
            job = arrivals[self._next_arrival].job
            if job.submitted_at > now:
                break
            self._next_arrival += 1
            wants_round |= self._admit(job)
        if self._next_arrival < len(arrivals):
            delay = arrivals[self._next_arrival].job.submitted_at - now
            self.env.timeout(delay).callbacks.append(self._on_arrival)
        if wants_round or not self.options.skip_idle_rounds:
            self._request_round()

    def _admit(self, job: Job) -> bool:
        """Queue an arriving job; True if a round could start it (or preempt for it)."""
        record = self._records[job.id]
        allowed = [p for p in self._pools.values() if job.allows(p.gpu_type)]
        if not any(fit_gang(self._empty[p.name], job.gpus, p.gpus_per_node) for p in allowed):
            record.state = NEVER_FITS
            self._dropped[NEVER_FITS] = self._dropped.get(NEVER_FITS, 0) + 1
            return False
        record.state = WAITING
        self._enqueue(job)
        return self._preemptive or self._fits_now(_shape(job))

    def _on_completion(self, event) -> None:
        job_id, token, end_state = event.value
        run = self._running.get(job_id)
        if run is None or run.token != token:
            return  # the job was preempted after this completion was scheduled
        self._tick()
        now = self.env.now
        self._advance(now)
        self._stop(run, now)
        self._served.pop(job_id, None)
        self._timeline.append((now, end_state, job_id, run.running.placement.pool))
        record = run.record
        record.state = end_state
        record.finished_at = now
        self._remaining[job_id] = 0.0
        self._finished += 1
        self._record_utilisation(now)
        if self._round_useful():
            self._request_round()

    def _on_round(self, _event) -> None:
        self._round_requested = False
        asked, self._asked = self._asked, False
        if not self._pending and not asked:
            return
        self._tick()
        now = self.env.now
        self._last_round = now
        self._rounds += 1
        driver.run_round(self, self.policy, now)

    # -- the round driver's backend (gpupool.scheduler.driver.RoundBackend) --------

    def snapshot(self, now: float) -> Snapshot:
        """The round's snapshot; a voucher due by now expires first, running jobs
        metered up to now (gpupool.scheduler.accounts.close_books does the same live)."""
        if self.books.expiring(now):
            self._meter_running(now)
            self._book(self.books.expire(now), now)
        return self._snapshot(now)

    def apply(self, decision: driver.Decision, now: float) -> None:
        """Fail the jobs the policy failed on (as a live round quarantines them),
        then preempt and start what the checked allocation says."""
        for job_id in sorted(decision.blamed):
            self._quarantine(self._pending[job_id], now)
        self._apply(decision.allocation, decision.charges, now)
        self._wake_up_at(decision.allocation.next_round_at, now)

    def _wake_up_at(self, at: float | None, now: float) -> None:
        """A round at ``at``, as the policy asked (a lease ends), once per instant."""
        if at is None or at <= now or at in self._wakeups:
            return
        self._wakeups.add(at)
        self.env.timeout(at - now, value=at).callbacks.append(self._on_wake_up)

    def _on_wake_up(self, event) -> None:
        self._wakeups.discard(event.value)
        self._asked = True  # a round even with nothing waiting: running jobs may move
        self._request_round()

    # -- state changes -------------------------------------------------------

    def _snapshot(self, now: float) -> Snapshot:
        books = self._committed(now)  # running jobs reserved
        return Snapshot(
            now=now,
            gpu_types=self.scenario.gpu_types,
            pools=tuple(
                PoolState(pool=pool, free_per_node=tuple(self._free[name]))
                for name, pool in self._pools.items()
            ),
            domains=self.scenario.domains,
            orgs=self.scenario.orgs,
            pending=tuple(self._pending.values()),
            running=tuple(run.running for run in self._running.values()),
            usage=self.usage.snapshot(now),
            accounts=books.accounts(now),
            subsidy_budget_left=books.subsidy_left(now),
            pricing=books,  # the same Books a live snapshot prices with
            guarantee_deficit=round_deficits(
                getattr(self.policy, "params", None),
                self.scenario.gpu_types,
                self._pools.values(),
                (run.running for run in self._running.values()),
                self.books.charged_until,
                lambda start: self._booked.since(self.books.entries, start, now),
                now,
            ),
            served=dict(self._served),
        )

    def _apply(self, allocation: Allocation, charges: dict[int, Charge], now: float) -> None:
        """Act on an allocation the driver validated (validate_allocation)."""
        self._advance(now)
        freed = False
        for job_id in allocation.preempt:
            self._preempt(self._running[job_id], now)
            freed = True
        # start order is the order charges spend limits in (Books.charge's ``ahead``):
        # within a round, by job id, as the live snapshot orders running jobs
        for placement in sorted(allocation.placements, key=lambda p: p.job_id):
            self._start(placement, charges[placement.job_id], now)
        if allocation.placements or freed:
            self._record_utilisation(now)
        if freed and not allocation.placements and self._round_useful():
            self._request_round()  # preempted GPUs stayed free: let the policy use them

    def _dequeue(self, job: Job) -> None:
        del self._pending[job.id]
        self._idle.remove(job)
        shape = _shape(job)
        self._shapes[shape] -= 1
        if not self._shapes[shape]:
            del self._shapes[shape]
            self._waiting_pools = None

    def _quarantine(self, job: Job, now: float) -> None:
        """A pending job the policy fails on ends failed (a live round quarantines it)."""
        self._dequeue(job)
        record = self._records[job.id]
        record.state = FAILED
        record.finished_at = now
        self._finished += 1

    def _start(self, placement: Placement, charge: Charge, now: float) -> None:
        job = self._pending[placement.job_id]
        pool = self._pools[placement.pool]
        free = self._free[pool.name]
        for node, taken in placement.nodes:
            free[node] -= taken
        self._dequeue(job)
        speed = job.speed_on(self.scenario.gpu_types[pool.gpu_type])  # its class's, if any
        remaining = self._remaining[job.id]
        expected = job.hours / speed * HOUR
        restore = self._site.restart_seconds if self._records[job.id].preemptions else 0.0
        self._tokens += 1
        run = _Run(
            record=self._records[job.id],
            running=RunningJob(
                job, placement, now, now + expected, preemptions=self._records[job.id].preemptions
            ),
            charge=charge,
            speed=speed,
            token=self._tokens,
            remaining_actual=remaining,
            expected_seconds=expected,
            restore_seconds=restore,
        )
        self._running[job.id] = run
        self._timeline.append((now, "start", job.id, pool.name))
        record = run.record
        record.state = RUNNING
        if record.first_start is None:
            record.first_start = now
        record.pool, record.gpu_type, record.nodes = pool.name, pool.gpu_type, placement.nodes
        self._busy[pool.gpu_type] += job.gpus
        self.usage.change_rate(now, job.domain, job.gpus * speed)
        seconds, end_state = self._run_seconds(job, remaining, speed, restore)
        event = self.env.timeout(seconds, value=(job.id, self._tokens, end_state))
        event.callbacks.append(self._on_completion)

    def _run_seconds(
        self, job: Job, remaining: float, speed: float, restore: float
    ) -> tuple[float, str]:
        """How long a run lasts and how it ends: done, or reaped at its estimate + grace."""
        seconds = restore + remaining / speed * HOUR
        grace = self.options.timeout_grace
        if grace is not None:
            limit = grace.run_limit_seconds(job.hours, speed)
            if seconds > limit:
                return limit, TIMED_OUT
        return seconds, FINISHED

    def _stop(self, run: _Run, now: float, preempted: bool = False) -> float:
        """Release a running job's GPUs; return the reference hours of work it keeps
        (preempted: up to its last checkpoint), booking what it lost."""
        job = run.running.job
        self._charge_reserved(run, now)
        del self._running[job.id]
        for node, taken in run.running.placement.nodes:
            self._free[run.running.placement.pool][node] += taken
        gpu_type = run.record.gpu_type
        self._busy[gpu_type] -= job.gpus
        self.usage.change_rate(now, job.domain, -job.gpus * run.speed)
        seconds = now - run.running.started_at
        progress = max(0.0, seconds - run.restore_seconds)
        unsaved = self._site.unsaved_seconds(progress) if preempted else 0.0
        done = min(run.remaining_actual, (progress - unsaved) / HOUR * run.speed)
        run.record.run_seconds += seconds
        run.record.effective_gpu_hours += job.gpus * done
        restoring = min(seconds, run.restore_seconds)
        run.record.lost_gpu_hours += job.gpus * (restoring + unsaved) / HOUR
        return done

    def _preempt(self, run: _Run, now: float) -> None:
        job = run.running.job
        done = self._stop(run, now, preempted=True)
        self._remaining[job.id] = run.remaining_actual - done
        held = served_gpu_hours(job.gpus, run.speed, run.running.started_at, now)
        self._served[job.id] = self._served.get(job.id, 0.0) + held
        self._timeline.append((now, "preempt", job.id, run.running.placement.pool))
        run.record.state = WAITING
        run.record.preemptions += 1
        # requeued as submitted, with its full estimate: that is the limit the
        # reaper gives its next run, live and here (see the module docstring)
        self._enqueue(job)

    # -- accounting (the live scheduler makes the same Books calls) -------------

    def _charge(self, run: _Run, now: float, ahead: list[_Run] | None = None) -> None:
        """Book a run's usage not booked yet, up to ``now`` (at its end, or before an expiry).

        ``ahead``: runs started before it and still running, booked ahead first
        (Books.charge), as the live scheduler does at a job's end.
        """
        pool = self._pools[run.running.placement.pool]
        gpu_type = self.scenario.gpu_types[pool.gpu_type]
        running = run.running
        commitments = list(self._commitments(ahead)) if ahead else ()
        entries = self.books.meter(
            running.job, pool, gpu_type, running.started_at, now, commitments, self._priced
        )
        self._book(entries, now)

    def _started_before(self, run: _Run) -> list[_Run]:
        """The runs ahead of ``run`` in start order (``_running`` keeps that order)."""
        ahead = []
        for other in self._running.values():
            if other is run:
                return ahead
            ahead.append(other)
        return ahead

    def _charge_reserved(self, run: _Run, now: float) -> None:
        """Charge a run at its end, keeping the cached reservation when it still holds.

        A run that ends exactly where it was reserved to, in a reservation no
        limit made order-dependent, is charged as reserved: the twin then
        equals a rebuild once it has settled the run (Books.drop_charged_reservation).
        """
        cached = self._reserved
        keep = (
            cached is not None
            and cached.version == self.books.version
            and cached.twin.holds_reservation(run.running.job.id, now)
        )
        self._charge(run, now, self._started_before(run))
        self._priced.pop(run.running.job.id, None)
        if not keep:
            return
        cached.twin.drop_charged_reservation(run.running.job.id, self.books)
        cached.version = self.books.version
        cached.tokens.remove(run.token)
        cached.ends.pop(run.token)
        cached.valid_until = min(cached.ends.values(), default=math.inf)

    def _committed(self, now: float) -> Books:
        """The books with running jobs' usage reserved, as ``Books.committed`` gives them.

        Rebuilding that twin every round re-charges every running job; instead the
        twin is kept while the books are unchanged (same version) and ``now`` does
        not change any reservation (no run is overdue, so each is reserved to its
        expected end). Runs started since are reserved on top, in ``_running``'s
        order, which is exactly what a rebuild would do after the earlier ones.
        A rebuild reuses each run's pricing while the limits it read would
        decide it the same (``Books.reserve``'s memo), so it mostly adds sums.
        """
        if not self.options.reservation_cache:
            return self.books.committed(self._commitments(), now)
        cached = self._reserved
        runs = list(self._running.values())
        if not (
            cached is not None
            and cached.version == self.books.version
            and (now == cached.at or now <= cached.valid_until)
            and len(runs) >= len(cached.tokens)
            and all(run.token == token for run, token in zip(runs, cached.tokens, strict=False))
        ):
            twin = self.books.committed(self._commitments(runs), now, self._priced)
            cached = self._reserved = _Reservation(twin=twin, version=self.books.version)
        else:
            runs = runs[len(cached.tokens) :]
            self.books.reserve(cached.twin, self._commitments(runs), now, self._priced)
        cached.at = now
        for run in runs:
            cached.tokens.append(run.token)
            cached.ends[run.token] = run.running.expected_end
            cached.valid_until = min(cached.valid_until, run.running.expected_end)
        return cached.twin

    def _commitments(self, runs: Iterable[_Run] | None = None) -> Iterator[tuple]:
        # a generator: Books.committed skips building these when no reservation can matter
        for run in self._running.values() if runs is None else runs:
            pool = self._pools[run.running.placement.pool]
            gpu_type = self.scenario.gpu_types[pool.gpu_type]
            running = run.running
            yield (running.job, pool, gpu_type, running.started_at, running.expected_end)

    def _meter_running(self, now: float) -> None:
        for run in self._running.values():
            self._charge(run, now)

    def _book(self, entries: list[LedgerEntry], now: float) -> None:
        subsidised = False
        for entry in entries:
            record = self._records.get(entry.job_id) if entry.kind == "charge" else None
            if record is None:
                continue
            record.cost += float(entry.cost)
            record.subsidy += float(entry.subsidy)
            record.org_pays += float(entry.org_pays)
            if entry.subsidy:
                record.subsidised_effective_gpu_hours += entry.effective_gpu_hours
                self._subsidy_total += float(entry.subsidy)
                subsidised = True
        if subsidised:
            self._subsidy_series.append((now, self._subsidy_total))

    # -- measurements --------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Integrate busy and idle-while-waiting GPU time up to ``now``."""
        integrals = self._integrals
        dt = now - integrals.at
        if dt <= 0:
            return
        for gpu_type, busy in self._busy.items():
            integrals.busy[gpu_type] += busy * dt
        if self._pending:
            free = self._free
            idle = sum(sum(free[name]) for name in self._pools_wanted())
            integrals.idle_while_waiting += idle * dt
            self._idle.advance(free, dt)
        integrals.at = now

    def _record_utilisation(self, now: float) -> None:
        sample = (now, tuple(self._busy[t] for t in self._types))
        series = self._util_series
        if series[-1][0] == now:
            series[-1] = sample
        else:
            series.append(sample)

    def _result(self, end: float) -> SimulationResult:
        self._meter_running(end)  # still running at the end: charge and count work so far
        for run in self._running.values():
            seconds = end - run.running.started_at
            run.record.run_seconds += seconds
            done = min(run.remaining_actual, seconds / HOUR * run.speed)
            run.record.effective_gpu_hours += run.running.job.gpus * done
        return SimulationResult(
            scenario=self.scenario.name,
            policy=self.policy_name,
            records=list(self._records.values()),
            dropped=self._dropped,
            end_time=end,
            start_time=self.start,
            capacity=dict(self._capacity),
            speeds={t: self.scenario.gpu_types[t].speed for t in self._types},
            busy_gpu_seconds=dict(self._integrals.busy),
            idle_while_waiting_gpu_seconds=self._integrals.idle_while_waiting,
            idle_while_waiting_by_domain=dict(sorted(self._idle.gpu_seconds.items())),
            utilisation_series=self._util_series,
            subsidy_series=self._subsidy_series,
            subsidy_budget=_subsidy_budget(self.books),
            domain_weights={name: d.weight for name, d in self.scenario.domains.items()},
            rounds=self._rounds,
            events=self._events,
            ledger=self.books.entries,
            programme_budgets=_programme_budgets(self.books),
            programme_periods={p.name: p.period for p in self.books.programmes},
            accounting_period=self.books.period,
            org_budgets={
                name: org.budget
                for name, org in self.scenario.orgs.items()
                if org.budget is not None
            },
            timeline=self._timeline,
        )


def _books(scenario: Scenario, rules: SubsidyRules) -> Books:
    """The scenario's programmes and vouchers (raw scenario entries are parsed here);
    each voucher's 'award' entry is on the ledger, as a live award books one."""
    from gpupool.accounting.declarations import parse_programmes, parse_vouchers

    programmes = tuple(scenario.programmes)
    if any(hasattr(p, "where") for p in programmes):
        programmes = parse_programmes(list(programmes), scenario.name)
    vouchers = tuple(scenario.vouchers)
    if any(hasattr(v, "where") for v in vouchers):
        vouchers = parse_vouchers(list(vouchers), scenario.name, programmes)
    books = Books(programmes, orgs=scenario.orgs, flat=rules)
    for voucher in sorted(vouchers, key=lambda v: v.id):  # in award order, as live
        books.award_declared(voucher)
    return books


def _programme_budgets(books: Books) -> dict[str, float | None]:
    budgets = {p.name: p.budget for p in books.programmes}
    if books.flat is not None:
        budgets[FLAT_RATES] = books.flat.period_budget
    return budgets


def _subsidy_budget(books: Books) -> float | None:
    """Subsidy money available per period: flat budget plus programme budgets (None: unlimited)."""
    budgets = [p.budget for p in books.programmes]
    if books.flat is not None:
        budgets.append(books.flat.period_budget)
    if not budgets or None in budgets:
        return None
    return float(sum(budgets))


def _shape(job: Job) -> tuple[int, tuple[str, ...]]:
    return job.gpus, job.gpu_types


def _may_preempt(policy: Policy) -> bool:
    """Whether the policy may stop running jobs (then every arrival needs a round)."""
    explicit = getattr(policy, "may_preempt", None)
    if explicit is not None:
        return bool(explicit)
    params = getattr(policy, "params", None)
    preemption = getattr(params, "preemption", None)
    return bool(getattr(preemption, "enabled", False))


def _restart_rule(policy: Policy) -> Preemption:
    """The policy's preemption section: the site's checkpoints and restart time
    (the defaults, free restarts, for a policy without one)."""
    preemption = getattr(getattr(policy, "params", None), "preemption", None)
    return preemption if isinstance(preemption, Preemption) else Preemption()


def simulate(
    scenario: Scenario,
    policy: Policy,
    *,
    pricing: SubsidyRules | None = None,
    options: EngineOptions | None = None,
    progress: ProgressFn | None = None,
    policy_name: str | None = None,
) -> SimulationResult:
    """Replay ``scenario`` under ``policy`` and return what happened to every job."""
    simulation = Simulation(
        scenario,
        policy,
        pricing=pricing,
        options=options,
        progress=progress,
        policy_name=policy_name,
    )
    return simulation.run()
