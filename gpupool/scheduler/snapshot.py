"""Build a gpupool.model.Snapshot from the database: the only input policies see.

- free GPUs per node = each pool's node sizes minus the nodes held by open
  placements (placements are the source of truth for what is occupied);
- running jobs hold their GPUs until their site reports them finished
  (gpupool.scheduler.lifecycle); those past their estimate + grace are left
  out, as the live round reaps them (timed_out) before it writes, and a dry
  run must see the same free capacity. An overdue job still within its grace
  is expected to end "now";
- usage = per domain, effective GPU-hours of every run (placements: ended ones
  and running ones up to now), each instant decayed with a half-life (Slurm's
  PriorityDecayHalfLife idea), so fair-share remembers history but forgives
  it; the simulator's UsageMeter keeps the same figure incrementally;
- accounts, subsidy_budget_left and pricing come from a gpupool.accounting
  Books (gpupool.scheduler.accounts.load_books: programmes, vouchers, the
  ledger as per-period sums and the active policy's flat subsidy rules), the
  same object the simulator prices with; policies quote from it through BudgetTracker. Budgets
  are net of what running jobs will be charged when they end (commitments);
- guarantee_deficit = how far each domain with a guaranteed share in the
  policy's params is behind it this quarter (ledger usage plus running jobs),
  against the platform's effective capacity.

Every row passes the sanity gate (gpupool.scheduler.quarantine) as it is
read: jobs whose own fields fail are left out for the round to fail; GPU
types, pools, domains and orgs that fail are left out with what depends on
them (pending jobs of such an org wait; running jobs there keep their GPUs).

Rounds see thousands of jobs, so the platform is read with one Core select()
per table (tuples, no ORM identity map) and the ledger is summed by the
database; tests/test_snapshot.py checks this against the straightforward build.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpupool import model
from gpupool.scheduler import accounts, clock, quarantine
from gpupool.scheduler.orm import (
    DomainRow,
    GpuTypeRow,
    JobClassRow,
    JobRow,
    LedgerEntryRow,
    OrgRow,
    PlacementRow,
    PoolRow,
)

USAGE_HALF_LIFE_HOURS = 7 * 24.0
USAGE_HORIZON_HALF_LIVES = 50


def as_datetime(now: dt.datetime | float | None) -> dt.datetime:
    if now is None:
        return clock.utcnow()
    return now if isinstance(now, dt.datetime) else clock.from_epoch(now)


def take_snapshot(
    session: Session,
    now: dt.datetime | float | None = None,
    pricing: object | None = None,
    half_life_hours: float = USAGE_HALF_LIFE_HOURS,
    books: object | None = None,
    policy: object | None = None,
    grace: object | None = None,
    platform: _Platform | None = None,
) -> model.Snapshot:
    """``pricing``: the policy's flat SubsidyRules; ``books``: already loaded for this round;
    ``grace``: the lifecycle.Grace the round reaps overdue jobs with (default: configured);
    ``platform``: the round's read_platform (read here if not given)."""
    from gpupool.scheduler import lifecycle

    moment = as_datetime(now)
    epoch = clock.to_epoch(moment)
    grace = grace or lifecycle.parse_grace(None)
    if platform is None:
        platform = _Platform.read(session, moment)
    if books is None:
        books = accounts.load_books(session, epoch, rules=pricing, whole_ledger=False)
    running = [
        replace(r, expected_end=max(r.expected_end, epoch))  # overdue: may end any moment
        for r in platform.running
        if _deadline(grace, r) > epoch  # past it, the round reaps it first
    ]
    free = {p.name: list(p.node_sizes()) for p in platform.pools}
    taken = [(entry.placement.pool, entry.placement.nodes) for entry in running]
    for pool, nodes in taken + platform.held_nodes:
        for node, gpus in nodes:
            free[pool][node] -= gpus
    pools, gpu_types = platform.pools, platform.gpu_types
    committed = _with_commitments(books, running, gpu_types, pools, epoch)
    return model.Snapshot(
        now=epoch,
        gpu_types=gpu_types,
        pools=tuple(model.PoolState(p, tuple(free[p.name])) for p in pools),
        domains=platform.domains,
        orgs=platform.orgs,
        pending=tuple(platform.pending),
        running=tuple(running),
        usage=decayed_usage(session, moment, half_life_hours, grace),
        accounts=committed.accounts(epoch),
        subsidy_budget_left=committed.subsidy_left(epoch),
        pricing=committed,
        guarantee_deficit=_deficits(session, books, policy, gpu_types, pools, running, epoch),
        served=platform.served,
    )


@dataclass
class _Platform:
    """The platform's rows as model objects, read with one Core query per table.

    Rounds see thousands of jobs: plain tuples skip the ORM's identity map and
    per-object bookkeeping, and joins are resolved through small id -> model
    maps instead of per-row relationship loads. Every row passes the sanity
    gate (gpupool.scheduler.quarantine) on the way: what fails is left out and
    named in ``verdict``.
    """

    gpu_types: dict[str, model.GpuType]
    pools: list[model.Pool]
    domains: dict[str, model.Domain]
    orgs: dict[str, model.Org]
    pending: list[model.Job]
    running: list[model.RunningJob]  # with an open placement; not yet filtered for deadlines
    verdict: quarantine.Verdict
    held_nodes: list[tuple[str, tuple[tuple[int, int], ...]]]  # stranded runs on pools we use
    served: dict[int, float]  # pending or running job id -> Snapshot.served

    @classmethod
    def read(cls, session: Session, now: dt.datetime | None = None) -> _Platform:
        verdict = quarantine.Verdict()
        types_by_id = _gpu_types(session, verdict)
        pools_by_id = _pools(session, types_by_id, verdict)
        _set_aside_lost_sites(session, as_datetime(now), pools_by_id, verdict)
        domains_by_id = {
            domain_id: model.Domain(name=name, weight=weight)
            for domain_id, name, weight in session.execute(
                select(DomainRow.id, DomainRow.name, DomainRow.weight).order_by(DomainRow.name)
            )
        }
        orgs_by_id = _orgs(session, domains_by_id, verdict)
        jobs = _Jobs(verdict, orgs_by_id, pools_by_id, types_by_id)
        jobs.classes = _job_classes(session, verdict)
        jobs.read(session)
        return cls(
            gpu_types={
                t.name: t
                for t in sorted(types_by_id.values(), key=lambda t: t.name)
                if f"GPU type {t.name}" not in verdict.platform
            },
            pools=sorted((p for p in pools_by_id.values() if p is not None), key=lambda p: p.name),
            domains={
                d.name: d
                for d in sorted(domains_by_id.values(), key=lambda d: d.name)
                if f"domain {d.name}" not in verdict.platform
            },
            orgs={o.name: o for o in sorted(jobs.good_orgs(), key=lambda o: o.name)},
            pending=jobs.pending,
            running=jobs.running,
            verdict=verdict,
            held_nodes=jobs.held_nodes,
            served=jobs.served,
        )


def read_platform(session: Session, now: dt.datetime | None = None) -> _Platform:
    """The platform's rows, checked (a round reads it once, before its books), at ``now``
    (default: the clock): a pool at a site whose agent is lost is set aside."""
    return _Platform.read(session, now)


def _set_aside_lost_sites(session: Session, now: dt.datetime, pools_by_id, verdict) -> None:
    """A lost site's pools take no new starts, and its running jobs are stranded (not
    reaped, not metered: gpupool.scheduler.sites ends them, charged to when the site
    was last heard from)."""
    from gpupool.scheduler import sites

    lost = sites.lost_sites(session, now, sites.lost_site_rule())
    if not lost:
        return
    for pool_id, pool in pools_by_id.items():
        if pool is not None and pool.site in lost:
            verdict.platform[f"pool {pool.name}"] = sites.lost_reason(lost[pool.site])
            pools_by_id[pool_id] = None


def _gpu_types(session: Session, verdict) -> dict[int, model.GpuType]:
    """Every GPU type; one whose speed fails the gate is set aside (its pools with it)."""
    types = {}
    for type_id, name, vendor, memory, speed, domestic in session.execute(
        select(
            GpuTypeRow.id,
            GpuTypeRow.name,
            GpuTypeRow.vendor,
            GpuTypeRow.memory_gb,
            GpuTypeRow.speed,
            GpuTypeRow.domestic,
        ).order_by(GpuTypeRow.name)
    ):
        problem = quarantine.gpu_type_problem(speed)
        if problem is not None:
            verdict.set_aside(f"GPU type {name}", problem)
        types[type_id] = model.GpuType(
            name=name, vendor=vendor, memory_gb=memory, speed=speed, domestic=domestic
        )
    return types


def _pools(session: Session, types_by_id, verdict) -> dict[int, model.Pool | None]:
    """Pool id -> Pool; None for a pool set aside (its own row, or its GPU type, is bad)."""
    pools: dict[int, model.Pool | None] = {}
    for pool_id, name, site, type_id, gpus, per_node, price in session.execute(
        select(
            PoolRow.id,
            PoolRow.name,
            PoolRow.site,
            PoolRow.gpu_type_id,
            PoolRow.gpus,
            PoolRow.gpus_per_node,
            PoolRow.price_per_gpu_hour,
        ).order_by(PoolRow.name)
    ):
        gpu_type = types_by_id[type_id]
        problem = quarantine.pool_problem(gpus, per_node, price)
        if problem is None and f"GPU type {gpu_type.name}" in verdict.platform:
            problem = f"its GPU type {gpu_type.name} is set aside"
        if problem is not None:
            verdict.set_aside(f"pool {name}", problem)
            pools[pool_id] = None
            continue
        pools[pool_id] = model.Pool(
            name=name,
            site=site,
            gpu_type=gpu_type.name,
            gpus=gpus,
            gpus_per_node=per_node,
            price_per_gpu_hour=float(price),
        )
    return pools


def _orgs(session: Session, domains_by_id, verdict) -> dict[int, model.Org | None]:
    """Org id -> Org; None for an org set aside (its budget or its domain's weight is bad)."""
    bad_domains = {}
    for domain in domains_by_id.values():
        problem = quarantine.domain_problem(domain.weight)
        if problem is not None:
            bad_domains[domain.name] = problem
            verdict.set_aside(f"domain {domain.name}", problem)
    orgs: dict[int, model.Org | None] = {}
    for org_id, name, domain_id, budget in session.execute(
        select(OrgRow.id, OrgRow.name, OrgRow.domain_id, OrgRow.budget).order_by(OrgRow.name)
    ):
        domain = domains_by_id[domain_id].name
        problem = quarantine.org_problem(budget)
        if problem is None and domain in bad_domains:
            problem = f"its domain {domain} is set aside"
        if problem is not None:
            verdict.set_aside(f"organisation {name}", problem)
            orgs[org_id] = None
            continue
        orgs[org_id] = model.Org(
            name=name, domain=domain, budget=None if budget is None else float(budget)
        )
    return orgs


def _job_classes(session: Session, verdict) -> dict[str, dict[str, float] | None]:
    """Job class name -> its speeds; None for a class set aside (its speeds are bad)."""
    classes: dict[str, dict[str, float] | None] = {}
    for name, speeds in session.execute(select(JobClassRow.name, JobClassRow.speeds)):
        problem = quarantine.job_class_problem(speeds)
        if problem is not None:
            verdict.set_aside(f"job class {name}", problem)
        classes[name] = None if problem is not None else speeds
    return classes


class _Jobs:
    """Pending jobs, and running jobs with their open placement, both in id order.

    A job whose own fields fail the gate goes to ``verdict.jobs`` (the round
    fails it); one whose org or pool is set aside is held (pending) or
    stranded (running: left out, its GPUs still counted as taken).
    """

    def __init__(self, verdict, orgs_by_id, pools_by_id, types_by_id) -> None:
        self.verdict = verdict
        self.orgs_by_id = orgs_by_id
        self.pools_by_id = pools_by_id
        self.facts = {
            pool_id: quarantine.PoolFacts(
                pool.name,
                pool.gpu_type,
                _speed(pool, types_by_id),
                pool.price_per_gpu_hour,
                pool.nodes,
            )
            for pool_id, pool in pools_by_id.items()
            if pool is not None
        }
        self.types = quarantine.type_facts(self.facts.values())
        self.pending: list[model.Job] = []
        self.running: list[model.RunningJob] = []
        self.held_nodes: list[tuple[str, tuple[tuple[int, int], ...]]] = []
        self.preemptions: dict[int, int] = {}  # running job id -> times preempted before
        self.classes: dict[str, dict[str, float] | None] = {}  # _job_classes
        self.types_by_id = types_by_id
        self.served: dict[int, float] = {}  # Snapshot.served

    def good_orgs(self) -> list[model.Org]:
        return [o for o in self.orgs_by_id.values() if o is not None]

    def read(self, session: Session) -> None:
        placements = {
            job_id: (pool_id, nodes, started_at)
            for job_id, pool_id, nodes, started_at in session.execute(
                select(
                    PlacementRow.job_id,
                    PlacementRow.pool_id,
                    PlacementRow.nodes,
                    PlacementRow.started_at,
                ).where(PlacementRow.ended_at.is_(None))
            )
        }
        self.preemptions = _preemptions(session)
        closed = _closed_runs(session)
        org_names = dict(session.execute(select(OrgRow.id, OrgRow.name)).all())
        query = (
            select(
                JobRow.id,
                JobRow.state,
                JobRow.org_id,
                JobRow.gpus,
                JobRow.hours,
                JobRow.submitted_at,
                JobRow.gpu_types,
                JobRow.name,
                JobRow.priority,
                JobRow.job_class,
            )
            .where(JobRow.state.in_(("pending", "running")))
            .order_by(JobRow.id)
        )
        for row in session.execute(query):
            job_id, state, org_id, gpus, hours, submitted, types, name, priority, kind = row
            speeds = self.classes.get(kind) if kind else model.NO_SPEEDS
            if speeds is None:  # its class is set aside, or was removed
                self._hold_or_strand(job_id, state, placements, f"job class {kind}")
                continue
            problem = quarantine.job_problem(
                gpus, hours, priority, submitted, types, self.types, speeds
            )
            if problem is not None:
                self.verdict.jobs[job_id] = quarantine.job_reason(problem)
                continue
            org = self.orgs_by_id[org_id]
            job = model.Job(
                id=job_id,
                org=org.name if org is not None else org_names[org_id],
                domain=org.domain if org is not None else "",
                gpus=gpus,
                hours=hours,
                submitted_at=clock.to_epoch(submitted),
                gpu_types=tuple(types or ()),
                name=name,
                priority=priority,
                job_class=kind or "",
                speeds=speeds,
            )
            self._serve(job, closed.get(job_id, ()))
            if state == "pending":
                if org is None:
                    self.verdict.held[job_id] = quarantine.held_reason(f"organisation {job.org}")
                else:
                    self.pending.append(job)
            elif job_id in placements:  # a running job always has one; tolerate old rows
                self._running(job, org is not None, placements[job_id])

    def _hold_or_strand(self, job_id: int, state: str, placements, target: str) -> None:
        """A job whose class is set aside (or gone): pending ones wait with the reason;
        running ones keep their GPUs, left out like runs on a pool set aside."""
        if state == "pending":
            self.verdict.held[job_id] = quarantine.held_reason(target)
            return
        self.verdict.stranded.add(job_id)
        placement = placements.get(job_id)
        facts = self.facts.get(placement[0]) if placement is not None else None
        if facts is not None:
            taken = tuple((int(node), int(used)) for node, used in placement[1])
            self.held_nodes.append((facts.name, taken))

    def _serve(self, job: model.Job, runs) -> None:
        """Snapshot.served for ``job`` from its closed placements (model.served_gpu_hours)."""
        total = 0.0
        for type_id, started_at, ended_at in runs:
            speed = job.speed_on(self.types_by_id[type_id])
            total += model.served_gpu_hours(
                job.gpus, speed, clock.to_epoch(started_at), clock.to_epoch(ended_at)
            )
        if total > 0:
            self.served[job.id] = total

    def _running(self, job: model.Job, org_ok: bool, placement) -> None:
        pool_id, nodes, started_at = placement
        facts = self.facts.get(pool_id)
        if facts is None:  # its pool is set aside: its GPUs are not ours to count
            self.verdict.stranded.add(job.id)
            return
        problem = quarantine.placement_problem(nodes, started_at, facts)
        if problem is not None:
            self.verdict.jobs[job.id] = quarantine.job_reason(problem)
            return
        taken = tuple((int(node), int(used)) for node, used in nodes)
        if not org_ok:  # left out with its org; reaped and charged as usual
            self.held_nodes.append((facts.name, taken))
            return
        started = clock.to_epoch(started_at)
        speed = job.speeds.get(facts.gpu_type, facts.speed)  # model.Job.speed_on
        self.running.append(
            model.RunningJob(
                job=job,
                placement=model.Placement(job_id=job.id, pool=facts.name, nodes=taken),
                started_at=started,
                expected_end=started + job.hours / speed * 3600.0,
                preemptions=self.preemptions.get(job.id, 0),
            )
        )


def _preemptions(session: Session) -> dict[int, int]:
    """Running job id -> its closed placements: each was ended by a preemption (a job ends once)."""
    running = select(PlacementRow.job_id).where(PlacementRow.ended_at.is_(None))
    query = (
        select(PlacementRow.job_id, func.count())
        .where(PlacementRow.ended_at.is_not(None), PlacementRow.job_id.in_(running))
        .group_by(PlacementRow.job_id)
    )
    return dict(session.execute(query).all())


def _closed_runs(session: Session) -> dict[int, list[tuple]]:
    """Pending or running job id -> (GPU type id, started, ended) of each closed placement:
    the runs a preemption ended (a job ends once), for Snapshot.served."""
    query = (
        select(
            PlacementRow.job_id, PoolRow.gpu_type_id, PlacementRow.started_at, PlacementRow.ended_at
        )
        .join(PoolRow, PoolRow.id == PlacementRow.pool_id)
        .join(JobRow, JobRow.id == PlacementRow.job_id)
        .where(PlacementRow.ended_at.is_not(None), JobRow.state.in_(("pending", "running")))
        .order_by(PlacementRow.id)
    )
    runs: dict[int, list[tuple]] = {}
    for job_id, type_id, started_at, ended_at in session.execute(query):
        runs.setdefault(job_id, []).append((type_id, started_at, ended_at))
    return runs


def _speed(pool: model.Pool, types_by_id) -> float:
    return next(t.speed for t in types_by_id.values() if t.name == pool.gpu_type)


def overdue_at(grace, run: model.RunningJob, moment: dt.datetime | float) -> bool:
    """Whether ``run`` is past its estimate + grace at ``moment`` (a round reaps it)."""
    epoch = moment if isinstance(moment, float | int) else clock.to_epoch(moment)
    return _deadline(grace, run) <= epoch


def _deadline(grace, run: model.RunningJob) -> float:
    started = clock.from_epoch(run.started_at)
    speed = run.job.hours * 3600.0 / (run.expected_end - run.started_at)
    try:
        return clock.to_epoch(grace.deadline(started, run.job.hours, speed))
    except OverflowError:  # a grace beyond the calendar: never overdue
        return math.inf


def _with_commitments(books, running, gpu_types, pools, now: float):
    """Books as if every running job ran to its estimate (Books.committed, as the simulator).

    Runs are charged when they end, so without this two jobs of one org could
    each be admitted against the same budget left. Policies see budgets and
    subsidy left net of what running jobs will still be charged.
    """
    if not running:
        return books
    pool_by_name = {p.name: p for p in pools}
    # in start order, the order charges spend limits in (gpupool.scheduler.accounts)
    runs = (
        (run.job, pool, gpu_types[pool.gpu_type], run.started_at, run.expected_end)
        for run in sorted(running, key=lambda r: (r.started_at, r.job.id))
        for pool in (pool_by_name[run.placement.pool],)
    )
    return books.committed(runs, now)


def _deficits(session, books, policy, gpu_types, pools, running, epoch: float) -> dict:
    from gpupool.accounting.guarantees import records_from_entries, round_deficits

    def booked(start: float) -> list:
        records = _ledger_usage(session, start, epoch)
        # usage the round booked in memory only (a dry run's voucher expiry metering)
        return records + records_from_entries(books.entries[getattr(books, "loaded_entries", 0) :])

    params = getattr(policy, "params", None)
    return round_deficits(params, gpu_types, pools, running, books.charged_until, booked, epoch)


def _ledger_usage(session: Session, start: float, end: float) -> list:
    """Usage the ledger booked in ``[start, end]``, per domain, as instant records.

    The same figure as records_from_entries over the whole ledger (entries are
    instants at their booking time), summed by the database.
    """
    from gpupool.accounting.books import USAGE_KINDS
    from gpupool.accounting.guarantees import UsageRecord

    query = (
        select(LedgerEntryRow.domain, func.sum(LedgerEntryRow.effective_gpu_hours))
        .where(
            LedgerEntryRow.kind.in_(USAGE_KINDS),
            LedgerEntryRow.created_at >= clock.from_epoch(start),
            LedgerEntryRow.created_at <= clock.from_epoch(end),
        )
        .group_by(LedgerEntryRow.domain)
        .order_by(LedgerEntryRow.domain)
    )
    return [UsageRecord(domain, end, end, hours) for domain, hours in session.execute(query)]


def decayed_usage(
    session: Session, moment: dt.datetime, half_life_hours: float, grace: object | None = None
) -> dict:
    """Each domain's usage in effective GPU-hours, every instant of use decayed by its age.

    The rule, shared with the simulator (gpupool.simulations.engine.UsageMeter):
    a run of g GPUs of speed s (the job's class's speed on the type: Job.speed_on) from
    a to b adds g s (e^(-l(now-b)) - e^(-l(now-a))) / l
    with l = ln 2 / half-life (hours): an hour used h hours ago weighs 2^(-h / half-life).
    It reads placements, not charges, so a running job counts up to now (or up to
    its deadline, past which the round reaps it) instead of only once it ends.
    Runs that ended more than USAGE_HORIZON_HALF_LIVES half-lives ago are not read:
    they would add less than 2**-50 of their size, below a float sum's rounding.
    ``grace``: the lifecycle.Grace the round reaps with (default: configured).
    """
    from gpupool.scheduler import lifecycle

    grace = grace or lifecycle.parse_grace(None)
    horizon = moment - dt.timedelta(hours=half_life_hours * USAGE_HORIZON_HALF_LIVES)
    query = (
        select(
            DomainRow.name,
            JobRow.gpus,
            JobRow.hours,
            GpuTypeRow.speed,
            PlacementRow.started_at,
            PlacementRow.ended_at,
            GpuTypeRow.name,
            JobRow.job_class,
        )
        .join(JobRow, JobRow.id == PlacementRow.job_id)
        .join(OrgRow, OrgRow.id == JobRow.org_id)
        .join(DomainRow, DomainRow.id == OrgRow.domain_id)
        .join(PoolRow, PoolRow.id == PlacementRow.pool_id)
        .join(GpuTypeRow, GpuTypeRow.id == PoolRow.gpu_type_id)
        .where(
            PlacementRow.started_at <= moment,
            (PlacementRow.ended_at.is_(None)) | (PlacementRow.ended_at > horizon),
        )
        .order_by(PlacementRow.id)
    )
    now = clock.to_epoch(moment)
    usage: dict[str, float] = {}
    classes = _job_classes(session, quarantine.Verdict())  # set aside: None
    for row in session.execute(query):
        domain, gpus, hours, speed, started_at, ended_at, type_name, kind = row
        if kind:  # the job's class's speed on that type (model.Job.speed_on)
            speed = (classes.get(kind) or {}).get(type_name, speed)
        if quarantine.gpu_type_problem(speed) is not None or not _positive_int(gpus):
            continue  # a set-aside row: no figure to trust
        end = ended_at
        if end is None:  # still running: up to now, or its deadline if that came first
            try:
                end = min(moment, grace.deadline(started_at, hours, speed))
            except (OverflowError, ValueError, ZeroDivisionError, TypeError):
                end = moment
        used = run_usage(
            gpus * speed, clock.to_epoch(started_at), clock.to_epoch(end), now, half_life_hours
        )
        usage[domain] = usage.get(domain, 0.0) + used
    return usage


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def run_usage(rate: float, start: float, end: float, now: float, half_life_hours: float) -> float:
    """Decayed effective GPU-hours of ``rate`` effective GPUs busy from ``start`` to ``end``
    (epoch seconds), seen at ``now``: the integral of rate x 2^(-age / half-life)."""
    if end <= start:
        return 0.0
    decay = math.log(2) / half_life_hours
    newest = (now - min(end, now)) / 3600.0
    oldest = (now - start) / 3600.0
    return rate * (math.exp(-decay * newest) - math.exp(-decay * oldest)) / decay


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(JobRow).where(JobRow.state == "pending"))
