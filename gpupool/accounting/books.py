"""The books: an append-only ledger plus the balances it implies.

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

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple, Protocol

from gpupool.accounting.periods import CALENDAR_KINDS, coarsen, period_label, split
from gpupool.accounting.programmes import Programme, Voucher, default_expiry
from gpupool.model import Charge, GpupoolError, GpuType, Job, NotFound, Org, OrgAccount, Pool

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
KINDS = ("charge", "correction", "award", "expiry", "carry_over")
USAGE_KINDS = ("charge", "correction")
_EPS = 1e-12
_GRAIN = {"month": 1, "quarter": 3, "year": 12}
FLAT = ""  # budget key of the flat policy-document rates (entries with no programme)


class FlatRules(Protocol):
    """A policy document's flat rates (gpupool.accounting.pricing.SubsidyRules)."""

    org_cap: float | None
    period_budget: float | None
    domain_rates: Mapping[str, float]
    gpu_type_rates: Mapping[str, float]

    def rate(self, domain: str, gpu_type: str) -> float: ...


def _has_rates(flat: FlatRules) -> bool:
    return any(r > 0 for r in (*flat.domain_rates.values(), *flat.gpu_type_rates.values()))


def cents(amount: float | int | str | Decimal) -> Decimal:
    """Round money to cents, half up, on its shortest decimal form (12.345 -> 12.35)."""
    value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """One row of the ledger (table ledger_entries). Never changed once written.

    Money fields are Decimals in cents (floats and text are accepted and
    rounded). ``effective_gpu_hours``: usage for charge/correction entries,
    voucher hours (+ awarded or carried, - expired) for the other kinds.
    ``at``: end of the booked usage, or when the award/expiry happened.
    ``pool``: the pool a charge was for (where the usage happened); None for
    award/expiry/carry-over entries and for rows stored before the ledger kept it.
    """

    kind: str
    org: str
    period: str
    at: float
    domain: str = ""
    job_id: int | None = None
    gpu_type: str | None = None
    cost: Decimal = ZERO
    subsidy: Decimal = ZERO
    org_pays: Decimal | None = None
    effective_gpu_hours: float = 0.0
    programme: str | None = None
    voucher_id: int | None = None
    note: str = ""
    pool: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise GpupoolError(f"unknown ledger entry kind {self.kind!r}", location="kind")
        cost, subsidy = cents(self.cost), cents(self.subsidy)
        org_pays = cost - subsidy if self.org_pays is None else cents(self.org_pays)
        if cost != subsidy + org_pays:
            raise GpupoolError(
                f"ledger entry does not balance: {cost} != {subsidy} + {org_pays}",
                location="org_pays",
            )
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "subsidy", subsidy)
        object.__setattr__(self, "org_pays", org_pays)


@dataclass(frozen=True, slots=True)
class Totals:
    cost: Decimal = ZERO
    subsidy: Decimal = ZERO
    org_pays: Decimal = ZERO
    effective_gpu_hours: float = 0.0

    def add(self, entry: LedgerEntry) -> Totals:
        return Totals(
            self.cost + entry.cost,
            self.subsidy + entry.subsidy,
            self.org_pays + entry.org_pays,
            self.effective_gpu_hours + entry.effective_gpu_hours,
        )


@dataclass(frozen=True, slots=True)
class _Piece:
    """A stretch of one job's usage priced on its own."""

    job: Job
    pool: str
    gpu_type: GpuType
    label: str
    start: float
    end: float
    cost: float  # full price of the whole piece
    gpu_hours: float


class _Line(NamedTuple):
    """A priced share of a piece; becomes a LedgerEntry only when booked (quotes never do)."""

    piece: _Piece
    share: float
    cost: Decimal
    subsidy: Decimal
    programme: str | None
    voucher_id: int | None
    voucher_hours: float

    @property
    def org_pays(self) -> Decimal:
        return self.cost - self.subsidy

    def entry(self) -> LedgerEntry:
        piece = self.piece
        note = "" if self.voucher_id is None else f"{self.voucher_hours:.6g} voucher hours"
        return LedgerEntry(
            kind="charge",
            job_id=piece.job.id,
            org=piece.job.org,
            domain=piece.job.domain,
            gpu_type=piece.gpu_type.name,
            period=piece.label,
            cost=self.cost,
            subsidy=self.subsidy,
            effective_gpu_hours=self.share * piece.gpu_hours * piece.gpu_type.speed,
            programme=self.programme,
            voucher_id=self.voucher_id,
            at=piece.end,
            note=note,
            pool=piece.pool,
        )


@dataclass
class _Draft:
    """Balance changes of a charge being planned, kept apart until it is booked."""

    spent: dict[tuple[str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    capped: dict[tuple[str, str, str], Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )
    voucher_used: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    lines: list[_Line] = field(default_factory=list)
    # when recorded (reservations): what in the books decided each limit, see _Memo
    checks: list[tuple] | None = None


@dataclass(frozen=True, slots=True)
class _Memo:
    """A reservation's pricing, kept to be reused when the books would decide it the same.

    ``draft.checks``: ``(store, key, test, a, b)`` for every limit the pricing
    read, store 'spent', 'capped' or 'voucher'. A limit that held the run back
    (binding) must read exactly the same again (test 'eq', a = the value); one
    that did not must still leave room: 'room', float(a - value) > b (a = the
    limit less what the run itself took, b = what it wanted), or 'left',
    value - a > b for a voucher balance. Then every decision in ``_plan`` comes
    out the same, so the draft does too.
    """

    key: tuple
    draft: _Draft


@dataclass
class _Watch:
    """What a committed twin keeps to tell whether a rebuild would give it back.

    ``spent``/``capped``/``balances``: the books' limits as the twin's base
    holds them. ``spans``: each reserved run's interval, in reservation order;
    ``voucher_use``: the voucher hours each reservation took. ``contended``:
    some reservation was held back by a limit an earlier reservation had
    drawn on, so the reservations' order matters (see ``Books.settle``).
    """

    spent: dict[tuple[str, str], Decimal]
    capped: dict[tuple[str, str, str], Decimal]
    balances: dict[int, float]
    spans: dict[int, tuple[float, float]] = field(default_factory=dict)
    voucher_use: dict[int, dict[int, float]] = field(default_factory=dict)
    contended: bool = False


class Books:
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

    def fork(self) -> Books:
        """A scratch copy whose bookings do not touch this one (for a round's quotes)."""
        twin = Books.__new__(Books)
        twin.period, twin._orgs, twin._programmes = self.period, self._orgs, self._programmes
        twin.flat = self.flat
        twin._vouchers = dict(self._vouchers)
        twin._entries = []
        twin._spent = defaultdict(Decimal, self._spent)
        twin._capped = defaultdict(Decimal, self._capped)
        twin._org_paid = defaultdict(Decimal, self._org_paid)
        twin._charged_until = {}
        twin._watch = None
        twin._floor_cache = self._floor_cache  # programmes and flat rules are shared too
        twin.version = 0
        return twin

    def _watch_limits(self) -> _Watch:
        return _Watch(
            spent=dict(self._spent),
            capped=dict(self._capped),
            balances={i: v.balance for i, v in self._vouchers.items()},
        )

    def committed(self, runs: Iterable[tuple], now: float, memo: dict | None = None) -> Books:
        """A fork in which running jobs' usage not charged yet is booked ahead.

        ``runs``: ``(job, pool, gpu_type, started_at, expected_end)``. Usage is
        charged when a run ends, so without this a round would see budgets,
        caps and vouchers that running jobs are about to spend. Each run is
        reserved from where it was last charged to its expected end (or to
        ``now`` if it is overdue). Snapshots hand this fork to policies.
        """
        twin = self.fork()
        twin._watch = self._watch_limits()
        return self.reserve(twin, runs, now, memo)

    def reserve(
        self, twin: Books, runs: Iterable[tuple], now: float, memo: dict | None = None
    ) -> Books:
        """Book ``runs`` ahead on ``twin`` (a fork of these books), as ``committed`` does.

        Reserving runs one call after another on the same twin gives the same
        twin as one call with all of them: a driver may extend a cached twin
        with runs started since, while these books and ``now``'s effect are unchanged.
        ``memo`` (job id -> _Memo, kept by the caller between calls) lets a run's
        pricing be reused while every limit it read would decide it the same.
        """
        limited = self._limited_orgs()
        if limited is not None and not limited:
            return twin  # nothing a reservation could change is visible to a policy
        for job, pool, gpu_type, started_at, expected_end in runs:
            if limited is not None and job.org not in limited:
                continue
            start = max(started_at, self._charged_until.get(job.id, started_at))
            end = max(expected_end, now)
            if end > start:
                twin._reserve_one(job, pool, gpu_type, start, end, memo)
                if twin._watch is not None:
                    twin._watch.spans[job.id] = (start, end)
        return twin

    def _reserve_one(self, job, pool, gpu_type, start: float, end: float, memo) -> None:
        key = (pool.name, start, end, len(self._vouchers))  # a new voucher could fund it
        kept = None if memo is None else memo.get(job.id)
        if kept is not None and kept.key == key and self._still_holds(kept.draft.checks):
            draft = kept.draft
        else:
            draft = self._plan(job, pool, gpu_type, start, end, record=memo is not None)
            if memo is not None:
                memo[job.id] = _Memo(key, draft)
        self._book_draft(job, draft, end)

    def _still_holds(self, checks: list[tuple]) -> bool:
        for store, key, test, a, b in checks:
            value = self._limit_value(store, key)
            if test == "eq":
                if value != a:
                    return False
            elif test == "room":
                if not float(a - value) > b:
                    return False
            elif not value - a > b:
                return False
        for store, key, test, _, _ in checks:
            if test == "eq":  # binding: as when priced, contended if another took from it
                self._note_binding(store, key)
        return True

    def _limit_value(self, store: str, key):
        if store == "voucher":
            return self._vouchers[key].balance
        return (self._spent if store == "spent" else self._capped).get(key, ZERO)

    def holds_reservation(self, job_id: int, end: float) -> bool:
        """Whether this committed twin reserved ``job_id`` up to exactly ``end``, order-free.

        If so, and the books it was forked from charge that run over the same
        interval, ``settle`` turns this twin into what a rebuild would give.
        """
        watch = self._watch
        if watch is None or watch.contended:
            return False
        span = watch.spans.get(job_id)
        return span is not None and span[1] == end

    def settle(self, job_id: int, books: Books) -> None:
        """Account for ``books`` having charged the reserved run ``job_id`` as reserved.

        With no contended limit, every reservation was priced as it would be
        on the base books alone, so the run's real charge equals its
        reservation and the money sums already match a rebuild's (Decimal
        sums do not depend on order). Voucher balances are floats: they are
        replayed from the books' in reservation order, as a rebuild would.
        """
        watch = self._watch
        del watch.spans[job_id]
        touched = set(watch.voucher_use.pop(job_id, {}))
        for use in watch.voucher_use.values():
            touched.update(use)
        for voucher_id in touched:
            balance = books._vouchers[voucher_id].balance
            for use in watch.voucher_use.values():
                if voucher_id in use:
                    balance = max(0.0, balance - use[voucher_id])
            self._vouchers[voucher_id] = replace(self._vouchers[voucher_id], balance=balance)
        rebased = books._watch_limits()
        watch.spent, watch.capped, watch.balances = rebased.spent, rebased.capped, rebased.balances

    def _note_binding(self, store: str, key) -> None:
        """A limit held back a reservation: if another reservation drew on it, order matters."""
        watch = self._watch
        if watch is None:
            return
        if store == "voucher":
            base = watch.balances.get(key)
        else:
            base = (watch.spent if store == "spent" else watch.capped).get(key, ZERO)
        if self._limit_value(store, key) != base:
            watch.contended = True

    def _limited_orgs(self) -> frozenset[str] | None:
        """Orgs whose quotes a reservation can change; None means every org.

        With no programme and no flat subsidy rules, booking usage ahead only
        moves an org's own spending, which a policy sees only through a finite
        org budget. Skipping the others keeps a round's cost independent of
        the many running jobs of unlimited orgs (the whole-trace replays).
        """
        if self._programmes or self.flat is not None:
            return None
        return frozenset(name for name, org in self._orgs.items() if org.budget is not None)

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
        if prog.budget is None:
            return None
        return max(ZERO, cents(prog.budget) - self._spent[(prog.name, prog.period.key(t))])

    def cap_left(self, programme: str, org: str, t: float) -> Decimal | None:
        prog = self.programme(programme)
        if prog.org_cap is None:
            return None
        used = self._capped[(prog.name, prog.period.key(t), org)]
        return max(ZERO, cents(prog.org_cap) - used)

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
        return _as_charge(self._plan(job, pool, gpu_type, start, end).lines)

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
            voucher = self._vouchers[voucher_id]
            self._vouchers[voucher_id] = replace(voucher, balance=max(0.0, voucher.balance - used))
        if self._watch is not None and draft.voucher_used:
            self._watch.voucher_use[job.id] = dict(draft.voucher_used)
        for line in draft.lines:
            self._org_paid[(job.org, line.piece.label)] += line.org_pays
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

    def org_pays_floor(
        self, job: Job, pool: Pool, gpu_type: GpuType, start: float, end: float
    ) -> float:
        """A lower bound on what ``job``'s org would pay for this usage, without pricing it.

        Every line of a charge is funded by at most one source, at a rate no
        higher than the best rate any source the job is eligible for offers on
        this GPU type, and rounding to cents moves a line's org share by less
        than a cent. Admission refuses an org out of budget on this bound
        alone, so a queue of its jobs costs no full quotes (whole-trace replays).
        """
        top_rate, slack = self.floor_terms(job, gpu_type, end - start)
        cost = job.gpus * (end - start) / 3600.0 * pool.price_per_gpu_hour
        return (1.0 - top_rate) * cost - slack

    def floor_terms(self, job: Job, gpu_type: GpuType, seconds: float) -> tuple[float, float]:
        """``org_pays_floor``'s best rate and rounding slack for a run of ``seconds``.

        The slack is a cent per line ``_plan`` could write at most: pieces x
        (funders + 2), where a month, the shortest calendar period, cuts at most
        once per 28 days.
        """
        top_rate, programmes, vouchers, funders = self._floor_counts(job, gpu_type)
        calendar_cuts = 1 + int(seconds / (28 * 86400.0))
        cuts = calendar_cuts * (1 + programmes) + 2 * (programmes + vouchers)
        return top_rate, 0.01 * (cuts + 1) * (funders + 2)

    def _floor_counts(self, job: Job, gpu_type: GpuType) -> tuple[float, int, int, int]:
        """Best rate, eligible programmes, vouchers held and funders, for ``floor_terms``."""
        key = (job.org, job.domain, gpu_type.name, len(self._vouchers))
        terms = self._floor_cache.get(key)
        if terms is None:
            eligible = [p for p in self._programmes.values() if p.eligible(job.org, job.domain)]
            rates = [p.rate_for(gpu_type.name) for p in eligible]
            if self.flat is not None:
                rates.append(self.flat.rate(job.domain, gpu_type.name))
            by_voucher = {p.name for p in eligible if p.uses_vouchers}
            vouchers = sum(
                1 for v in self._vouchers.values() if v.org == job.org and v.programme in by_voucher
            )
            funders = len(eligible) - len(by_voucher) + vouchers
            terms = (max(rates, default=0.0), len(eligible), vouchers, funders)
            self._floor_cache[key] = terms
        return terms

    def assess(
        self, job: Job, pool: Pool, gpu_type: GpuType, start: float, end: float
    ) -> tuple[Charge, str | None]:
        """The quote, and the 'wait' programme that would hold this job back, if any.

        A programme with when_exhausted='wait' holds back an eligible job on a
        GPU type it subsidises when it could pay nothing towards it now.
        """
        lines = self._plan(job, pool, gpu_type, start, end).lines
        funded = {line.programme for line in lines}
        for prog in self._programmes.values():
            if (
                prog.when_exhausted == "wait"
                and prog.eligible(job.org, job.domain)
                and prog.period.active(start)
                and prog.rate_for(gpu_type.name) > 0
                and prog.name not in funded
            ):
                return _as_charge(lines), prog.name
        return _as_charge(lines), None

    def _plan(
        self, job: Job, pool: Pool, gpu_type: GpuType, start: float, end: float, record=False
    ) -> _Draft:
        if pool.gpu_type != gpu_type.name:
            raise GpupoolError(
                f"pool {pool.name} holds {pool.gpu_type}, not {gpu_type.name}", location="gpu_type"
            )
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise GpupoolError(f"bad usage interval [{start}, {end})", location="end")
        draft = _Draft(checks=[] if record else None)
        programmes = [p for p in self._programmes.values() if p.eligible(job.org, job.domain)]
        vouchers = self._vouchers_of(job.org, programmes)
        for piece_start, piece_end in self._pieces(start, end, programmes, vouchers):
            hours = (piece_end - piece_start) / 3600.0
            piece = _Piece(
                job=job,
                pool=pool.name,
                gpu_type=gpu_type,
                label=period_label(piece_start, self.period),
                start=piece_start,
                end=piece_end,
                cost=job.gpus * hours * pool.price_per_gpu_hour,
                gpu_hours=job.gpus * hours,
            )
            self._fund_piece(draft, piece, programmes, vouchers)
        return draft

    def _vouchers_of(self, org: str, programmes: list[Programme]) -> dict[str, list[Voucher]]:
        held: dict[str, list[Voucher]] = {p.name: [] for p in programmes if p.uses_vouchers}
        for voucher in self._vouchers.values():
            if voucher.org == org and voucher.programme in held:
                held[voucher.programme].append(voucher)
        for name, found in held.items():
            found.sort(key=lambda v: v.spending_key(self._programmes[name].spending_order))
        return held

    def _pieces(self, start, end, programmes, vouchers) -> list[tuple[float, float]]:
        cuts = {s for _, s, _ in split(start, end, self.period)}
        for prog in programmes:
            cuts.update(prog.period.cuts(start, end))
        for held in vouchers.values():
            for voucher in held:
                cuts.update(
                    t
                    for t in (voucher.awarded_at, voucher.expires_at)
                    if t is not None and start < t < end
                )
        points = sorted(cuts | {start, end})
        return [(a, b) for a, b in zip(points, points[1:], strict=False) if b > a]

    def _fund_piece(self, draft, piece: _Piece, programmes, vouchers) -> None:
        left = 1.0  # share of the piece no programme has funded yet
        for prog in programmes:
            if left <= _EPS or not prog.period.active(piece.start):
                continue
            if not prog.uses_vouchers:
                left -= self._fund(draft, piece, prog, left, None)
                continue
            per_piece = prog.voucher_hours_per_gpu_hour(piece.gpu_type) * piece.gpu_hours
            for voucher in vouchers[prog.name]:
                if left <= _EPS or not voucher.usable(piece.start):
                    continue
                used = draft.voucher_used[voucher.id]
                balance = voucher.balance - used
                need = left * per_piece + _EPS if per_piece > 0 else _EPS
                self._check(draft, "voucher", voucher.id, balance <= need, used, need)
                if balance <= _EPS:
                    continue
                share = left if per_piece <= 0 else min(left, balance / per_piece)
                funded = self._fund(draft, piece, prog, share, voucher)
                draft.voucher_used[voucher.id] += min(balance, funded * per_piece)
                left -= funded
        if left > _EPS and self.flat is not None:
            left -= self._fund_flat(draft, piece, left)
        if left > _EPS:
            self._book(draft, piece, left, ZERO, None, None)

    def _check(self, draft: _Draft, store: str, key, binding: bool, a, b) -> None:
        """Note a limit read while pricing: for contention, and for a memo's checks."""
        if binding:
            self._note_binding(store, key)
        if draft.checks is not None:
            if binding:
                draft.checks.append((store, key, "eq", self._limit_value(store, key), None))
            else:
                draft.checks.append((store, key, "room" if store != "voucher" else "left", a, b))

    def _allowed(self, draft: _Draft, limits: list[tuple], wanted: float) -> Decimal | None:
        """What subsidy ``limits`` (store, key, amount) let through now, or None for no limit."""
        if not limits:
            return None
        rooms = []
        for store, key, amount in limits:
            pending = (draft.spent if store == "spent" else draft.capped)[key]
            rooms.append((amount - pending, self._limit_value(store, key)))
        allowed = max(ZERO, min(left - value for left, value in rooms))
        binding = wanted + 0.01 >= float(allowed)
        for (store, key, _), (left, _) in zip(limits, rooms, strict=True):
            self._check(draft, store, key, binding, left, wanted + 0.01)
        return allowed

    def _fund_flat(self, draft, piece: _Piece, share: float) -> float:
        """The policy document's flat rates pay for what no programme funded."""
        rate = self.flat.rate(piece.job.domain, piece.gpu_type.name)
        keys = (FLAT, piece.label), (FLAT, piece.label, piece.job.org)
        limits = self.flat.period_budget, self.flat.org_cap
        return self._pay(draft, piece, share, rate, keys, limits, None, None)

    def _fund(self, draft, piece: _Piece, prog: Programme, share: float, voucher) -> float:
        """Let ``prog`` pay for up to ``share`` of the piece; return the share it funded."""
        key = prog.period.key(piece.start)
        keys = (prog.name, key), (prog.name, key, piece.job.org)
        rate, limits = prog.rate_for(piece.gpu_type.name), (prog.budget, prog.org_cap)
        return self._pay(draft, piece, share, rate, keys, limits, prog, voucher)

    def _pay(self, draft, piece: _Piece, share, rate, keys, limits, prog, voucher) -> float:
        """Pay ``rate`` on up to ``share`` of the piece within a budget and an org cap.

        ``keys``: where the budget's and the cap's spending are kept; ``limits``:
        (budget, cap), None for no limit. Returns the share funded.
        """
        if rate <= 0:
            return 0.0
        (spent_key, cap_key), (budget, cap) = keys, limits
        bounds = []
        if budget is not None:
            bounds.append(("spent", spent_key, cents(budget)))
        if cap is not None:
            bounds.append(("capped", cap_key, cents(cap)))
        wanted = rate * share * piece.cost
        allowed = self._allowed(draft, bounds, wanted)
        if allowed is not None and wanted > float(allowed):
            share *= float(allowed) / wanted
        if share <= _EPS:
            return 0.0
        subsidy = cents(rate * share * piece.cost)
        if allowed is not None:
            subsidy = min(subsidy, allowed)
        subsidy = self._book(draft, piece, share, subsidy, prog, voucher)
        draft.spent[spent_key] += subsidy
        draft.capped[cap_key] += subsidy
        return share

    def _book(self, draft, piece: _Piece, share, subsidy, prog, voucher) -> Decimal:
        cost = cents(share * piece.cost)
        subsidy = min(subsidy, cost)
        hours = 0.0
        if voucher is not None:
            hours = share * prog.voucher_hours_per_gpu_hour(piece.gpu_type) * piece.gpu_hours
        draft.lines.append(
            _Line(
                piece=piece,
                share=share,
                cost=cost,
                subsidy=subsidy,
                programme=None if prog is None else prog.name,
                voucher_id=None if voucher is None else voucher.id,
                voucher_hours=hours,
            )
        )
        return subsidy

    # -- vouchers -----------------------------------------------------------

    def award(
        self,
        org: str,
        programme: str,
        amount: float,
        at: float,
        expires_at: float | None = None,
    ) -> Voucher:
        """Give ``org`` ``amount`` voucher hours from ``programme`` (default expiry: period end)."""
        prog = self.programme(programme)
        known = self._orgs.get(org)
        if known is not None and not prog.eligible(org, known.domain):
            raise GpupoolError(
                f"org {org!r} is not eligible for programme {programme!r}", location="org"
            )
        if not prog.uses_vouchers:
            raise GpupoolError(
                f"programme {programme!r} does not use vouchers", location="programme"
            )
        voucher = Voucher(
            id=max(self._vouchers, default=0) + 1,
            org=org,
            programme=programme,
            amount=amount,
            balance=amount,
            awarded_at=at,
            expires_at=default_expiry(prog, at) if expires_at is None else expires_at,
        )
        self._vouchers[voucher.id] = voucher
        self.version += 1
        self._record(self._voucher_entry("award", voucher, amount, at))
        return voucher

    def expiring(self, now: float) -> bool:
        """Whether some voucher with a balance is due to expire by ``now``.

        Drivers meter running jobs up to ``now`` only then, before ``expire``.
        """
        return any(
            v.expires_at is not None and v.expires_at <= now and v.balance > _EPS
            for v in self._vouchers.values()
        )

    def expire(self, now: float) -> list[LedgerEntry]:
        """Expire every voucher due by ``now``, carrying over each programme's share.

        Book usage up to ``now`` (``meter``) first: an expired balance is gone.
        """
        new: list[LedgerEntry] = []
        while True:
            due = [
                v
                for v in self._vouchers.values()
                if v.expires_at is not None and v.expires_at <= now and v.balance > _EPS
            ]
            if not due:
                return new
            voucher = min(due, key=lambda v: (v.expires_at, v.id))
            new.extend(self._expire_one(voucher))

    def _expire_one(self, voucher: Voucher) -> list[LedgerEntry]:
        ended = voucher.expires_at
        self.version += 1
        self._vouchers[voucher.id] = replace(voucher, balance=0.0)
        booked = [self._voucher_entry("expiry", voucher, -voucher.balance, ended)]
        prog = self._programmes[voucher.programme]
        carried = voucher.balance * prog.carry_over
        next_end = default_expiry(prog, ended) if prog.period.active(ended) else None
        if carried > _EPS and next_end is not None:
            heir = Voucher(
                id=max(self._vouchers) + 1,
                org=voucher.org,
                programme=voucher.programme,
                amount=carried,
                balance=carried,
                awarded_at=ended,
                expires_at=next_end,
            )
            self._vouchers[heir.id] = heir
            entry = self._voucher_entry("carry_over", heir, carried, ended)
            booked.append(
                replace(entry, note=f"{carried:.6g} of voucher {voucher.id} carried over")
            )
        for entry in booked:
            self._record(entry)
        return booked

    def _voucher_entry(self, kind: str, voucher: Voucher, hours: float, at: float) -> LedgerEntry:
        org = self._orgs.get(voucher.org)
        # an expiry at a period's end belongs to the period that ended
        label_at = at - 1.0 if kind == "expiry" and at - 1.0 >= voucher.awarded_at else at
        return LedgerEntry(
            kind=kind,
            org=voucher.org,
            domain=org.domain if org is not None else "",
            period=period_label(label_at, self.period),
            effective_gpu_hours=hours,
            programme=voucher.programme,
            voucher_id=voucher.id,
            at=at,
            note=f"{abs(hours):.6g} voucher hours",
        )

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
        if entry.kind == "charge" and entry.job_id is not None:
            done = self._charged_until.get(entry.job_id, entry.at)
            self._charged_until[entry.job_id] = max(done, entry.at)


def _as_charge(lines: list[_Line]) -> Charge:
    cost = sum((line.cost for line in lines), ZERO)
    subsidy = sum((line.subsidy for line in lines), ZERO)
    by_programme: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        if line.programme is not None:
            by_programme[line.programme] += line.subsidy
    main = max(sorted(by_programme), key=lambda name: by_programme[name], default=None)
    return Charge(
        cost=float(cost), subsidy=float(subsidy), org_pays=float(cost - subsidy), programme=main
    )
