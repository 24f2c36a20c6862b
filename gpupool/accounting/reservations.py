"""Reservations: the forked twin that books running jobs' usage ahead.

Usage is charged when a run ends, so a round must see budgets, caps and
voucher balances as running jobs are about to leave them. ``committed`` forks
the books and reserves every running job's remaining usage on the fork (the
*twin*), which snapshots hand to policies. A committed twin remembers enough
(:class:`_Watch`) to tell when the reservations' order did not matter, so a
driver can keep it across rounds and drop a run's reservation once the books
charged that run exactly as reserved (``drop_charged_reservation``) instead of
rebuilding it.

``Reservations`` is a mixin of :class:`gpupool.accounting.books.Books`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Self

from gpupool.accounting.funding import _Draft
from gpupool.accounting.ledger import ZERO


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
    drawn on, so the reservations' order matters (see ``drop_charged_reservation``).
    """

    spent: dict[tuple[str, str], Decimal]
    capped: dict[tuple[str, str, str], Decimal]
    balances: dict[int, float]
    spans: dict[int, tuple[float, float]] = field(default_factory=dict)
    voucher_use: dict[int, dict[int, float]] = field(default_factory=dict)
    contended: bool = False


class Reservations:
    """Booking running jobs ahead on a fork (a mixin of Books; see the module docstring)."""

    def fork(self) -> Self:
        """A scratch copy whose bookings do not touch this one (for a round's quotes)."""
        twin = type(self).__new__(type(self))
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
        twin._eligible_cache = self._eligible_cache
        twin.version = 0
        return twin

    def _watch_limits(self) -> _Watch:
        return _Watch(
            spent=dict(self._spent),
            capped=dict(self._capped),
            balances={i: v.balance for i, v in self._vouchers.items()},
        )

    def committed(self, runs: Iterable[tuple], now: float, memo: dict | None = None) -> Self:
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
        self, twin: Self, runs: Iterable[tuple], now: float, memo: dict | None = None
    ) -> Self:
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

    def ahead_that_matters(self, job, ahead: Iterable[tuple]) -> list[tuple]:
        """The runs of ``ahead`` (``committed``'s tuples) whose booking can move a
        limit that pricing ``job`` reads, in their order.

        Pricing reads only the budgets, caps and vouchers of the programmes the
        job's org is eligible for (and the flat rates' budget, shared by all).
        A run ahead moves only its own programmes' limits, and it is priced on
        them alone; so only runs linked to the job through a chain of shared
        programmes can change its price. Booking just those, in the same order,
        gives the same price: the others are left out (``charge`` forks and books
        every run ahead at each run's end, the cost of a long replay).
        """
        runs = list(ahead)
        if self.flat is not None or not runs:
            return runs
        reach = self._eligible_names(job)
        chosen = [False] * len(runs)
        grew = bool(reach)
        while grew:
            grew = False
            for index, run in enumerate(runs):
                if chosen[index]:
                    continue
                names = self._eligible_names(run[0])
                if names & reach:
                    chosen[index] = True
                    if not names <= reach:
                        reach, grew = reach | names, True
        return [run for run, keep in zip(runs, chosen, strict=True) if keep]

    def _eligible_names(self, job) -> frozenset[str]:
        key = (job.org, job.domain)
        names = self._eligible_cache.get(key)
        if names is None:
            names = frozenset(
                p.name for p in self._programmes.values() if p.eligible(job.org, job.domain)
            )
            self._eligible_cache[key] = names
        return names

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
        stores = {"spent": self._spent, "capped": self._capped}
        for store, key, test, a, b in checks:
            # _limit_value, inlined: every reservation of every round comes here
            if store == "voucher":
                value = self._vouchers[key].balance
            else:
                value = stores[store].get(key, ZERO)
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

    def holds_reservation(self, job_id: int, end: float) -> bool:
        """Whether this committed twin reserved ``job_id`` up to exactly ``end``, order-free.

        If so, and the books it was forked from charge that run over the same
        interval, ``drop_charged_reservation`` turns this twin into what a rebuild would give.
        """
        watch = self._watch
        if watch is None or watch.contended:
            return False
        span = watch.spans.get(job_id)
        return span is not None and span[1] == end

    def drop_charged_reservation(self, job_id: int, books: Self) -> None:
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
            self._vouchers[voucher_id] = self._vouchers[voucher_id].with_balance(balance)
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
