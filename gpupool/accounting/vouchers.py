"""Vouchers on the books: awards, expiry and carry-over, each a ledger entry.

``Vouchers`` is a mixin of :class:`gpupool.accounting.books.Books`: it keeps
the books' voucher balances and appends award, expiry and carry-over entries.
"""

from __future__ import annotations

from dataclasses import replace

from gpupool.accounting.funding import _EPS
from gpupool.accounting.ledger import LedgerEntry
from gpupool.accounting.periods import period_label
from gpupool.accounting.programmes import Voucher, default_expiry
from gpupool.model import GpupoolError


class Vouchers:
    """Voucher awards and expiry (a mixin of Books; see the module docstring)."""

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

    def award_declared(self, voucher: Voucher) -> None:
        """Take a voucher a file declares already awarded (a scenario's) onto the books
        with the 'award' entry ``award`` would have booked: a replay's ledger then
        holds what the live one does."""
        self._add_voucher(voucher)
        self.version += 1
        self._record(self._voucher_entry("award", voucher, voucher.amount, voucher.awarded_at))

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
