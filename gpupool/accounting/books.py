"""The books: an append-only ledger plus the balances it implies.

This module composes the accounting pieces into one :class:`Books`:

- gpupool.accounting.ledger: LedgerEntry, Totals, cents and the entry kinds;
- gpupool.accounting.funding: how a stretch of a run is priced and funded by
  programmes, vouchers and flat rates (quotes and charges both use it);
- gpupool.accounting.reservations: the forked twin that books running jobs
  ahead for a round;
- gpupool.accounting.admission: org-pays floors and assessments;
- gpupool.accounting.vouchers: voucher awards, expiry and carry-over.

Books itself keeps the balances and the ledger: construction, reading,
charging (``charge``/``meter``), corrections and folding entries into balances.

Live and simulated runs use this same class: the scheduler loads programmes,
vouchers and past entries from the database into a ``Books`` and writes the new
entries (and voucher balances) back; the simulator keeps one in memory.

Charging rules (docs/accounting.md has worked figures):

1. Usage is booked on what actually ran: ``charge(job, pool, gpu_type, start,
   end)`` for an interval the job occupied its GPUs. Drivers call it when a job
   ends (completed, failed, preempted, cancelled, timed out) and ``meter`` it up
   to ``now`` for running jobs before every ``expire(now)``, so usage before a
   voucher's expiry can still spend it. An interval is never booked twice.
2. The interval is cut at accounting-period boundaries, programme period
   boundaries and voucher award/expiry instants; each piece is priced on its own.
3. Within a piece, eligible programmes fund it in declaration order. A programme
   takes the share of the piece it can fund (all of it; or, with vouchers, what
   the org's vouchers cover, spent in the programme's spending order) and pays
   its rate on that share, shrinking the share so that the subsidy never
   exceeds its budget left or the org's cap left. The rest falls through to the
   next programme, and what no programme funds is paid in full by the org.
   Rates never stack: every entry is funded by at most one programme.
4. Money is rounded per entry to cents, half up on the decimal value: cost and
   subsidy are rounded, subsidy is clipped to cost and to the limits left, and
   org_pays = cost - subsidy in exact decimals. So cost == subsidy + org_pays
   holds exactly in every entry and in every total.
5. Limits are spent in the order runs started: a charge given the runs that
   started before it and still run (``ahead``) books them ahead first, so it
   takes only what they leave, as admission quoted it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from decimal import Decimal

from gpupool.accounting import corrections
from gpupool.accounting.admission import Admission
from gpupool.accounting.funding import (
    FLAT,
    FlatRules,
    Funding,
    _Draft,
    _has_rates,
    _Line,
    as_charge,
    job_cap_key,
)
from gpupool.accounting.ledger import CENT, KINDS, USAGE_KINDS, ZERO, LedgerEntry, Totals, cents
from gpupool.accounting.periods import CALENDAR_KINDS, coarsen, period_label
from gpupool.accounting.programmes import Programme, Voucher
from gpupool.accounting.reservations import Reservations, _Watch
from gpupool.accounting.vouchers import Vouchers
from gpupool.model import Charge, GpupoolError, GpuType, Job, NotFound, Org, OrgAccount, Pool

__all__ = [
    "CENT",
    "FLAT",
    "KINDS",
    "USAGE_KINDS",
    "ZERO",
    "Books",
    "FlatRules",
    "LedgerEntry",
    "Totals",
    "cents",
]

_GRAIN = {"month": 1, "quarter": 3, "year": 12}


class Books(Funding, Reservations, Admission, Vouchers):
    """Ledger and balances; deterministic for the same inputs and calls.

    ``programmes`` in funding order; ``vouchers`` with their current balances
    (authoritative); ``entries``: the ledger so far, from which budget spent,
    caps used, org spending and how far each job is charged are rebuilt.
    ``period``: the accounting period (month, quarter or year) entries are
    split and labelled by; recurring programmes must be this or coarser.
    """

    def __init__(
        self,
        programmes: Iterable[Programme] = (),
        vouchers: Iterable[Voucher] = (),
        entries: Iterable[LedgerEntry] = (),
        *,
        orgs: Mapping[str, Org] | Iterable[Org] = (),
        period: str = "quarter",
        flat: FlatRules | None = None,
    ) -> None:
        if period not in CALENDAR_KINDS:
            raise GpupoolError(
                f"accounting period must be month, quarter or year, not {period!r}",
                location="period",
            )
        self.period = period
        self.flat = flat if flat is not None and _has_rates(flat) else None
        self._orgs = dict(orgs) if isinstance(orgs, Mapping) else {o.name: o for o in orgs}
        self._programmes: dict[str, Programme] = {}
        for programme in programmes:
            self._add_programme(programme)
        self._vouchers: dict[int, Voucher] = {}
        for voucher in vouchers:
            self._add_voucher(voucher)
        self._entries: list[LedgerEntry] = []
        self._spent: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self._capped: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        self._org_paid: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self._charged_until: dict[int, float] = {}
        self._watch: _Watch | None = None  # set on committed twins only
        self._floor_cache: dict[tuple, tuple[float, int, int, int]] = {}
        self._eligible_cache: dict[tuple[str, str], frozenset[str]] = {}
        # bumped by every mutation, so a driver may cache what it derives from these books
        self.version = 0
        for entry in entries:
            self._record(entry)

    # -- construction -------------------------------------------------------

    def _add_programme(self, programme: Programme) -> None:
        if programme.name in self._programmes:
            raise GpupoolError(
                f"programme {programme.name!r} declared twice", location="programme name"
            )
        kind = programme.period.kind
        if kind != "fixed" and _GRAIN[kind] < _GRAIN[self.period]:
            raise GpupoolError(
                f"programme {programme.name!r} recurs every {kind}, finer than the "
                f"accounting period ({self.period})",
                location=f"programme {programme.name} period",
            )
        self._programmes[programme.name] = programme

    def _add_voucher(self, voucher: Voucher) -> None:
        if voucher.id in self._vouchers:
            raise GpupoolError(f"voucher {voucher.id} given twice", location="voucher id")
        self.programme(voucher.programme)
        self._vouchers[voucher.id] = voucher

    # -- reading ------------------------------------------------------------

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    @property
    def programmes(self) -> tuple[Programme, ...]:
        return tuple(self._programmes.values())

    @property
    def vouchers(self) -> tuple[Voucher, ...]:
        return tuple(self._vouchers[i] for i in sorted(self._vouchers))

    def programme(self, name: str) -> Programme:
        try:
            return self._programmes[name]
        except KeyError:
            raise NotFound(f"no programme named {name!r}", location="programme") from None

    def charged_until(self, job_id: int) -> float | None:
        return self._charged_until.get(job_id)

    def resume_charges(self, charged_until: Mapping[int, float]) -> None:
        """Say how far jobs are charged when the ledger was given as per-period sums.

        A driver that loads only sums (gpupool.scheduler.accounts.load_books)
        has no per-job entries to rebuild this from, so it states it for the
        jobs it may still charge; the guard against double booking then holds.
        """
        self.version += 1
        for job_id, at in charged_until.items():
            self._charged_until[job_id] = max(at, self._charged_until.get(job_id, at))

    def budget_left(self, programme: str, t: float) -> Decimal | None:
        """What ``programme`` may still pay in its period holding ``t`` (None = no limit)."""
        prog = self.programme(programme)
        budget = prog.budget_at(t, t)  # paced: what is released by t
        if budget is None:
            return None
        return max(ZERO, cents(budget) - self._spent[(prog.name, prog.period.key(t))])

    def cap_left(self, programme: str, org: str, t: float) -> Decimal | None:
        prog = self.programme(programme)
        cap = prog.org_limit(prog.budget_at(t, t))
        if cap is None:
            return None
        used = self._capped[(prog.name, prog.period.key(t), org)]
        return max(ZERO, cents(cap) - used)

    def resume_job_subsidies(self, subsidies: Mapping[tuple[str, int], Decimal]) -> None:
        """State what jobs got from programmes with a job_cap, as (programme, job id) -> sum.

        For books loaded as per-period sums (gpupool.scheduler.accounts.load_books),
        which have no per-job entries to fold this from; given for the jobs it may charge.
        """
        self.version += 1
        for (programme, job_id), amount in subsidies.items():
            self._capped[job_cap_key(programme, job_id)] = amount

    def org_spent(self, org: str, t: float) -> Decimal:
        """What ``org`` paid (its share, after subsidy) in the accounting period holding ``t``."""
        return self._org_paid[(org, period_label(t, self.period))]

    def accounts(self, now: float) -> dict[str, OrgAccount]:
        """Each known org's budget left, subsidy it may still get, and voucher hours now."""
        names = set(self._orgs) | {v.org for v in self._vouchers.values()}
        return {name: self._account(name, now) for name in sorted(names)}

    def _account(self, name: str, now: float) -> OrgAccount:
        org = self._orgs.get(name)
        budget_left = None
        if org is not None and org.budget is not None:
            budget_left = float(max(ZERO, cents(org.budget) - self.org_spent(name, now)))
        domain = org.domain if org is not None else ""
        subsidy: float | None = 0.0
        for prog in self._programmes.values():
            if not (prog.eligible(name, domain) and prog.period.active(now)):
                continue
            limits = [self.budget_left(prog.name, now), self.cap_left(prog.name, name, now)]
            known = [float(x) for x in limits if x is not None]
            subsidy = None if subsidy is None or not known else subsidy + min(known)
        if self.flat is not None and subsidy is not None:
            known = [float(x) for x in self._flat_limits(name, now) if x is not None]
            subsidy = subsidy + min(known) if known else None
        vouchers = sum(
            v.balance for v in self._vouchers.values() if v.org == name and v.usable(now)
        )
        return OrgAccount(
            org=name, budget_left=budget_left, subsidy_cap_left=subsidy, vouchers=vouchers
        )

    def subsidy_left(self, now: float) -> float | None:
        """Budget all programmes active at ``now`` still hold (None if one is unlimited)."""
        total = 0.0
        for prog in self._programmes.values():
            if prog.period.active(now):
                left = self.budget_left(prog.name, now)
                if left is None:
                    return None
                total += float(left)
        if self.flat is not None:
            left = self._flat_limits(None, now)[0]
            return None if left is None else total + float(left)
        return total

    def _flat_limits(self, org: str | None, t: float) -> tuple[Decimal | None, Decimal | None]:
        """Platform budget and (for ``org``) cap left under the flat rules this period."""
        label = period_label(t, self.period)
        budget = self.flat.period_budget
        cap = self.flat.org_cap
        return (
            None if budget is None else max(ZERO, cents(budget) - self._spent[(FLAT, label)]),
            None
            if cap is None or org is None
            else max(ZERO, cents(cap) - self._capped[(FLAT, label, org)]),
        )

    def totals(
        self, by: str | Iterable[str] = (), kinds: Iterable[str] = USAGE_KINDS
    ) -> dict[tuple, Totals]:
        """Sums of entries of ``kinds`` grouped by entry fields (e.g. by=('org', 'period'))."""
        fields = (by,) if isinstance(by, str) else tuple(by)
        wanted = frozenset(kinds)
        sums: dict[tuple, Totals] = {}
        for entry in self._entries:
            if entry.kind in wanted:
                key = tuple(getattr(entry, name) for name in fields)
                sums[key] = sums.get(key, Totals()).add(entry)
        return sums

    # -- charging -----------------------------------------------------------

    def quote(self, job: Job, pool: Pool, gpu_type: GpuType, start: float, end: float) -> Charge:
        """What booking this usage would cost now, without booking it."""
        return as_charge(self._plan(job, pool, gpu_type, start, end).lines)

    def charge(
        self,
        job: Job,
        pool: Pool,
        gpu_type: GpuType,
        start: float,
        end: float,
        ahead: Iterable[tuple] = (),
        memo: dict | None = None,
    ) -> list[LedgerEntry]:
        """Book ``job``'s usage of ``pool`` over ``[start, end)``; return the new entries.

        ``ahead``: the runs that started before this one and still run, as
        ``committed`` takes them. They are booked ahead on a scratch copy first,
        so this charge spends only what they leave: vouchers, budgets and caps go
        to runs in the order they started, which is the order admission quoted
        them in (a run that starts later but ends first cannot take what an
        earlier one was promised). ``memo`` as for ``reserve``.
        """
        lines = self._apply(job, pool, gpu_type, start, end, ahead, memo)
        entries = [line.entry() for line in lines]
        self._entries.extend(entries)
        return entries

    def book_ahead(self, job: Job, pool: Pool, gpu_type: GpuType, start: float, end: float) -> None:
        """``charge`` for a scratch fork: the same balances, no ledger entries to keep."""
        self._apply(job, pool, gpu_type, start, end)

    def _apply(self, job, pool, gpu_type, start, end, ahead=(), memo=None) -> list[_Line]:
        done = self._charged_until.get(job.id)
        if done is not None and start < done - 1e-6:
            raise GpupoolError(
                f"job {job.id} is already charged up to {done}, cannot charge from {start}",
                location="start",
            )
        # a plain fork: nothing keeps it, so it needs no watch (unlike committed's twin)
        ahead = self.ahead_that_matters(job, ahead)
        planner = self.reserve(self.fork(), ahead, end, memo) if ahead else self
        draft = planner._plan(job, pool, gpu_type, start, end)
        self._book_draft(job, draft, max(end, done or end))
        return draft.lines

    def _book_draft(self, job: Job, draft: _Draft, charged_until: float) -> None:
        self.version += 1
        for key, amount in draft.spent.items():
            self._spent[key] += amount
        for key, amount in draft.capped.items():
            self._capped[key] += amount
        for voucher_id, used in draft.voucher_used.items():
            if used:  # a voucher the pricing only looked at keeps its balance
                voucher = self._vouchers[voucher_id]
                self._vouchers[voucher_id] = voucher.with_balance(max(0.0, voucher.balance - used))
        if self._watch is not None and draft.voucher_used:
            self._watch.voucher_use[job.id] = dict(draft.voucher_used)
        for label, paid in draft.org_paid_by_label().items():
            self._org_paid[(job.org, label)] += paid
        self._charged_until[job.id] = charged_until

    def meter(
        self,
        job: Job,
        pool: Pool,
        gpu_type: GpuType,
        started_at: float,
        now: float,
        ahead: Iterable[tuple] = (),
        memo: dict | None = None,
    ) -> list[LedgerEntry]:
        """Book a running (or just ended) job's usage not booked yet, up to ``now``."""
        start = max(started_at, self._charged_until.get(job.id, started_at))
        if now <= start:
            return []
        return self.charge(job, pool, gpu_type, start, now, ahead, memo)

    def close_run(
        self,
        job: Job,
        pool: Pool,
        gpu_type: GpuType,
        started_at: float,
        ended_at: float,
        ahead: Iterable[tuple] = (),
        charges: Iterable[LedgerEntry] | None = None,
    ) -> list[LedgerEntry]:
        """Charge a run that ended at ``ended_at`` exactly up to its end; the new entries.

        Usage not charged yet is metered; usage already charged past the end (a
        round metered the run before its end was known) is refunded by
        ``correct``. ``charges``: this job's charge entries, for books loaded
        without per-job entries (gpupool.scheduler.accounts); None reads this
        ledger's own.
        """
        done = self._charged_until.get(job.id)
        if done is not None and ended_at < done - corrections._SLACK:
            speed = job.speed_on(gpu_type)
            return self.correct(job.id, gpu_type, started_at, ended_at, charges, speed)
        return self.meter(job, pool, gpu_type, started_at, ended_at, ahead)

    def correct(
        self,
        job_id: int,
        gpu_type: GpuType,
        started_at: float,
        until: float,
        charges: Iterable[LedgerEntry] | None = None,
        speed: float | None = None,
    ) -> list[LedgerEntry]:
        """Refund what the run started at ``started_at`` was charged past ``until``.

        ``speed``: the job's speed on ``gpu_type`` (Job.speed_on; None: the type's own).

        One correction entry per charge reaching past ``until``, funded as that
        charge was (gpupool.accounting.corrections); voucher hours go back to
        their vouchers, and budgets, caps and org spending fall by the refund.
        The job is then charged up to ``until``.
        """
        if charges is None:
            charges = [e for e in self._entries if e.job_id == job_id]
        new = []
        for entry, fraction in corrections.refunds(charges, started_at, until):
            hours = 0.0
            if entry.voucher_id is not None:
                programme = self.programme(entry.programme)
                speed = gpu_type.speed if speed is None else speed
                hours = fraction * corrections.voucher_hours(entry, programme, gpu_type, speed)
                self._give_back(entry.voucher_id, hours)
            new.append(corrections.correction(entry, fraction, until, hours))
        for entry in new:
            self._record(entry)
        self._charged_until[job_id] = until
        return new

    def _give_back(self, voucher_id: int, hours: float) -> None:
        voucher = self._vouchers.get(voucher_id)
        if voucher is not None:  # a voucher set aside keeps its stored balance
            balance = min(voucher.amount, voucher.balance + hours)
            self._vouchers[voucher_id] = replace(voucher, balance=balance)

    def _record(self, entry: LedgerEntry) -> None:
        """Append an entry and fold it into the balances it implies."""
        self.version += 1
        self._entries.append(entry)
        if entry.kind not in USAGE_KINDS:
            return
        self._org_paid[(entry.org, entry.period)] += entry.org_pays
        if entry.programme is None and entry.subsidy:
            self._spent[(FLAT, entry.period)] += entry.subsidy
            self._capped[(FLAT, entry.period, entry.org)] += entry.subsidy
        if entry.programme is not None:
            prog = self.programme(entry.programme)
            key = "all" if prog.period.kind == "fixed" else coarsen(entry.period, prog.period.kind)
            self._spent[(prog.name, key)] += entry.subsidy
            self._capped[(prog.name, key, entry.org)] += entry.subsidy
            if prog.job_cap is not None and entry.job_id is not None:
                self._capped[job_cap_key(prog.name, entry.job_id)] += entry.subsidy
        if entry.kind == "charge" and entry.job_id is not None:
            done = self._charged_until.get(entry.job_id, entry.at)
            self._charged_until[entry.job_id] = max(done, entry.at)
        elif entry.job_id is not None:  # a correction: the job is charged up to its at
            self._charged_until[entry.job_id] = entry.at
