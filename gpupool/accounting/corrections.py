"""Corrections: taking back usage that was charged past a run's real end.

A running job is metered up to a round's time when a voucher expires, so usage
can be charged before anyone knows when the run ends. When the run turns out
to have ended earlier (a site reports ``job finish --at`` a time before that
round), what was charged past the end is refunded by ``correction`` entries,
one per charge entry that reached past it, funded exactly as that entry was:
the same programme, voucher, period and pool, negated and, for the piece the
end falls in, pro-rated by the time refunded. The charges and their
corrections then sum to the run's usage up to its end.
"""

from __future__ import annotations

from collections.abc import Iterable

from gpupool.accounting.ledger import LedgerEntry, cents
from gpupool.accounting.programmes import Programme
from gpupool.model import GpuType

_SLACK = 1e-6  # seconds: instants read back from the database agree to a microsecond


def refunds(
    charges: Iterable[LedgerEntry], since: float, until: float
) -> list[tuple[LedgerEntry, float]]:
    """Each charge of the run that started at ``since`` reaching past ``until``, and
    the fraction of it to refund.

    A run's charges cover contiguous pieces from its start; a charge's ``at`` is
    its piece's end, so each piece starts where the previous one ended (several
    entries share a piece when several sources funded it).
    """
    run = sorted((e for e in charges if e.kind == "charge" and e.at > since + _SLACK), key=_at)
    ends = sorted({e.at for e in run})
    starts = dict(zip(ends, [since, *ends[:-1]], strict=True))
    shares = []
    for entry in run:
        if entry.at <= until + _SLACK:
            continue
        start = starts[entry.at]
        fraction = 1.0 if start >= until else (entry.at - until) / (entry.at - start)
        shares.append((entry, fraction))
    return shares


def _at(entry: LedgerEntry) -> float:
    return entry.at


def voucher_hours(
    entry: LedgerEntry, programme: Programme, gpu_type: GpuType, speed: float
) -> float:
    """The voucher hours a voucher-funded charge took (as Funding priced them);
    ``speed``: the job's speed on ``gpu_type`` (Job.speed_on)."""
    gpu_hours = entry.effective_gpu_hours / speed
    return gpu_hours * programme.voucher_hours_per_gpu_hour(gpu_type, speed)


def correction(entry: LedgerEntry, fraction: float, until: float, hours: float) -> LedgerEntry:
    """The entry refunding ``fraction`` of charge ``entry``; ``hours``: voucher hours back."""
    if fraction >= 1.0:
        cost, subsidy = entry.cost, entry.subsidy
    else:
        cost = cents(float(entry.cost) * fraction)
        subsidy = min(cents(float(entry.subsidy) * fraction), cost)
    note = "usage after the run's end refunded"
    if entry.voucher_id is not None:
        note += f"; {hours:.6g} voucher hours back"
    return LedgerEntry(
        kind="correction",
        org=entry.org,
        period=entry.period,
        at=until,
        domain=entry.domain,
        job_id=entry.job_id,
        gpu_type=entry.gpu_type,
        cost=-cost,
        subsidy=-subsidy,
        effective_gpu_hours=-entry.effective_gpu_hours * fraction,
        programme=entry.programme,
        voucher_id=entry.voucher_id,
        note=note,
        pool=entry.pool,
    )
