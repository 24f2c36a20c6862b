"""Funding: how a stretch of one run is priced and who pays for each share of it.

``Funding._plan`` cuts a usage interval into pieces (accounting periods,
programme periods, voucher award/expiry instants) and lets eligible
programmes, then the org's vouchers, then the policy document's flat rates
fund each piece within their budgets and caps; the rest is the org's. The
result is a :class:`_Draft`: priced lines and the balance changes they imply,
kept apart from the books until ``Books`` books it (a quote never does).

``Funding`` is a mixin of :class:`gpupool.accounting.books.Books`; it reads
the books' programmes, vouchers and spent/capped balances and never changes them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple, Protocol

from gpupool.accounting.ledger import ZERO, LedgerEntry, cents
from gpupool.accounting.periods import period_label, split
from gpupool.accounting.programmes import Programme, Voucher
from gpupool.model import Charge, GpupoolError, GpuType, Job, Pool

_EPS = 1e-12
FLAT = ""  # budget key of the flat policy-document rates (entries with no programme)


def job_cap_key(programme: str, job_id: int) -> tuple[str, str, int]:
    """Where a job's subsidy from ``programme`` is kept (for its job_cap), among the caps."""
    return (programme, "job", job_id)


class FlatRules(Protocol):
    """A policy document's flat rates (gpupool.accounting.pricing.SubsidyRules)."""

    org_cap: float | None
    period_budget: float | None
    domain_rates: Mapping[str, float]
    gpu_type_rates: Mapping[str, float]

    def rate(self, domain: str, gpu_type: str) -> float: ...


def _has_rates(flat: FlatRules) -> bool:
    return any(r > 0 for r in (*flat.domain_rates.values(), *flat.gpu_type_rates.values()))


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
            effective_gpu_hours=self.share * piece.gpu_hours * piece.job.speed_on(piece.gpu_type),
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
    _org_paid: dict[str, Decimal] | None = None

    def org_paid_by_label(self) -> dict[str, Decimal]:
        """What the org pays per accounting period label, summed over the lines.

        Kept once summed: a reservation's draft is booked again every round its
        memo holds. Cents add exactly in Decimal, so one sum per label books
        the same balances as adding line by line.
        """
        if self._org_paid is None:
            paid: dict[str, Decimal] = defaultdict(Decimal)
            for line in self.lines:
                paid[line.piece.label] += line.org_pays
            self._org_paid = dict(paid)
        return self._org_paid


def as_charge(lines: list[_Line]) -> Charge:
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


class Funding:
    """Pricing and funding of usage (a mixin of Books; see the module docstring)."""

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
            per_piece = _voucher_hours_per_gpu_hour(prog, piece) * piece.gpu_hours
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
        bounds = (
            ("spent", (FLAT, piece.label), self.flat.period_budget),
            ("capped", (FLAT, piece.label, piece.job.org), self.flat.org_cap),
        )
        return self._pay(draft, piece, share, rate, bounds, None, None)

    def _fund(self, draft, piece: _Piece, prog: Programme, share: float, voucher) -> float:
        """Let ``prog`` pay for up to ``share`` of the piece; return the share it funded."""
        key = prog.period.key(piece.start)
        budget = prog.budget_at(piece.start, piece.end)  # paced: what is released by its end
        bounds = [
            ("spent", (prog.name, key), budget),
            ("capped", (prog.name, key, piece.job.org), prog.org_limit(budget)),
        ]
        if prog.job_cap is not None:  # over the job's life: no period in the key
            bounds.append(("capped", job_cap_key(prog.name, piece.job.id), prog.job_cap))
        rate = prog.rate_for(piece.gpu_type.name)
        return self._pay(draft, piece, share, rate, bounds, prog, voucher)

    def _pay(self, draft, piece: _Piece, share, rate, bounds, prog, voucher) -> float:
        """Pay ``rate`` on up to ``share`` of the piece within its limits.

        ``bounds``: (store, key, amount) for each limit: where its spending is
        kept and how much it allows (None: no limit, but spending is still
        kept). Returns the share funded.
        """
        if rate <= 0:
            return 0.0
        limits = [(store, key, cents(limit)) for store, key, limit in bounds if limit is not None]
        wanted = rate * share * piece.cost
        allowed = self._allowed(draft, limits, wanted)
        if allowed is not None and wanted > float(allowed):
            share *= float(allowed) / wanted
        if share <= _EPS:
            return 0.0
        subsidy = cents(rate * share * piece.cost)
        if allowed is not None:
            subsidy = min(subsidy, allowed)
        subsidy = self._book(draft, piece, share, subsidy, prog, voucher)
        for store, key, _ in bounds:
            (draft.spent if store == "spent" else draft.capped)[key] += subsidy
        return share

    def _book(self, draft, piece: _Piece, share, subsidy, prog, voucher) -> Decimal:
        cost = cents(share * piece.cost)
        subsidy = min(subsidy, cost)
        hours = 0.0
        if voucher is not None:
            hours = share * _voucher_hours_per_gpu_hour(prog, piece) * piece.gpu_hours
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

    def _limit_value(self, store: str, key):
        if store == "voucher":
            return self._vouchers[key].balance
        return (self._spent if store == "spent" else self._capped).get(key, ZERO)


def _voucher_hours_per_gpu_hour(programme, piece: _Piece) -> float:
    """Voucher hours one GPU-hour of the piece costs, at the job's speed on its type."""
    return programme.voucher_hours_per_gpu_hour(piece.gpu_type, piece.job.speed_on(piece.gpu_type))
