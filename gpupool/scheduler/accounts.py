"""The live scheduler's accounting: the database <-> gpupool.accounting.Books.

The live system keeps no accounting arithmetic of its own. It loads
programmes, vouchers and the ledger into the same :class:`Books` the simulator
uses, lets Books price, fund and split usage, and writes Books' new
LedgerEntry objects back as append-only ``ledger_entries`` rows (plus the
vouchers' new balances and any carried-over vouchers). So the same usage gives
the same ledger, live or simulated.

When charges happen (docs/accounting.md, "Charging rules"):

- ``charge_ended_run`` when a running job stops holding GPUs (finished, failed,
  timed out, cancelled while running, preempted): its usage of the placement
  that just ended, from where it was last charged up to ``ended_at``.
- ``close_books`` at the start of every round: when a voucher is due to
  expire, running jobs are metered up to ``now`` first (so usage before the
  expiry may still spend it), then the vouchers expire (carry-over included).

Writers call ``load_books(session, now, lock=True)``: it takes the write lock
live rounds take (gpupool.scheduler.locking.lock_writes: an advisory lock on
PostgreSQL, the database's write lock on SQLite), so two transactions never
fund usage from the same budget or voucher balance at once.

Programmes are stored in ``programmes``: ``rules`` holds the declaration (the
source of truth, including recurring periods); ``period_start``/``period_end``
are the fixed span, or far-off sentinels for an unbounded side.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from gpupool import limits, model
from gpupool.accounting.books import USAGE_KINDS, Books, LedgerEntry, cents
from gpupool.accounting.periods import PeriodSpec, label_bounds, period_label
from gpupool.accounting.programmes import Programme, Voucher
from gpupool.model import GpupoolError
from gpupool.scheduler import clock, fields, locking, permissions, quarantine, repository
from gpupool.scheduler.orm import (
    JobRow,
    LedgerEntryRow,
    OrgRow,
    PlacementRow,
    PoolRow,
    ProgrammeRow,
    VoucherRow,
)
from gpupool.scheduler.repository import programme_from_row, programme_rules

_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


# ---------------------------------------------------------------------------
# Rows <-> accounting objects
# ---------------------------------------------------------------------------


def _epoch(moment: dt.datetime | None) -> float | None:
    return None if moment is None else clock.to_epoch(moment)


def _moment(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else clock.from_epoch(seconds)


class _Names:
    """Id <-> name maps for orgs, programmes and pools, read once per Books load."""

    def __init__(self, session: Session) -> None:
        self.orgs = dict(session.execute(select(OrgRow.id, OrgRow.name)).all())
        self.org_ids = {name: i for i, name in self.orgs.items()}
        self.programmes = dict(session.execute(select(ProgrammeRow.id, ProgrammeRow.name)).all())
        self.programme_ids = {name: i for i, name in self.programmes.items()}
        self.pools = dict(session.execute(select(PoolRow.id, PoolRow.name)).all())
        self.pool_ids = {name: i for i, name in self.pools.items()}


def _voucher(row: VoucherRow, names: _Names) -> Voucher:
    return Voucher(
        id=row.id,
        org=names.orgs[row.org_id],
        programme=names.programmes[row.programme_id],
        amount=row.amount,
        balance=min(row.balance, row.amount),
        awarded_at=clock.to_epoch(row.awarded_at),
        expires_at=_epoch(row.expires_at),
    )


def _entry(row: LedgerEntryRow, names: _Names) -> LedgerEntry:
    return LedgerEntry(
        kind=row.kind,
        org=names.orgs[row.org_id],
        period=row.period,
        at=clock.to_epoch(row.created_at),
        domain=row.domain,
        job_id=row.job_id,
        gpu_type=row.gpu_type,
        cost=row.cost,
        subsidy=row.subsidy,
        org_pays=row.org_pays,
        effective_gpu_hours=row.effective_gpu_hours,
        programme=names.programmes.get(row.programme_id),
        voucher_id=row.voucher_id,
        note=row.note,
        pool=names.pools.get(row.pool_id),  # None: a voucher entry, or charged before 0003
    )


# ---------------------------------------------------------------------------
# Loading and writing back
# ---------------------------------------------------------------------------


def load_books(
    session: Session,
    now: dt.datetime | float | None = None,
    rules: object | None = None,
    lock: bool = False,
    whole_ledger: bool = True,
    jobs: Iterable[int] = (),
) -> Books:
    """Programmes, vouchers (current balances) and the ledger as a Books.

    ``rules``: the active policy document's flat SubsidyRules, if any. ``now``
    is accepted for symmetry with the simulator; balances do not depend on it.
    ``whole_ledger`` False (rounds, charging): the ledger comes as per-period
    sums instead of every entry (see _ledger_sums), and how far each job is
    charged only for jobs holding GPUs and ``jobs``: the balances are the same,
    the work no longer grows with the platform's history. ``books.entries``
    then holds those sums, not the ledger; reports load the whole ledger.
    Rows that fail the sanity gate (gpupool.scheduler.quarantine) are left out
    and named in ``books.set_aside``.
    """
    if lock:
        locking.lock_writes(session)
    names = _Names(session)
    set_aside: dict[str, str] = {}
    programmes, vouchers = _declared(session, names, set_aside)
    if whole_ledger:
        entries = [
            _entry(r, names)
            for r in session.scalars(select(LedgerEntryRow).order_by(LedgerEntryRow.id))
        ]
    else:
        entries = _ledger_sums(session, names)
    orgs = [_org(r, set_aside) for r in repository.list_orgs(session)]
    books = Books(programmes, vouchers, entries, orgs=orgs, flat=rules)
    books.set_aside = set_aside  # rows left out, "programme x" -> reason (quarantine)
    if not whole_ledger:
        jobs = list(jobs)
        books.resume_charges(_charged_until(session, jobs))
        books.resume_job_subsidies(_job_subsidies(session, jobs, names, programmes))
    books.stored_vouchers = {v.id: v for v in books.vouchers}  # what the database holds now
    books.loaded_entries = len(entries)  # entries past this index were booked in memory
    return books


def declared(session: Session) -> tuple[list[Programme], list[Voucher]]:
    """The programmes (in funding order) and vouchers (current balances) the rounds price
    with, as load_books reads them; what-if replays start from these."""
    return _declared(session, _Names(session), {})


def carried_over_since(session: Session, since: dt.datetime) -> set[int]:
    """Vouchers the books made from carry-overs at or after ``since``."""
    query = select(LedgerEntryRow.voucher_id).where(
        LedgerEntryRow.kind == "carry_over", LedgerEntryRow.created_at >= since
    )
    return {voucher_id for voucher_id in session.scalars(query) if voucher_id is not None}


def _declared(
    session: Session, names: _Names, set_aside: dict[str, str]
) -> tuple[list[Programme], list[Voucher]]:
    return _programmes(session, set_aside), _vouchers(session, names, set_aside)


def _programmes(session: Session, set_aside: dict[str, str]) -> list[Programme]:
    """Every programme in funding order; one whose stored rules fail the sanity gate
    (gpupool.scheduler.quarantine) stays in name only, funding nobody, so the
    ledger entries it funded still fold into its balances."""

    programmes = []
    for row in session.scalars(select(ProgrammeRow).order_by(ProgrammeRow.id)):
        problem = quarantine.programme_problem(row)
        if problem is None:
            programmes.append(programme_from_row(row))
            continue
        set_aside[f"programme {row.name}"] = quarantine.invalid(problem)
        programmes.append(Programme(name=row.name, orgs=frozenset({FUNDS_NOBODY})))
    return programmes


FUNDS_NOBODY = "\x00"  # no org has this name: a programme set aside is eligible to none


def _vouchers(session: Session, names: _Names, set_aside: dict[str, str]) -> list[Voucher]:
    """Vouchers the accounting can use: not of a programme set aside, and sane themselves."""

    vouchers = []
    for row in session.scalars(select(VoucherRow).order_by(VoucherRow.id)):
        programme = names.programmes.get(row.programme_id)
        if programme is None or f"programme {programme}" in set_aside:
            continue  # unusable until its programme is fixed; its balance is kept as stored
        problem = quarantine.voucher_problem(row)
        if problem is not None:
            set_aside[f"voucher {row.id}"] = quarantine.invalid(problem)
            continue
        vouchers.append(_voucher(row, names))
    return vouchers


def _org(row: OrgRow, set_aside: dict[str, str]) -> model.Org:
    """The org as the books see it; a budget that fails the sanity gate is not applied
    (rounds leave such an org's jobs waiting: gpupool.scheduler.snapshot)."""

    problem = quarantine.org_problem(row.budget)
    if problem is None:
        return repository.org_model(row)
    set_aside[f"organisation {row.name}"] = quarantine.invalid(problem)
    return model.Org(name=row.name, domain=row.domain.name, budget=None)


def _ledger_sums(session: Session, names: _Names) -> list[LedgerEntry]:
    """Usage entries summed per (kind, org, domain, period, programme): one per group.

    Budgets spent, caps used and org spending are sums over exactly these
    keys (Books._record), so Books folds the sums to the same balances as the
    entries. Award/expiry/carry-over entries change no balance (the vouchers
    table holds balances) and are left out. Money sums are exact cents up to
    float noise, which cents() rounds away.
    """
    row = LedgerEntryRow
    query = (
        select(
            row.kind,
            row.org_id,
            row.domain,
            row.period,
            row.programme_id,
            func.sum(row.cost),
            func.sum(row.subsidy),
            func.sum(row.org_pays),
            func.sum(row.effective_gpu_hours),
            func.max(row.created_at),
        )
        .where(row.kind.in_(USAGE_KINDS))
        .group_by(row.kind, row.org_id, row.domain, row.period, row.programme_id)
        .order_by(row.kind, row.org_id, row.domain, row.period, row.programme_id)
    )
    return [
        LedgerEntry(
            kind=kind,
            org=names.orgs[org_id],
            domain=domain,
            period=period,
            programme=names.programmes.get(programme_id),
            cost=cost,
            subsidy=subsidy,
            org_pays=org_pays,
            effective_gpu_hours=hours,
            at=clock.to_epoch(last),
            note="sum",
        )
        for kind, org_id, domain, period, programme_id, cost, subsidy, org_pays, hours, last in (
            session.execute(query)
        )
    ]


def _charged_until(session: Session, jobs: Iterable[int]) -> dict[int, float]:
    """Where the last charge of each job holding GPUs (and of ``jobs``) ends."""
    holding = select(PlacementRow.job_id).where(PlacementRow.ended_at.is_(None))
    wanted = LedgerEntryRow.job_id.in_(holding)
    extra = list(jobs)
    if extra:
        wanted = wanted | LedgerEntryRow.job_id.in_(extra)
    query = (
        select(LedgerEntryRow.job_id, func.max(LedgerEntryRow.created_at))
        .where(LedgerEntryRow.kind == "charge", wanted)
        .group_by(LedgerEntryRow.job_id)
    )
    return {job_id: clock.to_epoch(last) for job_id, last in session.execute(query)}


def _job_subsidies(
    session: Session, jobs: list[int], names: _Names, programmes: list[Programme]
) -> dict[tuple[str, int], Decimal]:
    """What each job holding GPUs (and each of ``jobs``) got from programmes with a
    job_cap: the per-job sums a job cap is checked against (the ledger sums have none)."""
    capped = {p.name for p in programmes if p.job_cap is not None}
    if not capped:
        return {}
    holding = select(PlacementRow.job_id).where(PlacementRow.ended_at.is_(None))
    wanted = LedgerEntryRow.job_id.in_(holding)
    if jobs:
        wanted = wanted | LedgerEntryRow.job_id.in_(jobs)
    query = (
        select(LedgerEntryRow.job_id, LedgerEntryRow.programme_id, func.sum(LedgerEntryRow.subsidy))
        .where(LedgerEntryRow.kind.in_(USAGE_KINDS), LedgerEntryRow.programme_id.is_not(None))
        .where(wanted)
        .group_by(LedgerEntryRow.job_id, LedgerEntryRow.programme_id)
    )
    sums = {}
    for job_id, programme_id, subsidy in session.execute(query):
        name = names.programmes.get(programme_id)
        if name in capped:
            sums[(name, job_id)] = cents(subsidy)
    return sums


def write_back(
    session: Session, books: Books, entries: Iterable[LedgerEntry]
) -> list[LedgerEntryRow]:
    """Store vouchers Books changed or created, then ``entries`` as ledger rows."""
    _save_vouchers(session, books)
    names = _Names(session)
    rows = []
    for entry in entries:
        row = LedgerEntryRow(
            job_id=entry.job_id,
            org_id=_org_id(names, entry.org),
            domain=entry.domain,
            gpu_type=entry.gpu_type,
            period=entry.period,
            kind=entry.kind,
            cost=float(entry.cost),
            subsidy=float(entry.subsidy),
            org_pays=float(entry.org_pays),
            effective_gpu_hours=entry.effective_gpu_hours,
            programme_id=names.programme_ids.get(entry.programme),
            voucher_id=entry.voucher_id,
            created_at=clock.from_epoch(entry.at),
            note=entry.note,
            pool_id=_pool_id(names, entry.pool),
        )
        session.add(row)
        rows.append(row)
    session.flush()
    return rows


def _org_id(names: _Names, org: str) -> int:
    try:
        return names.org_ids[org]
    except KeyError:
        raise model.NotFound(f"no organisation named {org!r}", location="org") from None


def _pool_id(names: _Names, pool: str | None) -> int | None:
    if pool is None:
        return None
    try:
        return names.pool_ids[pool]
    except KeyError:
        raise model.NotFound(f"no pool named {pool!r}", location="pool") from None


def _save_vouchers(session: Session, books: Books) -> None:
    stored: dict[int, Voucher] = getattr(books, "stored_vouchers", {})
    names = _Names(session)
    created = False
    for voucher in books.vouchers:
        before = stored.get(voucher.id)
        if before is None:
            session.add(
                VoucherRow(
                    id=voucher.id,  # ledger entries already name this id
                    org_id=_org_id(names, voucher.org),
                    programme_id=names.programme_ids[voucher.programme],
                    amount=voucher.amount,
                    balance=voucher.balance,
                    awarded_at=clock.from_epoch(voucher.awarded_at),
                    expires_at=_moment(voucher.expires_at),
                )
            )
            created = True
        elif before.balance != voucher.balance:
            session.get(VoucherRow, voucher.id).balance = voucher.balance
    session.flush()
    if created and session.get_bind().dialect.name == "postgresql":
        # explicit ids do not advance the serial sequence; keep it ahead of them
        session.execute(
            text("SELECT setval(pg_get_serial_sequence('vouchers', 'id'), max(id)) FROM vouchers")
        )
    books.stored_vouchers = {v.id: v for v in books.vouchers}


# ---------------------------------------------------------------------------
# When charges happen
# ---------------------------------------------------------------------------


def _usage_of(session: Session, job_row: JobRow, placement: PlacementRow):
    job = repository.job_model(job_row)
    pool = repository.pool_model(placement.pool)
    gpu_type = repository.gpu_type_model(placement.pool.gpu_type)
    return job, pool, gpu_type


def charge_start(job_row: JobRow, placement: PlacementRow) -> float | None:
    """Where charging a run starts (epoch seconds), or None while there is nothing to charge.

    A job with a payload is run by its site's agent: it is charged from the real start
    the agent reported (a Slurm queue's wait is not the job's), and not at all before
    one is known (a run cancelled while queued never started). A job without a payload
    only books GPUs, so it is charged from its placement, as its site reports its end
    by hand (``job finish``).
    """
    if job_row.payload is None:
        return clock.to_epoch(placement.started_at)
    if placement.run_started_at is None:
        return None
    return clock.to_epoch(placement.run_started_at)


def charge_ended_run(
    session: Session,
    job_row: JobRow,
    ended_at: dt.datetime | float,
    books: Books | None = None,
) -> list[LedgerEntryRow]:
    """Charge a job that stopped holding GPUs at ``ended_at``; return the new ledger rows.

    Charges its latest placement exactly up to ``ended_at`` (nothing if it never
    ran, or if its agent never reported it started: charge_start): from where it
    was last charged, or, when a round already metered it past ``ended_at``, by
    correction entries refunding the difference (Books.close_run). Called once
    when a running job completes, fails, times out, is cancelled or is preempted.
    """
    placements = repository.placements_of(session, job_row.id)
    if not placements:
        return []
    placement = placements[-1]
    end = ended_at if isinstance(ended_at, float | int) else clock.to_epoch(ended_at)
    if books is None:  # priced with the active policy's flat rules, as a round prices
        rules = _active_rules(session)
        books = load_books(
            session, end, rules=rules, lock=True, whole_ledger=False, jobs=[job_row.id]
        )
    started = charge_start(job_row, placement)
    if started is None or started >= end:
        return []  # nothing ran: nothing was metered either (close_books skips it)
    job, pool, gpu_type = _usage_of(session, job_row, placement)
    done = books.charged_until(job.id)
    if done is not None and end < done:
        charges = ledger_of_job(session, job.id)  # books loaded as sums hold no per-job entries
        entries = books.close_run(job, pool, gpu_type, started, end, charges=charges)
    else:
        ahead = _started_before(session, job.id, started)
        entries = books.close_run(job, pool, gpu_type, started, end, ahead)
    return write_back(session, books, entries)


def _active_rules(session: Session) -> object | None:
    """The active policy's flat SubsidyRules: a run a site reports ended (or a cancel)
    is charged with the same rules a round's reap or preemption charges with."""
    from gpupool.scheduler.active import active_policy

    return active_policy(session).pricing


def charge_problem(
    session: Session, job_row: JobRow, ended_at: dt.datetime, books: Books
) -> str | None:
    """Why charging a job that holds GPUs up to ``ended_at`` would fail, or None.

    Tried on a scratch copy of ``books`` (nothing written or booked): a round
    quarantining a job with bad stored data charges it only if this passes.
    """

    placement = repository.open_placement_of(session, job_row.id)
    if placement is None:
        return None
    try:
        job, pool, gpu_type = _usage_of(session, job_row, placement)
        started = charge_start(job_row, placement)
        end = clock.to_epoch(ended_at)
        if started is None or started >= end:
            return None
        trial = books.fork()
        done = books.charged_until(job.id)
        if done is not None:
            trial.resume_charges({job.id: done})
        ahead = _started_before(session, job.id, started)
        entries = trial.meter(job, pool, gpu_type, started, end, ahead)
    except (GpupoolError, ArithmeticError, ValueError, TypeError, KeyError) as exc:
        return f"{type(exc).__name__}: {exc}"
    for entry in entries:
        for name in ("cost", "subsidy", "org_pays"):
            problem = quarantine.number_problem(
                name, float(getattr(entry, name)), -quarantine.MAX_MONEY, quarantine.MAX_MONEY
            )
            if problem is not None:
                return problem
    return None


def _started_before(session: Session, job_id: int, started: float) -> list[tuple]:
    """Runs still holding GPUs that started before this one (start time, then job id):
    Books.charge books them ahead, so limits go to runs in the order they started."""
    query = (
        select(PlacementRow, JobRow)
        .join(JobRow, JobRow.id == PlacementRow.job_id)
        .where(PlacementRow.ended_at.is_(None), PlacementRow.job_id != job_id)
        .where(PlacementRow.started_at <= clock.from_epoch(started))
    )
    ahead = []
    for placement, job_row in session.execute(query):
        began = charge_start(job_row, placement)
        if began is None or (began, job_row.id) >= (started, job_id):
            continue
        job, pool, gpu_type = _usage_of(session, job_row, placement)
        expected_end = began + job.runtime_hours_on(gpu_type) * 3600.0
        ahead.append(((began, job.id), (job, pool, gpu_type, began, expected_end)))
    return [run for _, run in sorted(ahead, key=lambda item: item[0])]


def close_books(
    session: Session,
    books: Books,
    now: dt.datetime | float,
    write: bool = True,
    skip: Iterable[int] = (),
) -> list[LedgerEntry]:
    """Expire vouchers due by ``now``, metering running jobs up to ``now`` first.

    With ``write`` False (a dry run) the books change in memory only. ``skip``:
    running jobs not to meter (a round's set-aside ones: gpupool.scheduler.quarantine).
    """
    moment = now if isinstance(now, float | int) else clock.to_epoch(now)
    if not books.expiring(moment):
        return []
    entries: list[LedgerEntry] = []
    skipped = set(skip)
    for placement in repository.open_placements(session):
        if placement.job_id in skipped:
            continue
        job_row = session.get(JobRow, placement.job_id)
        started = charge_start(job_row, placement)
        if started is None or started >= moment:
            continue  # an agent's run not known to have started: nothing to meter yet
        job, pool, gpu_type = _usage_of(session, job_row, placement)
        entries += books.meter(job, pool, gpu_type, started, moment)
    entries += books.expire(moment)
    if write:
        write_back(session, books, entries)
    return entries


# ---------------------------------------------------------------------------
# Admin operations: programmes and vouchers
# ---------------------------------------------------------------------------


def add_programme(session: Session, actor: str, programme: Programme) -> ProgrammeRow:
    permissions.require_admin(session, actor, "add subsidy programmes")
    names = session.scalars(select(ProgrammeRow.name))
    limits.check_unique(programme.name, names, "programme", "name")
    known_domains = {r.name for r in repository.list_domains(session)}
    for domain in sorted(programme.domains - known_domains):
        raise model.NotFound(f"no domain named {domain!r}", location="--domain")
    known_orgs = {r.name for r in repository.list_orgs(session)}
    for org in sorted(programme.orgs - known_orgs):
        raise model.NotFound(f"no organisation named {org!r}", location="--org")
    known_types = {r.name for r in repository.list_gpu_types(session)}
    for gpu_type in sorted(set(programme.gpu_type_rates) | set(programme.exchange_rates)):
        if gpu_type not in known_types:
            raise model.NotFound(f"no GPU type named {gpu_type!r}", location="--gpu-type-rate")
    period = programme.period
    row = ProgrammeRow(
        name=programme.name,
        period_start=_moment(period.start) or _EARLIEST,
        period_end=_moment(period.end) or _LATEST,
        budget=None if programme.budget is None else clock.cents(programme.budget),
        rules=programme_rules(programme),
    )
    session.add(row)
    session.flush()
    permissions.audit(session, actor, "programme.add", programme.name, after=programme_view(row))
    return row


def award_voucher(
    session: Session,
    actor: str,
    org: str,
    programme: str,
    amount: object,
    now: dt.datetime | float | None = None,
    expires_at: dt.datetime | float | None = None,
) -> VoucherRow:
    """Give ``org`` voucher hours from ``programme``; books an 'award' ledger entry."""
    permissions.require_admin(session, actor, "award vouchers")
    hours = fields.positive_float(
        amount, "--amount", "a positive number of voucher hours", limits.VOUCHER_HOURS
    )
    org = repository.get_org(session, org, location="ORG").name
    programme = limits.normalise(programme or "")
    moment = clock.to_epoch(now) if isinstance(now, dt.datetime) else now or clock.now_epoch()
    expiry = clock.to_epoch(expires_at) if isinstance(expires_at, dt.datetime) else expires_at
    if expiry is not None and expiry <= moment:
        raise GpupoolError("a voucher must expire after it is awarded", location="--expires")
    books = load_books(session, moment, lock=True, whole_ledger=False)
    try:
        books.programme(programme)
    except model.NotFound as exc:
        raise model.NotFound(exc.message, location="--programme") from None
    try:
        voucher = books.award(org, programme, hours, moment, expires_at=expiry)
    except GpupoolError as exc:
        where = {"org": "ORG", "programme": "--programme"}.get(exc.location, exc.location)
        raise GpupoolError(exc.message, location=where) from None
    award = [e for e in books.entries if e.kind == "award" and e.voucher_id == voucher.id]
    write_back(session, books, award)
    row = session.get(VoucherRow, voucher.id)
    permissions.audit(session, actor, "voucher.award", f"voucher {row.id}", after=voucher_view(row))
    return row


# ---------------------------------------------------------------------------
# Views (the --json shapes)
# ---------------------------------------------------------------------------


def _period_text(spec: PeriodSpec) -> str:
    if spec.kind != "fixed":
        return {"month": "monthly", "quarter": "quarterly", "year": "yearly"}[spec.kind]
    if spec.start is not None and spec.end is not None:
        for kind in ("quarter", "month", "year"):
            label = period_label(spec.start, kind)
            if label_bounds(label) == (spec.start, spec.end):
                return label
    start = clock.iso(_moment(spec.start)) if spec.start is not None else "..."
    end = clock.iso(_moment(spec.end)) if spec.end is not None else "..."
    return f"{start} - {end}"


def programme_view(row: ProgrammeRow, books: Books | None = None, now: float | None = None):
    programme = programme_from_row(row)
    view = {
        "name": programme.name,
        "period": _period_text(programme.period),
        "budget": programme.budget,
        "rate": programme.rate,
        "domains": sorted(programme.domains),
        "orgs": sorted(programme.orgs),
        "gpu_type_rates": dict(programme.gpu_type_rates),
        "vouchers": programme.uses_vouchers,
        "exchange_rates": dict(programme.exchange_rates),
        "org_cap": programme.org_cap,
        "end_of_period": "expire"
        if not programme.carry_over
        else f"carry-over:{programme.carry_over:g}",
        "when_exhausted": programme.when_exhausted,
        "job_cap": programme.job_cap,
        "pacing": programme.pacing,
        "org_share": programme.org_share,
    }
    if books is not None and now is not None:
        left = books.budget_left(programme.name, now)
        totals = books.totals(by="programme").get((programme.name,))
        spent = float(totals.subsidy) if totals is not None else 0.0
        view["subsidy_paid"] = spent
        view["budget_left_now"] = None if left is None else float(left)
    return view


def voucher_view(row: VoucherRow) -> dict:
    return {
        "id": row.id,
        "org": _org_name(row),
        "programme": _programme_name(row),
        "amount": row.amount,
        "balance": round(row.balance, 6),
        "awarded_at": clock.iso(row.awarded_at),
        "expires_at": clock.iso(row.expires_at),
    }


def _org_name(row: VoucherRow) -> str:
    from sqlalchemy.orm import object_session

    return object_session(row).get(OrgRow, row.org_id).name


def _programme_name(row: VoucherRow) -> str | None:
    from sqlalchemy.orm import object_session

    programme = object_session(row).get(ProgrammeRow, row.programme_id)
    return None if programme is None else programme.name


def list_programmes(session: Session, actor: str, now: float | None = None) -> list[dict]:
    """Every programme with its spending (admins, auditors); for a submitter the
    programmes open to its organisation, without the platform-wide spending
    figures (they add up every organisation's subsidy)."""
    grant = permissions.authorize(session, actor, "programme.list")
    moment = clock.now_epoch() if now is None else now
    rows = session.scalars(select(ProgrammeRow).order_by(ProgrammeRow.id)).all()
    if not grant.everything:
        org = session.get(OrgRow, grant.org_id)
        rows = [r for r in rows if programme_from_row(r).eligible(org.name, org.domain.name)]
        return [programme_view(r) | {"subsidy_paid": None, "budget_left_now": None} for r in rows]
    books = load_books(session, moment, whole_ledger=False)
    return [programme_view(r, books, moment) for r in rows]


def list_vouchers(session: Session, actor: str, org: str | None = None) -> list[dict]:
    """Vouchers: every organisation's (admins, auditors), a submitter's own org's."""
    grant = permissions.authorize(session, actor, "voucher.list")
    permissions.require_org(grant, org, "list vouchers", location="--org")
    query = select(VoucherRow).order_by(VoucherRow.id)
    if not grant.everything:
        query = query.where(VoucherRow.org_id == grant.org_id)
    elif org is not None:
        query = query.where(VoucherRow.org_id == repository.get_org(session, org).id)
    return [voucher_view(r) for r in session.scalars(query)]


def ledger_of_job(session: Session, job_id: int) -> list[LedgerEntry]:
    names = _Names(session)
    query = (
        select(LedgerEntryRow).where(LedgerEntryRow.job_id == job_id).order_by(LedgerEntryRow.id)
    )
    return [_entry(r, names) for r in session.scalars(query)]


def _gpu_hours(session: Session, entries, job: model.Job) -> float:
    """GPU-hours behind one job's charge entries, each at the job's speed on its own GPU
    type (a requeued job may have run on several types): Job.speed_on."""
    speeds = {t.name: job.speed_on(t) for t in repository.list_gpu_types(session)}
    return sum(
        e.effective_gpu_hours / speeds[e.gpu_type]
        for e in entries
        if e.kind in ("charge", "correction") and e.gpu_type in speeds
    )


def job_accounting(session: Session, job_row: JobRow) -> dict | None:
    """Why this pool and this price: the pool, its GPU type and price, and the ledger's split.

    None for a job that never ran. ``pool_reason`` is why the policy chose the
    latest placement's pool (None if it was placed before the schema kept
    reasons). ``charges`` lists each ledger entry (a run split at period,
    programme and voucher boundaries); the sums are exact.
    """
    placements = repository.placements_of(session, job_row.id)
    if not placements:
        return None
    pool = placements[-1].pool
    gpu_type = pool.gpu_type
    job = repository.job_model(job_row)
    speed = job.speed_on(repository.gpu_type_model(gpu_type))
    entries = ledger_of_job(session, job_row.id)
    funded: dict[str, float] = {}
    for entry in entries:
        if entry.subsidy:
            source = entry.programme or "policy subsidy rates"
            if entry.voucher_id is not None:
                source += f" (voucher {entry.voucher_id})"
            funded[source] = funded.get(source, 0.0) + float(entry.subsidy)
    return {
        "pool": pool.name,
        "pool_reason": placements[-1].reason,
        "site": pool.site,
        "gpu_type": gpu_type.name,
        "job_class": job.job_class or None,
        "speed": speed,
        "estimated_runtime_hours": round(job_row.hours / speed, 4),
        "price_per_gpu_hour": float(pool.price_per_gpu_hour),
        "charged_gpu_hours": round(_gpu_hours(session, entries, job), 4),
        "cost": float(sum((e.cost for e in entries), Decimal(0))),
        "subsidy": float(sum((e.subsidy for e in entries), Decimal(0))),
        "org_pays": float(sum((e.org_pays for e in entries), Decimal(0))),
        "subsidy_by_source": {k: round(v, 2) for k, v in funded.items()},
        "charges": [
            {
                "period": e.period,
                "cost": float(e.cost),
                "subsidy": float(e.subsidy),
                "org_pays": float(e.org_pays),
                "programme": e.programme,
                "voucher": e.voucher_id,
                "note": e.note,
            }
            for e in entries
        ],
    }
