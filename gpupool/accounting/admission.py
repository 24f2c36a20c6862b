"""Admission: cheap questions asked before a run is priced in full.

``org_pays_floor`` bounds from below what an org would pay for a run without
pricing it, so admission can refuse an org out of budget on the bound alone;
``assess`` quotes a run and names the 'wait' programme that would hold it back.

``Admission`` is a mixin of :class:`gpupool.accounting.books.Books`.
"""

from __future__ import annotations

from gpupool.accounting.funding import as_charge
from gpupool.model import Charge, GpuType, Job, Pool


class Admission:
    """Admission floors and assessments (a mixin of Books; see the module docstring)."""

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
                return as_charge(lines), prog.name
        return as_charge(lines), None
